"""Test support for the SageMaker path: moto's server over real HTTP, and what moto leaves out.

moto's server accepts CreateTrainingJob (after botocore has validated the
request on the client side), marks the job Completed at once and writes NO
``model.tar.gz``.  :class:`TrainingContainer` fills that gap the way SageMaker's
PyTorch container would: for every job created on the server it downloads the
job's channels and its packaged code (``sagemaker_submit_directory``) from S3
into a temporary ``/opt/ml``-like tree, runs ``sagemaker_program`` — the real
entrypoint — with the job's hyperparameters as arguments and SageMaker's
``SM_*`` environment, writes its output to CloudWatch Logs under
``/aws/sagemaker/TrainingJobs``, and uploads ``model.tar.gz`` to the job's
``ModelArtifacts`` URI.  While that runs the job is ``InProgress``.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/StreamGuardSageMaker"
BUCKET = "streamguard-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_server(monkeypatch):
    """A ThreadedMotoServer on 127.0.0.1, the AWS environment pointing at it and the ``aws_default``
    connection (endpoint, region, SageMaker role in its extra).  Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": REGION, "sagemaker_role_arn": ROLE_ARN}}))
    import boto3
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=30)  # moto's state is per process, not per server
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=30)
        server.stop()


def sagemaker_backend() -> Any:
    """moto's in-process SageMaker state (the server thread shares it)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]


class TrainingContainer:
    """Runs each job created on the moto server like SageMaker's training container (see module doc)."""

    def __init__(self, endpoint: str, workdir: Path):
        import boto3

        self.endpoint, self.workdir = endpoint, workdir
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.logs = boto3.client("logs", endpoint_url=endpoint)
        self.threads: list[threading.Thread] = []
        self.outputs: dict[str, str] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "TrainingContainer":
        from moto.sagemaker.models import SageMakerModelBackend

        original = SageMakerModelBackend.create_training_job
        container = self

        def create_training_job(backend: Any, *args: Any, **kwargs: Any) -> Any:
            job = original(backend, *args, **kwargs)
            job.training_job_status, job.secondary_status, job.training_end_time = "InProgress", "Training", None
            thread = threading.Thread(target=container.run, args=(job,), daemon=True)
            container.threads.append(thread)
            thread.start()
            return job

        monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=600)

    def run(self, job: Any) -> None:
        from moto.core.utils import utcnow

        name = job.training_job_name
        try:
            lines = self._train(job, self.workdir / name / "opt" / "ml")
            self.outputs[name] = "\n".join(lines)
            job.training_job_status = job.secondary_status = "Completed"
        except Exception as exc:  # the job fails, as SageMaker reports a failing container
            job.training_job_status, job.secondary_status, job.failure_reason = "Failed", "Failed", str(exc)[-1000:]
        job.training_end_time = job.last_modified_time = utcnow()

    def _train(self, job: Any, root: Path) -> list[str]:
        from streamguard_ml.backends import cli_args, sagemaker_environment
        from streamguard_ml.inference import pack_archive

        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job.input_data_config}
        for channel, uri in channels.items():
            self._download_prefix(uri, root / "input" / "data" / channel)
        hp = {k: json.loads(v) for k, v in job.hyper_parameters.items()}
        code = root / "code"
        with tarfile.open(fileobj=io.BytesIO(self._get(hp["sagemaker_submit_directory"])), mode="r:gz") as tar:
            tar.extractall(code, filter="data")
        user_hp = {k: str(v) for k, v in hp.items() if not k.startswith("sagemaker_")}
        env = sagemaker_environment(root, user_hp, ["train", "validation"], ["init"] if "init" in channels else [])
        cmd = [sys.executable, hp["sagemaker_program"], *cli_args(user_hp)]
        out = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=900)
        lines = (out.stdout + out.stderr).splitlines()
        self._log(job.training_job_name, lines)
        if out.returncode != 0:
            raise RuntimeError(f"AlgorithmError: exit code {out.returncode}: " + "\n".join(lines[-20:]))
        bucket, key = self._split(job.model_artifacts["S3ModelArtifacts"])
        self.s3.put_object(Bucket=bucket, Key=key, Body=pack_archive(root / "model"))
        return lines

    def _log(self, job_name: str, lines: list[str]) -> None:
        from streamguard_ml.sagemaker import LOG_GROUP

        try:
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        stream = f"{job_name}/algo-1-{int(time.time())}"
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines) if line.strip()]
        for start in range(0, len(events), 500):
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[start:start + 500])

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def _get(self, uri: str) -> bytes:
        bucket, key = self._split(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _download_prefix(self, uri: str, target: Path) -> None:
        bucket, prefix = self._split(uri)
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        if not keys:
            raise RuntimeError(f"ClientError: channel {uri} is empty")
        for key in keys:
            path = target / key[len(prefix):].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
