"""Registry: the same behaviour on a local directory and on S3 (moto's server, real HTTP):
versions, aliases, lineage, idempotency, promote/rollback, and 8 concurrent processes."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from archive_support import FAKE_MODEL, model_archive
from streamguard_ml.registry import Registry, RegistryError
from streamguard_ml.store import open_store


@pytest.fixture(params=["local", "s3"])
def any_store(request):
    return request.getfixturevalue("store" if request.param == "local" else "s3_store")


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(FAKE_MODEL)
    return str(path)


def test_register_list_show_latest_best_compare(any_store, artifact):
    reg = Registry(any_store)
    same = {"test_data": {"content_hash": "f" * 64}}  # evaluated on the same data: comparable
    v1 = reg.register("m", artifact, {"accuracy": 0.8, "f1": 0.7, "fpr": 0.1, **same}, {"lr": 1},
                      {"data_content_hash": "abc"})
    v2 = reg.register("m", artifact, {"accuracy": 0.9, "f1": 0.6, "fpr": 0.05, **same})
    assert (v1.version, v2.version) == (1, 2) and reg.models() == ["m"]
    assert [mv.version for mv in reg.list("m")] == [1, 2]
    assert reg.get("m", 1).lineage == {"data_content_hash": "abc"} and reg.get("m", 1).params == {"lr": 1}
    assert reg.get("m", 1).status == "registered" and reg.get("m", 1).created_at
    assert reg.latest("m").version == 2
    assert reg.best("m", "f1").version == 1 and reg.best("m", "fpr", lower_is_better=True).version == 2
    cmp = reg.compare("m", 1, 2)
    assert cmp["metrics"]["accuracy"]["delta"] == pytest.approx(0.1)
    assert any_store.read_bytes(any_store.key_of(reg.get("m", 1).artifact_uri)) == FAKE_MODEL
    assert [e["event"] for e in reg.events("m")] == ["registered", "registered"]
    with pytest.raises(RegistryError, match="no version 9"):
        reg.get("m", 9)


def test_artifact_from_the_store_itself(any_store):
    any_store.write_bytes("runs/r/models/gnn/model.tar.gz", FAKE_MODEL)
    mv = Registry(any_store).register("m", any_store.uri("runs/r/models/gnn/model.tar.gz"), {"accuracy": 1.0})
    assert mv.source_artifact_uri.endswith("runs/r/models/gnn/model.tar.gz")
    assert any_store.read_bytes(any_store.key_of(mv.artifact_uri)) == FAKE_MODEL


def test_idempotency_key_returns_the_same_version(any_store, artifact):
    reg = Registry(any_store)
    a = reg.register("m", artifact, {"accuracy": 0.5}, idempotency_key="run-1:gnn")
    b = Registry(any_store).register("m", artifact, {"accuracy": 0.5}, idempotency_key="run-1:gnn")
    assert a.version == b.version == 1 and reg.versions("m") == [1]


def test_a_retry_completes_a_registration_that_crashed_half_way(any_store, artifact):
    """The version number was claimed but the artifact copy and the log entry never happened."""
    reg = Registry(any_store)
    reg._ledger("m", "versions").append(lambda v: {
        "model": "m", "version": v, "artifact_uri": any_store.uri(reg.artifact_key("m", v)), "metrics": {},
        "params": {}, "lineage": {}, "status": "registered", "created_at": "2026-01-01T00:00:00+00:00",
        "idempotency_key": "run-9:gnn", "decision": None, "source_artifact_uri": artifact})
    assert not any_store.exists(reg.artifact_key("m", 1))
    mv = reg.register("m", artifact, {}, idempotency_key="run-9:gnn")
    assert mv.version == 1 and any_store.read_bytes(reg.artifact_key("m", 1)) == FAKE_MODEL
    assert [e["event"] for e in reg.events("m")] == ["registered"]


def test_status_decision_promote_and_rollback(any_store, artifact):
    reg = Registry(any_store)
    for _ in range(3):
        reg.register("m", artifact, {"accuracy": 0.5})
    reg.set_status("m", 2, "approved", "looked fine")
    reg.record_decision("m", 2, {"promote": False, "reasons": ["accuracy gain +0.00 pts"]})
    assert reg.get("m", 2).status == "approved" and reg.get("m", 2).decision["promote"] is False
    reg.promote("m", 1)
    reg.promote("m", 3)
    assert reg.champion("m").version == 3 and reg.get("m", 1).status == "archived"
    assert reg.resolve("m", "deployed").version == 3 and reg.get("m", 3).aliases == ["champion"]
    back = reg.rollback("m")
    assert back.version == 1 and reg.champion("m").version == 1 and reg.get("m", 3).status == "archived"
    events = reg.events("m")
    assert [e["event"] for e in events].count("promoted") == 2 and events[-1]["event"] == "rolled_back"
    assert events[-1]["previous"] == 3 and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    with pytest.raises(RegistryError, match="status 'live'"):
        reg.set_status("m", 1, "live")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback("other")


def test_a_repeated_status_note_or_decision_is_logged_once(store, artifact):
    """A retried task that records the same note or decision again leaves one audit entry."""
    reg = Registry(store)
    reg.register("m", artifact, {"accuracy": 0.5})
    decision = {"promote": False, "reasons": ["accuracy gain +0.00 pts"]}
    for _ in range(2):
        reg.set_status("m", 1, "registered", "serving on endpoint e1")
        reg.record_decision("m", 1, decision)
    reg.set_status("m", 1, "registered", "exported as arn:1")  # a second task's note ...
    reg.set_status("m", 1, "registered", "serving on endpoint e1")  # ... does not make the first one new
    assert [e["event"] for e in reg.events("m")] == ["registered", "status", "decision", "status"]

    reg.record_decision("m", 1, {**decision, "promote": True})  # a different decision, then the first again
    reg.record_decision("m", 1, decision)
    reg.set_status("m", 1, "archived", "superseded")  # a status change, then the first note again
    reg.set_status("m", 1, "registered", "serving on endpoint e1")
    events = reg.events("m")
    assert len(events) == 8 and reg.get("m", 1).status == "registered" and reg.get("m", 1).decision == decision

    reg.register("m", artifact, {"accuracy": 0.6})  # v1 champion, v2 takes over, rollback: v1 serves again
    reg.promote("m", 1)
    reg.set_status("m", 1, "deployed", "serving on endpoint e2")
    reg.promote("m", 2)
    reg.rollback("m")
    reg.set_status("m", 1, "deployed", "serving on endpoint e2")  # the redeployment is recorded again
    notes = [e for e in reg.events("m") if e.get("reason") == "serving on endpoint e2"]
    assert len(notes) == 2 and reg.get("m", 1).status == "deployed"


def _register_one(args):
    root, artifact, i = args
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import open_store

    return Registry(open_store(root)).register("m", artifact, {"accuracy": i / 10}, lineage={"writer": i}).version


def _promote_one(args):
    root, version = args
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import open_store

    Registry(open_store(root)).promote("m", version, reason=f"writer {version}")


def test_eight_concurrent_processes_get_distinct_versions_and_an_intact_index(any_store, artifact):
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        versions = pool.map(_register_one, [(any_store.root, artifact, i) for i in range(8)])
        assert sorted(versions) == list(range(1, 9))
        pool.map(_promote_one, [(any_store.root, v) for v in range(1, 9)])
    reg = Registry(open_store(any_store.root))
    listed = reg.list("m")
    assert [mv.version for mv in listed] == list(range(1, 9))
    assert sorted(mv.lineage["writer"] for mv in listed) == list(range(8))  # every writer's record survived
    assert {mv.version: mv.metrics["accuracy"] * 10 for mv in listed} == pytest.approx(
        {v: float(versions.index(v)) for v in range(1, 9)})
    for mv in listed:
        assert any_store.read_bytes(any_store.key_of(mv.artifact_uri)) == FAKE_MODEL
    events = reg.events("m")
    assert sorted(e["version"] for e in events if e["event"] == "registered") == list(range(1, 9))
    promotions = [e for e in events if e["event"] == "promoted"]
    assert sorted(e["version"] for e in promotions) == list(range(1, 9))
    # compare-and-append: each promotion names exactly the champion the one before it installed
    assert [e["previous"] for e in promotions] == [None] + [e["version"] for e in promotions[:-1]]
    assert reg.champion("m").version == promotions[-1]["version"]
    assert [mv.status for mv in listed].count("deployed") == 1 and [mv.status for mv in listed].count("archived") == 7


def test_cli_register_by_hand(any_store, artifact, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.91, "f1": 0.9, "fpr": 0.02}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "streamguard_ml.cli", *a, "--store", any_store.root,  # noqa: E731
                                     "--json"], capture_output=True, text=True, timeout=120)
    out = run("registry", "register", "--model", "imported", "--artifact", artifact, "--metrics", str(metrics))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"] == 1
    listed = json.loads(run("registry", "list").stdout)
    assert listed[0]["model"] == "imported" and listed[0]["metrics"]["accuracy"] == 0.91
    assert set(listed[0]) >= {"model", "version", "status", "aliases", "metrics", "created_at", "lineage"}
    assert json.loads(run("registry", "promote", "imported", "1").stdout)["aliases"] == ["champion"]
    assert json.loads(run("registry", "show", "imported", "deployed").stdout)["status"] == "deployed"
    card = json.loads(run("registry", "card", "imported", "latest").stdout)
    assert card["version"] == 1 and card["metrics_ci"]["accuracy"]["value"] == 0.91 and card["known_limits"]
    bad = run("registry", "register", "--model", "x", "--artifact", "/nope.tar.gz", "--metrics", str(metrics))
    assert bad.returncode == 2 and "nope.tar.gz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_the_operating_point_is_read_from_the_archive_at_registration(store, tmp_path):
    """A version registered by hand decides as the pipeline's would: its threshold comes from the archive."""
    import io
    import tarfile

    from streamguard_ml.inference import pack_archive

    model = tmp_path / "model"
    model.mkdir()
    (model / "streamguard_model.json").write_text(json.dumps({
        "model_type": "gnn", "calibration": {"method": "temperature", "params": {"temperature": 1.7}},
        "operating_point": {"threshold": 0.62, "policy": "max_fpr", "max_fpr": 0.05, "validation": {"n": 40}}}))
    (model / "model.safetensors").write_bytes(b"weights")
    path = tmp_path / "model.tar.gz"
    path.write_bytes(pack_archive(model))
    mv = Registry(store).register("taint-flow-gnn", str(path), {"accuracy": 0.8})
    assert mv.operating_point == {"threshold": 0.62, "policy": "max_fpr", "max_fpr": 0.05, "validation": {"n": 40},
                                  "calibration": "temperature"}
    assert mv.threshold == 0.62 and Registry(store).get("taint-flow-gnn", 1).threshold == 0.62
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:  # nothing was extracted to read it
        assert "streamguard_model.json" in tar.getnames()
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(model_archive({"model_type": "gnn"}))
    old = Registry(store).register("imported", str(plain), {"accuracy": 0.5})
    assert old.operating_point is None and old.threshold == 0.5  # saved before operating points: 0.5
    plain.write_bytes(b"not an archive")  # not a model at all: refused (tests/test_archive_safety.py)
    with pytest.raises(RegistryError, match="not a readable gzip-compressed tar"):
        Registry(store).register("imported", str(plain), {"accuracy": 0.5})
