"""Staging to S3 and the re-attaching training operator, against moto's server over real HTTP.

No training runs here: jobs are created on moto's server and their state is
moved by hand (as SageMaker would move it) to show what a retried task does.
"""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from sagemaker_support import BUCKET, REGION, ROLE_ARN, moto_server, sagemaker_backend  # noqa: F401

from streamguard_ml import layout
from streamguard_ml.sagemaker import prepare_training_job
from streamguard_ml.store import S3Store

SETTINGS = {"params": {"sagemaker": {"check_interval_s": 1}}}


def _keys(prefix: str = "") -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _stage(processed_run, staging_prefix="staging"):
    store, run, cfg, dataset = processed_run
    cfg = cfg.__class__.from_mapping({**cfg.to_dict(), "sources": list(cfg.sources),
                                      "sagemaker": {"staging_uri": f"s3://{BUCKET}/{staging_prefix}"}})
    staging = S3Store(f"s3://{BUCKET}/{staging_prefix}")
    return prepare_training_job(store, run, "gnn", cfg, dataset["content_hash"], ROLE_ARN, REGION, staging)


def test_staging_copies_channels_and_code_once(moto_server, processed_run):
    store, run, _, _ = processed_run
    request = _stage(processed_run)
    staged = _keys("staging/")
    for split in ("train", "val"):
        assert [f"staging/{k}" for k in store.list(layout.split_dir(run, split))] == \
            [k for k in staged if f"/processed/{split}/" in k]
    assert len([k for k in staged if k.startswith("staging/sagemaker/code/sourcedir-")]) == 1
    assert _stage(processed_run) == request and _keys("staging/") == staged  # a retry changes nothing


def test_an_s3_store_is_its_own_staging_area(moto_server, processed_run):
    """With STREAMGUARD_STORE=s3://... the channels point into the store: no data is copied."""
    local, run, cfg, dataset = processed_run
    s3_store = S3Store(f"s3://{BUCKET}/store")
    for split in ("train", "val"):
        for key in local.list(layout.split_dir(run, split)):
            s3_store.write_bytes(key, local.read_bytes(key))
    before = _keys()
    request = prepare_training_job(s3_store, run, "gnn", cfg, dataset["content_hash"], ROLE_ARN, REGION,
                                   S3Store(s3_store.root))
    added = sorted(set(_keys()) - set(before))
    assert len(added) == 1 and added[0].startswith("store/sagemaker/code/sourcedir-")
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == \
        f"s3://{BUCKET}/store/runs/{run}/processed/train/"


def _operator(request, **kwargs):
    from streamguard_airflow.sagemaker_training import SageMakerTrainingJob

    return SageMakerTrainingJob(task_id="train_sagemaker", config=dict(request), aws_conn_id="aws_default",
                                max_ingestion_time=60, **kwargs)


def _set_status(name: str, status: str, after: float = 0.0) -> None:
    def flip() -> None:
        time.sleep(after)
        job = sagemaker_backend().training_jobs[name]
        job.training_job_status = job.secondary_status = status
        if status == "Failed":
            job.failure_reason = "AlgorithmError: simulated"

    threading.Thread(target=flip).start() if after else flip()


def _first_try_dies(request: dict, status: str) -> str:
    """The first try creates the job, then its worker dies while the job is ``status`` (no waiting)."""
    _operator(request, wait_for_completion=False).execute(SETTINGS)
    _set_status(request["TrainingJobName"], status)
    return request["TrainingJobName"]


def _job_names() -> list[str]:
    return sorted(s["TrainingJobName"] for s in boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"])


@pytest.mark.slow
def test_a_retried_task_reattaches_to_its_job_instead_of_launching_another(moto_server, processed_run):
    request = _stage(processed_run)
    name = _first_try_dies(request, "InProgress")
    assert _job_names() == [name]
    # The retry finds the running job by its deterministic name and waits for it.
    _set_status(name, "Completed", after=1.5)
    result = _operator(request).execute(SETTINGS)
    assert result["Training"]["TrainingJobName"] == name and result["Training"]["TrainingJobStatus"] == "Completed"
    assert _job_names() == [name]
    # Deferrable: the retry defers on the same job.
    _set_status(name, "InProgress")
    from airflow.providers.common.compat.sdk import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        _operator(request).execute({"params": {"sagemaker": {"check_interval_s": 1, "deferrable": True}}})
    assert deferred.value.trigger.job_name == name and _job_names() == [name]


@pytest.mark.slow
def test_after_a_failed_job_a_retry_launches_the_next_named_attempt(moto_server, processed_run):
    request = _stage(processed_run)
    name = _first_try_dies(request, "Failed")
    second = _operator(request).execute(SETTINGS)["Training"]  # moto completes the new job at once
    assert second["TrainingJobName"] == f"{name}-r2" and _job_names() == [name, f"{name}-r2"]
    third = _operator(request).execute(SETTINGS)["Training"]  # and a further retry re-attaches to it
    assert third["TrainingJobName"] == f"{name}-r2" and _job_names() == [name, f"{name}-r2"]
