"""End to end: the real training DAG (dag.test) on tiny data to registered versions."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_training_dag_smoke_run_registers_both_models(airflow_db, tiny_base_model, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    store_root = tmp_path / "store"
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["streamguard_training"]
    run = dag.test(run_conf={"smoke": True, "base_model": tiny_base_model, "store": str(store_root),
                             "gate": {"floor_accuracy": 0.0, "floor_f1": 0.0, "floor_max_fpr": 1.0}})
    assert str(run.state).endswith("success"), run.state
    reg = Registry(LocalStore(store_root))
    versions = reg.list()
    assert {mv.model for mv in versions} == {"taint-flow-gnn", "sql-intent-transformer"}
    for mv in versions:
        assert mv.version == 1
        assert set(mv.metrics) >= {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy"}
        assert 0.0 <= mv.metrics["accuracy"] <= 1.0
        assert mv.lineage["data_content_hash"] and mv.lineage["code_version"] and mv.params
        assert mv.decision["kind"] == "first_model_floors"
        assert reg.champion(mv.model).version == 1  # floors lowered: both promoted
    assert (store_root / "registry" / "taint-flow-gnn" / "artifacts" / "000001" / "model.tar.gz").exists()
