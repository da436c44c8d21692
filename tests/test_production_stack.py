"""The production stack: docker-compose.yaml checked by a real Compose implementation, and the
package run on a real PostgreSQL metadata database (not only SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = [sys.executable, "-m", "airflow"]


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{package} is needed for this test: install it (apt-get install {package})")
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, capture_output=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)


def _compose_command() -> list[str]:
    """`docker compose` where the plugin exists, else Debian's docker-compose (installed if missing)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if not shutil.which("docker-compose"):
        _apt_install("docker-compose")
    return ["docker-compose"]


@pytest.mark.slow
def test_compose_file_is_valid_for_a_real_compose():
    clean_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}  # the file's own defaults
    out = subprocess.run([*_compose_command(), "-f", str(REPO / "docker-compose.yaml"), "config"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=clean_env)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert {"postgres", "redis", "minio", "minio-init", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker"} <= set(services)
    for name in ("postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
    env = services["airflow-scheduler"]["environment"]
    assert env["STREAMGUARD_STORE"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    init = services["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true" and init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert any("logs" in str(v) for v in services["airflow-worker"]["volumes"])
    assert "mb" in services["minio-init"]["entrypoint"] or "mb" in str(services["minio-init"].get("command"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on a free port (installed with apt if the machine lacks it)."""
    if not shutil.which("initdb") and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        _apt_install("postgresql")
    bindir = Path(shutil.which("initdb") or sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="sg-pg-"))  # not under pytest's root-only tmp: postgres must reach it
    port = _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "airflow")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"), "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "-d", "postgres", "-c",
                        "CREATE DATABASE airflow"], check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_training_and_monitor_on_a_postgres_metadata_db(postgres, tiny_base_model, tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres, "STREAMGUARD_STORE": str(tmp_path / "store")}
    migrate = subprocess.run([*AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    check = subprocess.run([*AIRFLOW, "db", "check"], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "postgresql" in (check.stdout + check.stderr).lower() + postgres

    conf = {"smoke": True, "base_model": tiny_base_model,
            "gate": {"floor_accuracy": 0.0, "floor_f1": 0.0, "floor_max_fpr": 1.0}}
    train = subprocess.run([*AIRFLOW, "dags", "test", "streamguard_training", "-c", json.dumps(conf)], env=env,
                           capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, (train.stdout + train.stderr)[-4000:]
    assert "state=success" in train.stdout + train.stderr

    monitor_conf = {"sensor_timeout_minutes": 0.02, "poke_interval_minutes": 0.01}
    monitor = subprocess.run([*AIRFLOW, "dags", "test", "streamguard_retraining_monitor", "-c",
                              json.dumps(monitor_conf)], env=env, capture_output=True, text=True, timeout=600)
    assert monitor.returncode == 0, (monitor.stdout + monitor.stderr)[-4000:]
    assert "state=success" in monitor.stdout + monitor.stderr

    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    versions = Registry(LocalStore(tmp_path / "store")).list()
    assert {v.model for v in versions} == {"taint-flow-gnn", "sql-intent-transformer", "taint-fusion-detector"}
    rows = subprocess.run(["psql", postgres.replace("postgresql+psycopg2", "postgresql"), "-tAc",
                           "SELECT dag_id, state FROM dag_run ORDER BY dag_id"], capture_output=True, text=True,
                          timeout=60)
    assert rows.returncode == 0, rows.stderr
    assert "streamguard_training|success" in rows.stdout and "streamguard_retraining_monitor|success" in rows.stdout
