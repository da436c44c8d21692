"""streamguard_scan: the DAG parses with its daily schedule and Params, repositories are fetched safely,
and a real run (dag.test) with a registered tiny GNN scans one good repository, fails only the bad one's
mapped task and reports both."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

VULNERABLE = '''\
import sqlite3


def find_user(conn, name):
    cursor = conn.cursor()
    cursor.execute("SELECT * FROM users WHERE name = '" + name + "'")
    return cursor.fetchall()


def add(a, b):
    return a + b
'''


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_scan_dag_parses_daily_with_defaults(dagbag):
    assert dagbag.import_errors == {}
    dag = dagbag.dags["streamguard_scan"]
    assert dag.schedule == "@daily" and dag.catchup is False and dag.max_active_runs == 1
    dag.params.validate()
    assert dag.params["repositories"] == [] and dag.params["exclude"] == []
    assert dag.params["model"] == "taint-flow-gnn" and dag.params["model_version"] == "deployed"
    assert dag.params["threshold"] is None and dag.params["store"] is None
    scan = dag.get_task("scan_repository")
    assert scan.upstream_task_ids == {"resolve_model", "plan_repositories"}
    summarize = dag.get_task("summarize")
    assert summarize.trigger_rule == "all_done"
    assert {"resolve_model", "plan_repositories", "scan_repository"} <= summarize.upstream_task_ids
    assert [o.name for o in summarize.outlets] == ["streamguard_scans"]
    assert dag.get_task("check_scans").upstream_task_ids == {"summarize"}


# -- repositories ---------------------------------------------------------------------
def test_repository_names_are_stable_and_do_not_collide(tmp_path):
    from streamguard_ml.repositories import repository_name

    a, b = str(tmp_path / "one" / "app"), str(tmp_path / "two" / "app")
    assert repository_name(a) == repository_name(a + "/") and repository_name(a) != repository_name(b)
    assert repository_name(a).startswith("app-")
    assert repository_name("s3://bucket/repos/web app.tar.gz").startswith("web-app-")


def test_default_repository_is_this_checkout():
    from streamguard_ml.repositories import default_repository

    root = default_repository()
    assert (root / "streamguard_ml").is_dir() or root.name == "streamguard_ml"


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x = 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_fetch_unpacks_a_tarball_and_keeps_local_paths(tmp_path):
    from streamguard_ml.repositories import fetch

    assert fetch(str(tmp_path), tmp_path / "work") == tmp_path
    archive = _tarball(tmp_path / "app.tar.gz", [_file("app/pkg/mod.py"), _link("app/pkg/alias.py", "mod.py")])
    root = fetch(str(archive), tmp_path / "work")
    assert root.name == "app" and (root / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert not (root / "pkg" / "alias.py").exists()  # links inside are not recreated


@pytest.mark.parametrize("members, reason", [
    ([_file("/etc/evil.py")], "absolute"),
    ([_file("app/../../evil.py")], "'..'"),
    ([_link("app/out", "../../etc/passwd")], "links outside"),
    ([_link("app/abs", "/etc/passwd")], "links outside"),
    ([_link("app/hard", "../x", tarfile.LNKTYPE)], "links outside"),
])
def test_fetch_refuses_escaping_tarballs(tmp_path, members, reason):
    from streamguard_ml.repositories import RepositoryError, fetch

    archive = _tarball(tmp_path / "bad.tar.gz", members)
    with pytest.raises(RepositoryError, match=reason) as err:
        fetch(str(archive), tmp_path / "work")
    assert str(archive) in str(err.value) and "git archive" in str(err.value)
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil.py").exists()
    assert [p.name for p in (tmp_path / "work").iterdir()] == []  # nothing half-unpacked is left


def test_fetch_refuses_oversized_tarballs_and_missing_paths(tmp_path):
    from streamguard_ml.repositories import RepositoryError, TarballLimits, fetch

    archive = _tarball(tmp_path / "big.tar.gz", [_file("a.py", b"#" * 100_000)])
    with pytest.raises(RepositoryError, match="more than 50000 bytes"):
        fetch(str(archive), tmp_path / "work", TarballLimits(max_unpacked_bytes=50_000))
    with pytest.raises(RepositoryError, match="more than 1 members"):
        fetch(str(_tarball(tmp_path / "many.tar.gz", [_file("a.py"), _file("b.py")])), tmp_path / "w2",
              TarballLimits(max_members=1))
    with pytest.raises(RepositoryError, match="does not exist"):
        fetch(str(tmp_path / "nope"), tmp_path / "work")
    with pytest.raises(RepositoryError, match="must be a tarball"):
        fetch("s3://bucket/folder", tmp_path / "work")


def test_fetch_downloads_an_s3_tarball(s3_store, tmp_path):
    from streamguard_ml.repositories import fetch

    archive = _tarball(tmp_path / "svc.tar.gz", [_file("svc/main.py")])
    s3_store.write_bytes("repos/svc.tar.gz", archive.read_bytes())
    root = fetch(s3_store.uri("repos/svc.tar.gz"), tmp_path / "work")
    assert (root / "main.py").is_file()
    assert not list((tmp_path / "work").glob(".download-*"))


# -- the DAG, end to end --------------------------------------------------------------
@pytest.fixture(scope="module")
def gnn_store(tmp_path_factory) -> Path:
    """A store holding a real (untrained, tiny) GNN registered and promoted as taint-flow-gnn v1."""
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.inference import pack_archive
    from streamguard_ml.kinds import GNNKind
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    out = tmp_path_factory.mktemp("gnn")
    kind = GNNKind()
    hp, cfg = {"hidden": 16, "layers": 1, "heads": 2}, {"vocabulary_size": vocabulary()["size"]}
    (out / "model").mkdir()
    kind.save(kind.build(cfg, hp), out / "model", cfg, hp)
    (out / "model.tar.gz").write_bytes(pack_archive(out / "model"))
    store = LocalStore(out / "store")
    reg = Registry(store)
    mv = reg.register("taint-flow-gnn", str(out / "model.tar.gz"), {"accuracy": 0.9, "f1": 0.8},
                      lineage={"run": "r1", "smoke": False})
    reg.promote("taint-flow-gnn", mv.version, reason="test")
    return out / "store"


def _states(run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state).rsplit(".", 1)[-1] for ti in run.get_task_instances()}


def test_scan_dag_scans_each_repository_and_isolates_failures(airflow_db, dagbag, gnn_store, tmp_path):
    from streamguard_ml import layout
    from streamguard_ml.repositories import repository_name

    good = tmp_path / "good"
    (good / "pkg").mkdir(parents=True)
    (good / "pkg" / "users.py").write_text(VULNERABLE)
    missing = tmp_path / "missing"
    dag = dagbag.dags["streamguard_scan"]
    run = dag.test(run_conf={"repositories": [str(good), str(missing)], "threshold": 0.0,
                             "store": str(gnn_store)})
    states = _states(run)
    assert str(run.state).endswith("failed"), states
    assert states[("resolve_model", -1)] == "success" and states[("plan_repositories", -1)] == "success"
    assert states[("scan_repository", 0)] == "success" and states[("scan_repository", 1)] == "failed"
    assert states[("summarize", -1)] == "success" and states[("check_scans", -1)] == "failed"

    scan_dir = gnn_store / layout.scan_dir(run.run_id, repository_name(str(good)))
    sarif = json.loads((scan_dir / "results.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    results = sarif["runs"][0]["results"]
    assert results and {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results} == {
        "pkg/users.py"}
    assert (scan_dir / "findings.jsonl").read_text().strip()
    assert json.loads((scan_dir / "summary.json").read_text())["findings"] == len(results)

    summary = json.loads((gnn_store / "scans" / layout.run_key(run.run_id) / "run-summary.json").read_text())
    assert (summary["succeeded"], summary["failed"], summary["model"], summary["version"]) == (
        1, 1, "taint-flow-gnn", 1)
    by_repo = {o["repository"]: o for o in summary["repositories"]}
    assert by_repo[str(good)]["status"] == "success" and by_repo[str(good)]["findings"] == len(results)
    assert by_repo[str(missing)]["status"] == "failed" and "does not exist" in by_repo[str(missing)]["error"]

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        (event,) = session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id).all()
        assert event.asset.name == "streamguard_scans"
        assert (event.extra["succeeded"], event.extra["failed"]) == (1, 1)
        assert event.extra["sarif"] == {repository_name(str(good)): str(scan_dir / "results.sarif")}


def test_scan_dag_without_a_model_says_to_train_first(airflow_db, dagbag, tmp_path, capfd):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "a.py").write_text("x = 1\n")
    dag = dagbag.dags["streamguard_scan"]
    run = dag.test(run_conf={"repositories": [str(tmp_path / "repo")], "store": str(tmp_path / "empty")})
    states = _states(run)
    assert str(run.state).endswith("failed")
    assert states[("resolve_model", -1)] == "failed"
    assert ("resolve_model", -1) in states and states[("check_scans", -1)] in ("upstream_failed", "failed")
    out = capfd.readouterr()
    assert "holds no models yet; run the streamguard_training DAG first" in out.out + out.err
