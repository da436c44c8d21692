"""DAG integrity: imports cleanly, has the expected tasks and wiring, and parses cheaply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "torch_geometric", "sklearn", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"streamguard_training", "streamguard_ingestion", "streamguard_retraining_monitor",
            "streamguard_scan"} <= set(dagbag.dags)


def test_training_dag_tasks_and_dependencies(dagbag):
    dag = dagbag.dags["streamguard_training"]
    ids = set(dag.task_ids)
    for model in ("gnn", "transformer"):
        assert {f"{model}.train_local", f"{model}.evaluate", f"{model}.register", f"{model}.promote"} <= ids
        # both backends meet before evaluation: choose_backend → train_local | stage → train → fetch_sagemaker_model
        assert dag.get_task(f"{model}.choose_backend").downstream_task_ids == {f"{model}.train_local",
                                                                               f"{model}.stage_sagemaker"}
        assert dag.get_task(f"{model}.train_sagemaker").upstream_task_ids == {f"{model}.stage_sagemaker"}
        assert dag.get_task(f"{model}.trained_model").upstream_task_ids == {f"{model}.train_local",
                                                                            f"{model}.fetch_sagemaker_model"}
        assert dag.get_task(f"{model}.evaluate").upstream_task_ids >= {f"{model}.trained_model"}
        assert f"{model}.evaluate" in dag.get_task(f"{model}.register").upstream_task_ids
        assert "training_dataset" in dag.get_task(f"{model}.train_local").upstream_task_ids
    assert dag.get_task("plan_shards").upstream_task_ids == {"ingest"}
    assert dag.get_task("preprocess_shard").upstream_task_ids == {"plan_shards"}
    assert dag.get_task("finalize_dataset").upstream_task_ids == {"preprocess_shard"}
    assert {"gnn.promote", "transformer.promote", "fusion.promote"} <= dag.get_task("report").upstream_task_ids
    # the fusion detector is fitted from both trained members, then judged like them
    assert dag.get_task("fusion.train_fusion").upstream_task_ids == {"gnn.trained_model", "transformer.trained_model",
                                                                      "training_dataset"}
    assert dag.get_task("fusion.evaluate").upstream_task_ids == {"fusion.train_fusion"}
    assert {"sources", "training_backend", "base_model", "smoke", "gnn_epochs", "transformer_epochs",
            "threshold_policy", "max_fpr", "calibration", "pair_loss_weight", "synthetic_train"} <= set(dag.params)
    assert dag.params["training_backend"] == "local" and dag.params["sagemaker"] == {}


def test_dag_files_do_not_import_heavy_libraries():
    code = ("import sys, json; from airflow.dag_processing.dagbag import DagBag;"
            f"b = DagBag(dag_folder={str(REPO / 'dags')!r}); assert not b.import_errors, b.import_errors;"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_monitor_dag_sensors_reschedule_and_decide(dagbag):
    dag = dagbag.dags["streamguard_retraining_monitor"]
    assert dag.catchup is False and dag.schedule == "@daily"
    sensors = [t for t in dag.tasks if t.task_id.startswith("wait_for_")]
    assert len(sensors) == 5
    assert all(s.mode == "reschedule" and s.soft_fail for s in sensors)  # never hold a worker slot
    decide = dag.get_task("decide")
    assert decide.trigger_rule == "all_done" and {s.task_id for s in sensors} <= decide.upstream_task_ids
    assert dag.get_task("trigger_training").trigger_dag_id == "streamguard_training"
    assert {"force_retrain", "feedback_count", "accuracy_drop", "fpr_rise", "psi", "max_days"} <= set(dag.params)


def test_scan_dag_maps_one_task_per_repository_and_reports_all_done(dagbag):
    dag = dagbag.dags["streamguard_scan"]
    assert dag.catchup is False and dag.schedule == "@daily"
    assert dag.get_task("scan_repository").upstream_task_ids == {"resolve_model", "plan_repositories"}
    assert dag.get_task("summarize").trigger_rule == "all_done"
    assert dag.get_task("check_scans").upstream_task_ids == {"summarize"}
    assert {"repositories", "exclude", "model", "model_version", "threshold", "store"} == set(dag.params)


@pytest.mark.parametrize("dag_id", ["streamguard_training", "streamguard_ingestion", "streamguard_retraining_monitor",
                                    "streamguard_scan"])
def test_every_param_is_described_sectioned_and_its_default_passes_airflows_validation(dagbag, dag_id):
    """Issue 18 item 1: the store Param's "" default counted as an empty required field, so the UI's
    Trigger button stayed disabled; nine Params had no description and none had a section."""
    dag = dagbag.dags[dag_id]
    dag.params.validate()  # Airflow's own JSON-schema validation of the defaults
    for name, param in dag.params.items():
        schema = param.schema
        assert param.description, f"{dag_id}.{name} has no description"
        assert schema.get("section"), f"{dag_id}.{name} is in no section of the trigger form"
        empty = param.value in (None, "", [], {})
        types = schema.get("type")
        if empty and "enum" not in schema:
            assert isinstance(types, list) and "null" in types, f"{dag_id}.{name}: an empty default must be optional"
    from airflow.sdk import Param

    assert dag.params.get_param("store").value is None and isinstance(dag.params.get_param("store"), Param)
