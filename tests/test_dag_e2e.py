"""End to end: the real training DAG (dag.test) on tiny data to registered versions."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_training_dag_smoke_run_registers_both_models(smoke_training):
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    store_root, run = smoke_training
    assert str(run.state).endswith("success"), run.state
    reg = Registry(LocalStore(store_root))
    first = [mv for mv in reg.list() if mv.version == 1]
    assert {mv.model for mv in first} == {"taint-flow-gnn", "sql-intent-transformer"}
    for mv in first:
        assert set(mv.metrics) >= {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy"}
        assert 0.0 <= mv.metrics["accuracy"] <= 1.0
        assert mv.lineage["data_content_hash"] and mv.lineage["code_version"] and mv.params
        assert mv.lineage["reference_profile"] and mv.lineage["training_backend"] == "local"
        assert mv.decision["kind"] == "first_model_floors"
        assert "localisation_top1" in mv.metrics
    assert (store_root / "registry" / "taint-flow-gnn" / "artifacts" / "000001" / "model.tar.gz").exists()
    assert {e["event"] for e in reg.events("taint-flow-gnn")} >= {"registered", "promoted"}
