"""Experiment tracking: MLflow logging from the register step, and ``runs list|show|compare`` from the store.

The CLI tests write small, real-shaped run documents (``training.json``,
``challenger-metrics.json``) into a temporary store: no training needed.  The MLflow
tests start a real ``mlflow server`` (SQLite backend, proxied artifacts) on a free port.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from archive_support import FAKE_MODEL
from streamguard_ml import layout
from streamguard_ml.cli import main
from streamguard_ml.config import PipelineConfig
from streamguard_ml.store import LocalStore

DATA_HASH = "1a7b01579a71c9afbb423f1440cf8c181f6f546e27bbe83133977661ea2428e4"


def training_doc(model_type: str = "gnn", epochs: int = 3, learning_rate: float = 2e-3, hidden: int = 128,
                 content_hash: str = DATA_HASH) -> dict:
    """``training.json`` as ``train.write_summary`` writes it (the fields the tracking code reads, and more)."""
    history = [{"epoch": e, "loss": 0.7 / e, "train_acc": 0.5 + 0.1 * e, "val_acc": 0.6 + 0.1 * e,
                "val_f1": 0.55 + 0.1 * e, "val_auc": 0.7 + 0.05 * e, "val_loss": 0.6 / e, "seconds": 1.5,
                "samples_per_s": 200.0} for e in range(1, epochs + 1)]
    return {"backend": "local", "model_type": model_type, "history": history, "job_name": f"local-r-{model_type}",
            "hyperparameters": {"batch_size": 16, "epochs": epochs, "hidden": hidden, "learning_rate": learning_rate,
                                "model_type": model_type, "seed": 13, "selection_metric": "auc"},
            "dataset": {"content_hash": content_hash, "run": "r", "split": "train", "graph_format": "pg-3"},
            "train_samples": 338, "val_samples": 36, "params_digest": "7b11bd23e1f756dd",
            "operating_point": {"policy": "max_fpr", "threshold": 0.31, "max_fpr": 0.05, "note": ""},
            "validation": {"accuracy": 0.94, "f1": 0.9375, "fpr": 0.0, "roc_auc": 0.99, "n": 36, "tp": 15,
                           "fp": 0, "tn": 19, "fn": 2, "threshold": 0.31}}


def metrics_doc(f1: float = 0.8, test_hash: str | None = "t" * 64) -> dict:
    """``challenger-metrics.json`` as ``evaluate.evaluate_model`` writes it."""
    return {"accuracy": 0.85, "precision": 0.9, "recall": 0.75, "f1": f1, "fpr": 0.05, "roc_auc": 0.91,
            "tp": 21, "fp": 2, "tn": 28, "fn": 7, "n": 58, "threshold": 0.31, "pairwise_accuracy": 0.6,
            "pairs": 20, "pairs_correct": 12, "pair_ranking": 0.8,
            "per_cwe": {"CWE-89": {"f1": 0.9, "n": 30}},
            "at_0.5": {"accuracy": 0.8, "f1": 0.7, "fpr": 0.0, "tp": 15, "fp": 0, "tn": 30, "fn": 13},
            "operating_point": {"policy": "max_fpr", "threshold": 0.31, "overridden": False},
            "calibration": {"method": "temperature", "brier_before": 0.27, "brier_after": 0.19, "bins": 10},
            "test_data": {"samples": 58, "sources": {"synthetic": 58}, "synthetic": 58, "real": 0,
                          "synthetic_only": True, "statement": "Test split: 58 built-in synthetic functions.",
                          **({"content_hash": test_hash} if test_hash else {})}}


def write_run(store: LocalStore, run: str, model_type: str = "gnn", evaluated: bool = True, **kw) -> None:
    metrics_kw = {k: kw.pop(k) for k in ("f1", "test_hash") if k in kw}
    store.write_json(f"{layout.model_dir(run, model_type)}/training.json", training_doc(model_type, **kw))
    store.write_bytes(layout.model_archive(run, model_type), FAKE_MODEL)
    if evaluated:
        store.write_json(f"{layout.eval_dir(run, model_type)}/challenger-metrics.json", metrics_doc(**metrics_kw))
        store.write_json(f"{layout.eval_dir(run, model_type)}/decision.json",
                         {"promote": False, "reasons": ["fixture"], "champion_version": None})


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- runs list|show|compare: the figures from the store ------------------------------------------
@pytest.fixture
def runs_store(store):
    write_run(store, "r1", "gnn", epochs=3, learning_rate=2e-3, f1=0.8)
    write_run(store, "r1", "transformer", epochs=2, evaluated=False)
    write_run(store, "r2", "gnn", epochs=4, learning_rate=1e-3, f1=0.85)
    write_run(store, "r3", "gnn", epochs=3, content_hash="f" * 64, f1=0.99, test_hash="u" * 64)
    return store


def test_runs_list_names_every_trained_run_and_model_with_headline_metrics(runs_store, capsys):
    code, out, _ = cli(capsys, "--store", runs_store.root, "--json", "runs", "list")
    assert code == 0
    rows = {(r["run"], r["model_type"]): r for r in json.loads(out)}
    assert set(rows) == {("r1", "gnn"), ("r1", "transformer"), ("r2", "gnn"), ("r3", "gnn")}
    assert rows["r2", "gnn"]["epochs"] == 4 and rows["r2", "gnn"]["metrics"]["f1"] == pytest.approx(0.85)
    assert rows["r1", "transformer"]["evaluated"] is False and rows["r1", "transformer"]["metrics"] == {}
    assert rows["r1", "gnn"]["created"].startswith("20")  # when training.json was written

    code, out, _ = cli(capsys, "runs", "list", "--model-type", "taint-flow-gnn", "--store", runs_store.root, "--json")
    assert {r["model_type"] for r in json.loads(out)} == {"gnn"}


def test_runs_list_table_stays_whole_at_80_columns(runs_store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    write_run(runs_store, "manual__2026-12-02T11:38:19.123456+00:00", "fusion", epochs=0)
    code, out, _ = cli(capsys, "runs", "list", "--store", runs_store.root)
    assert code == 0
    assert max(map(len, out.splitlines())) <= 80
    assert "0.850" in out and "transformer" in out and "fusion" in out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("manual__"))
    folded = [lines[first].split()[0]]  # the long run key folds onto lines of its own, whole
    folded += [line.strip() for line in lines[first + 1:]][:next(
        i for i, line in enumerate(lines[first + 1:]) if len(line.split()) != 1)]
    run_column = "".join(folded)
    assert run_column == "manual__2026-12-02T11-38-19.123456-00-00"


def test_runs_show_prints_params_epochs_and_final_metrics(runs_store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(capsys, "runs", "show", "r2", "--model-type", "gnn", "--store", runs_store.root)
    assert code == 0, out
    assert "learning_rate" in out and "0.001" in out
    epoch_rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 8]
    assert [int(r[0]) for r in epoch_rows] == [1, 2, 3, 4]
    assert "f1 0.8500" in out and "at_0.5_f1 0.7000" in out
    assert max(map(len, out.splitlines())) <= 80

    code, out, _ = cli(capsys, "runs", "show", "r1", "--store", runs_store.root, "--json")
    docs = json.loads(out)
    assert [d["model_type"] for d in docs] == ["gnn", "transformer"]
    assert docs[0]["params"]["epochs"] == 3 and len(docs[0]["history"]) == 3
    assert docs[0]["evaluation"]["f1"] == pytest.approx(0.8) and docs[1]["evaluation"] is None


def test_runs_show_unknown_run_is_a_one_line_error(runs_store, capsys):
    code, out, err = cli(capsys, "runs", "show", "nope", "--store", runs_store.root)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no run 'nope'" in err
    code, _, err = cli(capsys, "runs", "show", "r2", "--model-type", "transformer", "--store", runs_store.root)
    assert code == 2 and "it trained gnn" in err


def test_runs_compare_params_deltas_and_same_data(runs_store, capsys):
    code, out, _ = cli(capsys, "runs", "compare", "r1", "r2", "--store", runs_store.root, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model_type"] == "gnn"  # the one type both trained
    assert doc["params"] == {"epochs": {"a": 3, "b": 4}, "learning_rate": {"a": 0.002, "b": 0.001}}
    assert doc["metrics"]["f1"]["delta"] == pytest.approx(0.05)
    assert doc["same_test_data"] is True and "test split" in doc["data_basis"]

    code, out, _ = cli(capsys, "runs", "compare", "r1", "r2", "--store", runs_store.root)
    assert "learning_rate" in out and "0.002 -> 0.001" in out and "(+0.0500)" in out
    assert not out.startswith("WARNING")


def test_runs_compare_warns_when_tested_on_different_data(runs_store, capsys):
    code, out, _ = cli(capsys, "runs", "compare", "r1", "r3", "--store", runs_store.root)
    assert code == 0
    assert out.startswith("WARNING: runs r1 and r3 were not tested on the same data")
    code, out, _ = cli(capsys, "runs", "compare", "r1", "r3", "--store", runs_store.root, "--json")
    assert json.loads(out)["same_test_data"] is False


def test_runs_compare_falls_back_to_the_dataset_hash(store, capsys):
    write_run(store, "a", test_hash=None)
    write_run(store, "b", test_hash=None, content_hash="e" * 64)
    write_run(store, "c", test_hash=None)
    code, out, _ = cli(capsys, "runs", "compare", "a", "b", "--store", store.root, "--json")
    doc = json.loads(out)
    assert doc["same_test_data"] is False and "dataset" in doc["data_basis"]
    code, out, _ = cli(capsys, "runs", "compare", "a", "c", "--store", store.root, "--json")
    assert json.loads(out)["same_test_data"] is True


def test_runs_compare_needs_a_model_type_when_ambiguous(store, capsys):
    for run in ("a", "b"):
        write_run(store, run, "gnn")
        write_run(store, run, "transformer")
    code, _, err = cli(capsys, "runs", "compare", "a", "b", "--store", store.root)
    assert code == 2 and "--model-type" in err
    code, out, _ = cli(capsys, "runs", "compare", "a", "b", "--model-type", "transformer", "--store", store.root,
                       "--json")
    assert code == 0 and json.loads(out)["model_type"] == "transformer"


# -- configuration -----------------------------------------------------------------------------
def test_tracking_uri_defaults_from_the_environment_and_the_param_wins(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert PipelineConfig().mlflow_tracking_uri is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert PipelineConfig().mlflow_tracking_uri == "http://mlflow.internal:5000"
    assert PipelineConfig.from_mapping({"mlflow_tracking_uri": None}).mlflow_tracking_uri == \
        "http://mlflow.internal:5000"  # an empty (null) Param: the deployment's
    assert PipelineConfig.from_mapping({"mlflow_tracking_uri": "http://other:5000"}).mlflow_tracking_uri == \
        "http://other:5000"


def test_training_dag_has_a_nullable_described_tracking_param():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dags"))
    import streamguard_training

    param = streamguard_training.PARAMS["mlflow_tracking_uri"]
    assert param.value is None and "null" in param.schema["type"]
    assert param.schema.get("section") and "MLFLOW_TRACKING_URI" in param.description


def test_dag_files_and_the_pipeline_do_not_import_mlflow():
    """``import mlflow`` takes seconds: only a register step with tracking on may pay for it."""
    repo = Path(__file__).resolve().parent.parent
    code = ("import sys; from airflow.dag_processing.dagbag import DagBag;"
            f"b = DagBag(dag_folder={str(repo / 'dags')!r}); assert not b.import_errors, b.import_errors;"
            "import streamguard_ml.pipeline, streamguard_ml.tracking, streamguard_ml.cli.runs;"
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(repo / "plugins")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- MLflow: off, failing, and against a real server ----------------------------------------------
def registered(store: LocalStore, run: str, cfg: PipelineConfig, model_type: str = "gnn") -> dict:
    """``register_step`` exactly as the DAG's register task calls it."""
    from streamguard_ml.pipeline import register_step

    evaluation = {"model_type": model_type, "metrics": metrics_doc(),
                  "decision": {"promote": False, "reasons": ["fixture"], "champion_version": None}}
    trained = {"model_type": model_type, "model_uri": store.uri(layout.model_archive(run, model_type)),
               "backend": "local"}
    dataset = {"content_hash": DATA_HASH}
    return register_step(store, run, model_type, trained, evaluation, dataset, cfg)


