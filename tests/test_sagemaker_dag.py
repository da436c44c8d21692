"""End to end with training_backend=sagemaker: the real DAG (dag.test) against moto's server over HTTP.

moto accepts the jobs but never trains and writes no model.tar.gz, so the
``TrainingContainer`` fixture (tests/sagemaker_support.py) plays SageMaker's
container: for each job created on the server it runs the real entrypoint from
the staged sourcedir.tar.gz with SageMaker's SM_* environment in a temporary
/opt/ml-like tree, logs to CloudWatch and uploads model.tar.gz where the job's
ModelArtifacts says.  Everything else — staging, the CreateTrainingJob request
(validated by botocore on the way out), the deferrable operator and its
trigger polling moto, fetching the artifact, evaluation and registration — is
the product's own code path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from sagemaker_support import BUCKET, TrainingContainer, moto_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_training_dag_on_sagemaker_registers_all_three_models(airflow_db, tiny_base_model, tmp_path, moto_server,
                                                         monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore, S3Store
    from streamguard_ml.train import METRIC_REGEXES

    container = TrainingContainer(moto_server, tmp_path / "containers").install(monkeypatch)
    store_root = tmp_path / "store"
    # A SageMaker container cannot see local directories: the encoder goes to S3 first, as in production.
    base_model = f"s3://{BUCKET}/models/tiny-bert"
    S3Store(f"s3://{BUCKET}").upload_dir(tiny_base_model, "models/tiny-bert")
    monkeypatch.setenv("STREAMGUARD_CACHE", str(tmp_path / "cache"))
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["streamguard_training"]
    run = dag.test(run_conf={
        "training_backend": "sagemaker", "store": str(store_root), "base_model": base_model,
        "sources": ["synthetic:64"], "shard_size": 64, "gnn_epochs": 2, "transformer_epochs": 1,
        "max_length": 64, "window_stride": 48, "explain_samples": 2,
        "sagemaker": {"staging_uri": f"s3://{BUCKET}/staging", "check_interval_s": 1, "deferrable": True},
        "gate": {"floor_accuracy": 0.0, "floor_f1": 0.0, "floor_max_fpr": 1.0, "min_test_samples": 0}})
    container.join()
    assert str(run.state).endswith("success"), (run.state, container.outputs)

    sm = boto3.client("sagemaker")
    jobs = sorted(s["TrainingJobName"] for s in sm.list_training_jobs()["TrainingJobSummaries"])
    assert [j.split("-")[1] for j in jobs] == ["gnn", "transformer"]  # one job per model, no duplicates
    reg = Registry(LocalStore(store_root))
    for mv in reg.list():
        assert set(mv.metrics) >= {"accuracy", "f1", "fpr", "pairwise_accuracy"}
        assert mv.version == 1 and reg.champion(mv.model).version == 1
        if mv.model == "taint-fusion-detector":  # fitted from the two SageMaker-trained members, locally
            assert mv.lineage["training_backend"] == "local" and set(mv.lineage["members"]) == {"gnn", "transformer"}
            continue
        assert mv.lineage["training_backend"] == "sagemaker" and mv.lineage["job_name"] in jobs
    assert {mv.model for mv in reg.list()} == {"taint-flow-gnn", "sql-intent-transformer", "taint-fusion-detector"}

    for job in jobs:
        described = sm.describe_training_job(TrainingJobName=job)
        definitions = {d["Name"]: d["Regex"] for d in described["AlgorithmSpecification"]["MetricDefinitions"]
                       if d["Name"] in METRIC_REGEXES}  # moto adds one of its own
        epoch_lines = [line for line in container.outputs[job].splitlines() if line.startswith("Epoch ")]
        assert epoch_lines and all(re.search(regex, line) for regex in definitions.values() for line in epoch_lines)

    _check_the_monitor(jobs)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamguard_ml.cli", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def _check_the_monitor(jobs: list[str]) -> None:
    """`streamguard-ml jobs` and `jobs logs` read the same server (AWS_ENDPOINT_URL points at it)."""
    out = _cli("jobs", "--json", "--name-contains", "sg-")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) == set(jobs)
    for row in rows.values():
        assert row["status"] == "Completed" and row["instance_type"].startswith("ml.p3.")
        assert {"train:loss", "validation:accuracy", "validation:f1"} <= set(row["metrics"])  # from the epoch lines
    table = _cli("jobs", "--watch", "--interval", "0.1", "--iterations", "2")
    assert table.returncode == 0 and jobs[0] in table.stdout and "Completed" in table.stdout, table.stderr
    logs = _cli("jobs", "logs", jobs[0], "--limit", "500")
    assert logs.returncode == 0 and "Epoch 1/2: Train Loss=" in logs.stdout, logs.stderr
    missing = _cli("jobs", "logs", "sg-no-such-job")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
