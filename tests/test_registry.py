"""Registry: versions, aliases, lineage, idempotency, promote/rollback, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pytest

from streamguard_ml.registry import Registry, RegistryError


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"not really a model")
    return str(path)


def test_register_list_show_latest_best_compare(store, artifact):
    reg = Registry(store)
    v1 = reg.register("m", artifact, {"accuracy": 0.8, "f1": 0.7, "fpr": 0.1}, {"lr": 1}, {"data_content_hash": "abc"})
    v2 = reg.register("m", artifact, {"accuracy": 0.9, "f1": 0.6, "fpr": 0.05})
    assert (v1.version, v2.version) == (1, 2)
    assert [mv.version for mv in reg.list("m")] == [1, 2]
    assert reg.get("m", 1).lineage == {"data_content_hash": "abc"} and reg.get("m", 1).params == {"lr": 1}
    assert reg.latest("m").version == 2
    assert reg.best("m", "f1").version == 1 and reg.best("m", "fpr", lower_is_better=True).version == 2
    cmp = reg.compare("m", 1, 2)
    assert cmp["metrics"]["accuracy"]["delta"] == pytest.approx(0.1)
    assert store.read_bytes(reg.get("m", 1).artifact_uri.split(store.root + "/")[1]) == b"not really a model"
    with pytest.raises(RegistryError, match="no version 9"):
        reg.get("m", 9)


def test_idempotency_key_returns_the_same_version(store, artifact):
    reg = Registry(store)
    a = reg.register("m", artifact, {"accuracy": 0.5}, idempotency_key="run-1:gnn")
    b = reg.register("m", artifact, {"accuracy": 0.5}, idempotency_key="run-1:gnn")
    assert a.version == b.version == 1 and reg.versions("m") == [1]


def test_promote_and_rollback_move_the_champion(store, artifact):
    reg = Registry(store)
    for _ in range(3):
        reg.register("m", artifact, {"accuracy": 0.5})
    reg.promote("m", 1)
    reg.promote("m", 3)
    assert reg.champion("m").version == 3 and reg.get("m", 1).status == "archived"
    assert reg.resolve("m", "deployed").version == 3 and reg.get("m", 3).aliases == ["champion"]
    back = reg.rollback("m")
    assert back.version == 1 and reg.champion("m").version == 1 and reg.get("m", 3).status == "archived"
    kinds = [e["event"] for e in reg.events("m")]
    assert kinds.count("promoted") == 2 and "rolled_back" in kinds


def _register_one(args):
    root, artifact, i = args
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    return Registry(LocalStore(root)).register("m", artifact, {"accuracy": i / 10}).version


def test_eight_concurrent_writers_get_distinct_versions(store, artifact):
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        versions = pool.map(_register_one, [(store.root, artifact, i) for i in range(8)])
    assert sorted(versions) == list(range(1, 9))
    reg = Registry(store)
    assert reg.versions("m") == list(range(1, 9))
    assert sorted(mv.metrics["accuracy"] for mv in reg.list("m")) == [i / 10 for i in range(8)]


def test_cli_register_by_hand(store, artifact, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.91, "f1": 0.9, "fpr": 0.02}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "streamguard_ml.cli", *a, "--store", store.root, "--json"],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    out = run("registry", "register", "--model", "imported", "--artifact", artifact, "--metrics", str(metrics))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"] == 1
    listed = json.loads(run("registry", "list").stdout)
    assert listed[0]["model"] == "imported" and listed[0]["metrics"]["accuracy"] == 0.91
    assert set(listed[0]) >= {"model", "version", "status", "aliases", "metrics", "created_at", "lineage"}
    bad = run("registry", "register", "--model", "x", "--artifact", "/nope.tar.gz", "--metrics", str(metrics))
    assert bad.returncode == 2 and "nope.tar.gz" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