def version_lineage(store: LocalStore, result: dict) -> dict:
    from streamguard_ml.registry import Registry

    return Registry(store).get(result["model"], result["version"]).lineage


def test_tracking_off_registers_without_a_link(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_run(store, "r1")
    result = registered(store, "r1", PipelineConfig())
    assert "mlflow" not in version_lineage(store, result)


def test_unreachable_server_is_a_warning_not_a_lost_run(store, caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_run(store, "r1")
    cfg = dataclasses.replace(PipelineConfig(), mlflow_tracking_uri=f"http://user:secret@127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="streamguard_ml.tracking"):
        result = registered(store, "r1", cfg)
    assert result["version"] == 1 and "mlflow" not in version_lineage(store, result)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"http://127.0.0.1:{port}" in warning and "registered without an MLflow link" in warning
    assert "secret" not in warning  # credentials in the URI never reach the log


def test_a_tracking_uri_the_deployment_does_not_allow_is_refused(store, caplog, monkeypatch):
    from streamguard_ml import tracking

    monkeypatch.setenv(tracking.ALLOWED_TRACKING_URIS_ENV, "http://mlflow.internal:5000")
    write_run(store, "r1")
    cfg = dataclasses.replace(PipelineConfig(), mlflow_tracking_uri="http://attacker.example:80")
    with caplog.at_level(logging.WARNING, logger="streamguard_ml.tracking"):
        assert tracking.track(store, "r1", "gnn", cfg) is None
    assert "not one this deployment allows" in caplog.text


def test_flat_metrics_keep_numbers_and_sanitise_names():
    from streamguard_ml.tracking import flat_metrics, metric_name

    flat = flat_metrics(metrics_doc())
    assert flat["f1"] == 0.8 and flat["at_0.5_f1"] == 0.7 and flat["calibration_brier_after"] == 0.19
    assert not any(k.startswith(("per_cwe", "test_data", "operating_point")) for k in flat)
    assert "calibration_method" not in flat and "roc_auc" in flat
    assert metric_name("val f1 (mean)!") == "val f1 _mean_"
    assert flat_metrics({"roc_auc": None, "x": float("nan"), "ok": True}) == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server``: SQLite backend store, artifacts proxied into a local folder."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log_file = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 15)  # the server and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log_file.close()


@pytest.mark.slow
def test_register_step_logs_the_run_to_a_real_mlflow_server_once(store, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    from streamguard_ml import tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    write_run(store, "r1", "gnn", epochs=3)
    cfg = dataclasses.replace(PipelineConfig(), mlflow_tracking_uri=mlflow_server)
    result = registered(store, "r1", cfg)

    link = version_lineage(store, result)["mlflow"]
    assert set(link) >= {"run_id", "experiment_id", "url"}
    assert link["url"] == f"{mlflow_server}/#/experiments/{link['experiment_id']}/runs/{link['run_id']}"
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(link["run_id"])
    assert client.get_experiment(link["experiment_id"]).name == "taint-flow-gnn"

    # params: the hyperparameters plus the data and code identity
    assert run.data.params["learning_rate"] == "0.002" and run.data.params["epochs"] == "3"
    assert run.data.params["data_content_hash"] == DATA_HASH and run.data.params["sources"]
    assert run.data.params["code_version"].startswith("0.")
    # per-epoch curves, one point per epoch
    history = client.get_metric_history(link["run_id"], "loss")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(e, round(0.7 / e, 6)) for e in (1, 2, 3)]
    assert len(client.get_metric_history(link["run_id"], "val_f1")) == 3
    # the final evaluation, flat
    assert run.data.metrics["test_f1"] == pytest.approx(0.8)
    assert run.data.metrics["test_at_0.5_f1"] == pytest.approx(0.7)
    assert run.data.metrics["validation_f1"] == pytest.approx(0.9375)
    # tags and the model card
    assert run.data.tags[tracking.TAG_RUN_KEY] == "r1" and run.data.tags[tracking.TAG_MODEL_TYPE] == "gnn"
    assert run.data.tags[tracking.TAG_REGISTRY_MODEL] == "taint-flow-gnn"
    assert run.data.tags[tracking.TAG_REGISTRY_VERSION] == str(result["version"])
    assert run.info.status == "FINISHED"
    card_files = {Path(f.path).name for f in client.list_artifacts(link["run_id"], tracking.CARD_ARTIFACTS)}
    assert {"model_card.md", "model_card.json", "training_curves.png"} <= card_files
    card_md = client.download_artifacts(link["run_id"], f"{tracking.CARD_ARTIFACTS}/model_card.md",
                                        str(store.path.parent / "dl"))
    assert Path(card_md).read_bytes() == store.read_bytes(
        f"registry/taint-flow-gnn/cards/{result['version']:06d}/model_card.md")
    docs = {Path(f.path).name for f in client.list_artifacts(link["run_id"], tracking.RUN_ARTIFACTS)}
    assert docs == {"training.json", "challenger-metrics.json", "decision.json"}

    # a retried task: the same version, the same MLflow run, no doubled curve
    again = registered(store, "r1", cfg)
    assert again["version"] == result["version"]
    assert tracking.track(store, "r1", "gnn", cfg)["run_id"] == link["run_id"]
    runs = client.search_runs([link["experiment_id"]], f"tags.`{tracking.TAG_RUN_KEY}` = 'r1'")
    assert [r.info.run_id for r in runs] == [link["run_id"]]
    assert len(client.get_metric_history(link["run_id"], "loss")) == 3

    # the store-side view names the link too
    assert tracking.run_figures(store, "r1", "gnn")["registered"]["mlflow"]["run_id"] == link["run_id"]

    # another run of the same model: a second MLflow run in the same experiment, comparable side by side
    write_run(store, "r2", "gnn", epochs=4, learning_rate=1e-3)
    other = version_lineage(store, registered(store, "r2", cfg))["mlflow"]
    assert other["run_id"] != link["run_id"] and other["experiment_id"] == link["experiment_id"]
    assert len(client.get_metric_history(other["run_id"], "loss")) == 4
