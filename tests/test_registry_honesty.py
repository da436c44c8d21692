"""The registry compares honestly: smoke versions never ship, figures from different test data are not
set side by side, leaked test functions are counted, and a copied or moved store keeps working."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from archive_support import FAKE_MODEL
from streamguard_ml.evaluate import seen_in_training, split_identity
from streamguard_ml.promotion import GateRule, decide
from streamguard_ml.records import code_fingerprint, fingerprints
from streamguard_ml.registry import Registry, RegistryError
from streamguard_ml.store import LocalStore, open_store

GOOD = {"accuracy": 0.95, "f1": 0.94, "fpr": 0.02, "n": 400}


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(FAKE_MODEL)
    return str(path)


def _test_data(content_hash: str, synthetic: bool = False, samples: int = 100) -> dict:
    return {"content_hash": content_hash, "samples": samples, "synthetic_only": synthetic,
            "real": 0 if synthetic else samples}


# -- smoke runs and small test splits --------------------------------------------------
def test_the_gate_refuses_smoke_runs_and_small_test_splits():
    assert decide(GOOD, None, GateRule())["promote"] is True
    smoke = decide(GOOD, None, GateRule(), smoke=True)
    assert smoke["promote"] is False and smoke["smoke"] is True and "smoke run" in smoke["reasons"][0]
    small = decide({**GOOD, "n": 24}, None, GateRule())
    assert small["promote"] is False and "24 functions, fewer than min_test_samples=50" in small["reasons"][0]
    assert decide({**GOOD, "n": 24}, None, GateRule.from_mapping({"min_test_samples": 20}))["promote"] is True
    champion = {**GOOD, "accuracy": 0.80, "fpr": 0.05}
    beaten = decide({**GOOD, "n": 24}, champion, GateRule(mcnemar_alpha=None))
    assert beaten["kind"] == "champion_challenger" and beaten["promote"] is False  # also against a champion


def test_a_smoke_version_can_never_be_promoted_or_deployed(store, artifact):
    from streamguard_ml.config import ServingConfig
    from streamguard_ml.deployment import endpoint_requests

    reg = Registry(store)
    mv = reg.register("m", artifact, GOOD, lineage={"smoke": True}, decision={"promote": False})
    assert mv.smoke and not reg.register("m", artifact, GOOD, lineage={"smoke": False}).smoke
    with pytest.raises(RegistryError, match="smoke run.*never promoted"):
        reg.promote("m", mv.version)
    assert reg.champion("m") is None and [e["event"] for e in reg.events("m")] == ["registered", "registered"]
    with pytest.raises(RegistryError, match="smoke"):
        reg.register("m", artifact, GOOD, lineage={"smoke": True}, decision={"promote": True})
    with pytest.raises(ValueError, match="never deployed"):
        endpoint_requests(mv, {"code_url": "s3://b/c", "code_digest": "0" * 16, "model_data_url": "s3://b/m"},
                          ServingConfig())


def test_the_model_card_says_smoke_and_which_data_it_was_evaluated_on(store, artifact):
    from streamguard_ml.model_card import build_card, render_markdown

    mv = Registry(store).register("m", artifact, {**GOOD, "test_data": {
        **_test_data("ab" * 32), "seen_in_training": {"samples": 7, "of": 100, "ids": ["x"]}}},
        lineage={"smoke": True})
    card = build_card(mv)
    assert card["known_limits"][0].startswith("SMOKE RUN")
    assert any("7 of 100 test functions were in this model's training" in x for x in card["known_limits"])
    text = render_markdown(card)
    assert "**Smoke run**" in text and f"test data `{'ab' * 6}`" in text


# -- like with like ----------------------------------------------------------------------
def test_compare_and_best_only_set_figures_from_the_same_test_data_side_by_side(store, artifact, caplog):
    reg = Registry(store)
    synthetic = {"accuracy": 1.0, "f1": 1.0, "fpr": 0.0, "test_data": _test_data("a" * 64, synthetic=True)}
    reg.register("m", artifact, synthetic)
    real = {"accuracy": 0.61, "f1": 0.6, "fpr": 0.3, "test_data": _test_data("b" * 64)}
    reg.register("m", artifact, real)
    cmp = reg.compare("m", 1, 2)
    assert cmp["comparable"] is False and cmp["metrics"] == {} and cmp["basis"] is None
    assert "different test data" in cmp["why_not"] and "synthetic only" in cmp["why_not"]
    assert "streamguard-ml evaluate --run RUN --model m --model-version 1" in cmp["why_not"]
    with caplog.at_level(logging.WARNING, logger="streamguard_ml.registry"):
        assert reg.best("m", "f1").version == 2  # v1's 1.000 on synthetic data does not compete
    assert "v1 were evaluated on other data" in caplog.text
    assert reg.best("m", "f1", data="aaaa").version == 1
    with pytest.raises(RegistryError, match="evaluated on data 'ffff'"):
        reg.best("m", "f1", data="ffff")

    # v3 judged against v2 on its own split: the gate's paired numbers are the comparison.
    gate = {"champion_version": 2, "champion": {"accuracy": 0.55, "f1": 0.5, "fpr": 0.35},
            "challenger": {"accuracy": 0.7, "f1": 0.72, "fpr": 0.2}, "promote": True}
    reg.register("m", artifact, {"accuracy": 0.7, "f1": 0.72, "fpr": 0.2, "test_data": _test_data("c" * 64)},
                 decision=gate)
    paired = reg.compare("m", 2, 3)
    assert paired["comparable"] is True and paired["basis"] == "gate" and paired["paired_on"] == "c" * 64
    assert paired["metrics"]["accuracy"] == {"a": 0.55, "b": 0.7, "delta": pytest.approx(0.15)}
    backwards = reg.compare("m", 3, 2)
    assert backwards["metrics"]["accuracy"]["delta"] == pytest.approx(-0.15)

    reg.register("m", artifact, {"accuracy": 0.72, "f1": 0.7, "fpr": 0.2, "test_data": _test_data("c" * 64)})
    same = reg.compare("m", 3, 4)
    assert same["basis"] == "same_data" and same["metrics"]["accuracy"]["delta"] == pytest.approx(0.02)
    reg.register("m", artifact, {"accuracy": 0.99, "f1": 0.99, "fpr": 0.0, "test_data": _test_data("c" * 64)},
                 lineage={"smoke": True})
    assert reg.best("m", "f1").version == 3  # smoke versions never compete


def test_cli_best_takes_the_test_data_and_log_prints_the_audit_trail(store, artifact, capsys):
    from streamguard_ml.cli import main as cli_main

    reg = Registry(store)
    reg.register("m", artifact, {"accuracy": 1.0, "f1": 1.0, "test_data": _test_data("a" * 64, synthetic=True)})
    reg.register("m", artifact, {"accuracy": 0.6, "f1": 0.6, "test_data": _test_data("b" * 64)})
    reg.record_decision("m", 2, {"promote": True, "reasons": ["first model clears the floors"]})
    reg.promote("m", 2, "gate")
    reg.promote("m", 1, "by hand")
    reg.rollback("m", "v1 was tested on synthetic data")
    base = ["--store", store.root, "registry"]
    assert cli_main([*base, "best", "m", "--metric", "f1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert cli_main([*base, "best", "m", "--data", "aaaa", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert cli_main([*base, "log", "m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[0].split()[0] == "1" and "v1 registered" in lines[0]
    assert "v2 gate: promote: first model clears the floors" in lines[2]
    assert "v1 champion (was v2): by hand" in lines[4]
    assert lines[5].endswith("v2 champion (rolled back) (was v1): v1 was tested on synthetic data")
    assert cli_main([*base, "log", "m", "--json"]) == 0
    assert [e["event"] for e in json.loads(capsys.readouterr().out)] == [
        "registered", "registered", "decision", "promoted", "promoted", "rolled_back"]


def test_tags_label_versions_once_and_are_in_the_audit_log(store, artifact, capsys):
    from streamguard_ml.cli import main as cli_main

    reg = Registry(store)
    reg.register("m", artifact, GOOD)
    reg.register("m", artifact, GOOD)
    base = ["--store", store.root, "registry"]
    assert cli_main([*base, "tag", "m", "latest", "reviewed", "ticket:SEC-12"]) == 0
    assert "m v2 tags: reviewed, ticket:SEC-12" in capsys.readouterr().out
    assert cli_main([*base, "tag", "m", "2", "reviewed"]) == 0  # again: nothing new in the log
    assert [e["event"] for e in reg.events("m")].count("tagged") == 2
    capsys.readouterr()
    assert cli_main([*base, "list", "--tag", "reviewed", "--json"]) == 0
    assert [v["version"] for v in json.loads(capsys.readouterr().out)] == [2]
    assert cli_main([*base, "tag", "m", "2", "reviewed", "--remove"]) == 0
    assert reg.get("m", 2).tags == ["ticket:SEC-12"] and reg.get("m", 1).tags == []
    assert cli_main([*base, "log", "m"]) == 0
    assert "v2 untagged reviewed" in capsys.readouterr().out
    assert cli_main([*base, "tag", "m", "1", "no spaces"]) == 2
    assert "tag 'no spaces': use 1-64 letters" in capsys.readouterr().err


def test_split_identity_is_the_scored_functions_not_their_order():
    frame = pd.DataFrame({"id": ["a", "b"], "label": [1, 0], "code": ["def f(): pass", "def g(): pass"]})
    assert split_identity(frame) == split_identity(frame.iloc[::-1])
    assert split_identity(frame) != split_identity(frame.assign(code=["def f(): pass", "def h(): pass"]))
    assert split_identity(frame) != split_identity(frame.assign(label=[0, 0]))


def test_evaluation_counts_test_functions_the_model_trained_on():
    seen = fingerprints(["def f(x):\n    return x\n"], ["def g():\n  pass"])
    model = SimpleNamespace(seen_code=lambda: set(seen))
    frame = pd.DataFrame({"id": ["t1", "t2", "t3"], "label": [1, 0, 1],
                          "code": ["def f(x):\n\n        return x", "def g():\n    pass", "def new(): ..."]})
    assert seen_in_training(frame, model) == {"samples": 2, "of": 3, "ids": ["t1", "t2"]}  # re-indented: seen
    assert seen_in_training(frame, SimpleNamespace(seen_code=lambda: None)) is None  # an older model
    assert code_fingerprint("a\n  b") == code_fingerprint("  a\n\nb  ")


# -- a relocatable store -----------------------------------------------------------------
def test_registry_entries_hold_store_relative_keys_and_survive_a_move(tmp_path, artifact):
    first = LocalStore(tmp_path / "first")
    first.write_bytes("runs/r/models/gnn/model.tar.gz", FAKE_MODEL)
    reg = Registry(first)
    old_style = {"dataset_card": first.uri("runs/r/processed/dataset_card.md"),
                 "reference_profile": first.uri("runs/r/eval/gnn/reference.json"),
                 "members": {"gnn": first.uri("runs/r/models/gnn/model.tar.gz")}, "sources": ["sven:/data/sven"]}
    reg.register("m", first.uri("runs/r/models/gnn/model.tar.gz"), GOOD, lineage=old_style)
    entry = json.loads((tmp_path / "first/registry/m/versions/000001/entry.json").read_text())
    assert entry["artifact_key"] == "registry/m/artifacts/000001/model.tar.gz" and "artifact_uri" not in entry
    assert entry["source_artifact_uri"] == "runs/r/models/gnn/model.tar.gz"
    assert entry["lineage"]["dataset_card"] == "runs/r/processed/dataset_card.md"
    assert str(tmp_path) not in json.dumps(entry)

    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "first", moved)
    shutil.rmtree(tmp_path / "first")
    mv = Registry(LocalStore(moved)).get("m", 1)
    assert mv.artifact_uri == str(moved / "registry/m/artifacts/000001/model.tar.gz")
    assert open_store(str(moved)).read_bytes("registry/m/artifacts/000001/model.tar.gz") == FAKE_MODEL
    assert mv.lineage["members"] == {"gnn": "runs/r/models/gnn/model.tar.gz"}
    assert mv.lineage["sources"] == ["sven:/data/sven"]  # not a store reference: kept as given


def test_entries_written_with_absolute_paths_read_as_keys(tmp_path, artifact):
    """A registry written before keys were relative (absolute paths of a store now gone) still reads."""
    store = LocalStore(tmp_path / "now")
    reg = Registry(store)
    reg.register("m", artifact, GOOD)
    key = "registry/m/versions/000001/entry.json"
    entry = store.read_json(key)
    entry.pop("artifact_key")
    entry.update(artifact_uri="/gone/store/registry/m/artifacts/000001/model.tar.gz",
                 lineage={"reference_profile": "/gone/store/runs/r/eval/gnn/reference.json"})
    (tmp_path / "now" / key).write_text(json.dumps(entry))
    mv = Registry(store).get("m", 1)  # a new reader (entries are immutable, so a registry caches them)
    assert mv.artifact_uri == store.uri("registry/m/artifacts/000001/model.tar.gz")
    assert mv.lineage["reference_profile"] == "runs/r/eval/gnn/reference.json"


@pytest.mark.slow
def test_a_copied_store_keeps_predict_explain_and_drift_check_working(smoke_training, tmp_path, aws_env):
    """Local → local → S3 → local, each original deleted; the last copy serves the champion."""
    import boto3

    source, _ = smoke_training
    local = tmp_path / "copy"
    shutil.copytree(source, local)
    boto3.client("s3").create_bucket(Bucket="sg-moved")
    s3 = open_store("s3://sg-moved/store")
    tops = sorted(p.name for p in local.iterdir())
    for top in tops:
        s3.upload_dir(local / top, top)
    shutil.rmtree(local)
    back = tmp_path / "back"
    for top in tops:
        s3.download_dir(top, back / top)
    for root in (str(back), "s3://sg-moved/store"):
        champion = Registry(open_store(root)).champion("taint-flow-gnn")
        assert champion is not None and champion.artifact_uri.startswith(root)
    code = tmp_path / "input.jsonl"
    code.write_text(json.dumps({"id": "q", "code": "def q(c, u):\n    c.execute('SELECT ' + u)\n"}) + "\n")
    for root in (str(back), "s3://sg-moved/store"):
        predict = _cli("predict", "--store", root, "--model", "gnn", "--input", str(code),
                       "--output", str(tmp_path / "out.jsonl"))
        assert predict.returncode == 0, predict.stderr
        assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["id"] == "q"
        explain = _cli("explain", "--store", root, "--model", "gnn", "--input", str(code), "--json")
        assert explain.returncode == 0, explain.stderr
        drift = _cli("drift", "check", "--store", root, "--json")
        assert drift.returncode == 0, drift.stderr
        assert "registered outside the pipeline" not in drift.stdout + drift.stderr
        assert "reference profile" not in drift.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamguard_ml.cli", *args], capture_output=True, text=True,
                          timeout=300)
