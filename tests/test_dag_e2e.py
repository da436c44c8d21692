"""End to end: the real training DAG (dag.test) on tiny data to registered versions."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_training_dag_tiny_run_registers_all_three_models(airflow_db, tiny_run, tmp_path, aws_env, monkeypatch):
    """The GNN, the transformer and the fusion detector fitted from them, each with its operating point;
    with the optional shipping switched on, every champion is deployed to a SageMaker endpoint and
    every version exported to SageMaker Model Registry (moto's server)."""
    import json

    import boto3
    from airflow.dag_processing.dagbag import DagBag

    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": aws_env, "region_name": "us-east-1"}}))
    boto3.client("s3").create_bucket(Bucket="sg-e2e-serving")
    store_root = tmp_path / "store"
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["streamguard_training"]
    run = dag.test(run_conf={**tiny_run, "store": str(store_root), "deploy_endpoint": True, "export_model_registry": True,
                             "serving": {"s3_prefix": "s3://sg-e2e-serving/staging"}})
    assert str(run.state).endswith("success"), run.state
    reg = Registry(LocalStore(store_root))
    first = [mv for mv in reg.list() if mv.version == 1]
    assert {mv.model for mv in first} == {"taint-flow-gnn", "sql-intent-transformer", "taint-fusion-detector"}
    for mv in first:
        assert set(mv.metrics) >= {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy",
                                   "at_0.5", "calibration", "test_data", "pair_ranking"}
        assert mv.metrics["threshold"] == pytest.approx(mv.threshold) and mv.operating_point["policy"] == "max_fpr"
        assert mv.metrics["test_data"]["synthetic_only"] and "do NOT measure" in mv.metrics["test_data"]["statement"]
        assert 0.0 <= mv.metrics["accuracy"] <= 1.0
        assert mv.lineage["data_content_hash"] and mv.lineage["code_version"] and mv.params
        assert mv.lineage["smoke"] is False and mv.evaluated_on == mv.metrics["test_data"]["content_hash"]
        assert mv.metrics["test_data"]["seen_in_training"]["samples"] == 0  # grouped splits: nothing leaked
        assert not Path(mv.lineage["dataset_card"]).is_absolute()  # store-relative keys
        assert (store_root / mv.lineage["dataset_card"]).is_file()
        assert mv.lineage["reference_profile"] and mv.lineage["training_backend"] == "local"
        assert "localisation_top1" in mv.metrics
        assert mv.decision["kind"] == "first_model_floors"
        assert reg.champion(mv.model).version == 1  # floors lowered: both promoted
        card = store_root / "registry" / mv.model / "cards" / "000001"
        files = {p.name for p in card.iterdir()}
        assert {"model_card.md", "model_card.json", "roc_curve.png", "reliability.png"} <= files
        assert ("training_curves.png" in files) == (mv.model != "taint-fusion-detector")  # fitted, not trained
        text = (card / "model_card.md").read_text()
        assert "## Operating point" in text and "## Calibration" in text and "do NOT measure" in text
    fusion = reg.get("taint-fusion-detector", 1)
    assert set(fusion.lineage["members"]) == {"gnn", "transformer"}
    assert (store_root / "registry" / "taint-flow-gnn" / "artifacts" / "000001" / "model.tar.gz").exists()
    sagemaker = boto3.client("sagemaker")
    for mv in first:
        endpoint = sagemaker.describe_endpoint(EndpointName=f"streamguard-{mv.model}")
        assert endpoint["EndpointStatus"] == "InService"
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        model = sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        assert model["PrimaryContainer"]["Environment"]["STREAMGUARD_VERSION"] == "1"
        assert model["PrimaryContainer"]["ModelDataUrl"].startswith("s3://sg-e2e-serving/staging/models/")
        (package,) = sagemaker.list_model_packages(ModelPackageGroupName=mv.model)["ModelPackageSummaryList"]
        assert package["ModelApprovalStatus"] == "Approved"
        notes = [e.get("reason", "") for e in reg.events(mv.model)]
        assert any("SageMaker endpoint" in n for n in notes) and any("Model Registry" in n for n in notes)
