"""The "Model registry" page of the Airflow UI: through the API server's own app
(FastAPI test client) and rendered by headless Chromium over real HTTP.

One store serves the module: ``taint-flow-gnn`` v1 and v2 (evaluated on the same
synthetic test data, v2 the champion) and v3 (a smoke run evaluated on other, real
data), with model cards; tests that promote or roll back register their own model,
so the others keep seeing v2 as the champion.
"""

from __future__ import annotations

import base64
import html as htmllib
import io
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
import pandas as pd
import pytest

from streamguard_ml.evaluate import full_metrics
from streamguard_ml.layout import run_key
from streamguard_ml.model_card import write_model_card
from streamguard_ml.registry import Registry

MODEL = "taint-flow-gnn"
#: The Airflow run that trained v1 and v2: its id has characters the run key replaces.
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
RUN = run_key(RUN_ID)
SAME, OTHER = "a1" * 32, "b2" * 32
MLFLOW_URL = "http://127.0.0.1:5000/#/experiments/1/runs/0123abcd"


def _test_data(content_hash: str, synthetic: bool) -> dict:
    return {"samples": 80, "sources": {"synthetic" if synthetic else "sven": 80}, "synthetic": 80 * synthetic,
            "real": 0 if synthetic else 80, "synthetic_only": synthetic, "content_hash": content_hash,
            "statement": f"Tested on 80 {'synthetic' if synthetic else 'real'} functions."}


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """taint-flow-gnn v1, v2 (champion; same test data) and v3 (smoke, other data), with cards."""
    from streamguard_ml.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("page") / "store")
    reg = Registry(store)
    rng = np.random.default_rng(3)
    y = np.array([1, 0] * 40)
    records = pd.DataFrame({"id": [f"s{i}" for i in range(80)], "label": y, "pair_id": [f"p{i // 2}" for i in range(80)],
                            "cwe": ["CWE-89"] * 40 + ["CWE-78"] * 40})
    from archive_support import FAKE_MODEL

    store.write_bytes("runs/r/model.tar.gz", FAKE_MODEL)
    store.write_bytes(f"runs/{RUN}/processed/dataset_card.md", b"# Dataset card\n\n80 samples\n")
    store.write_json(f"runs/{RUN}/processed/dataset_card.json", {"run": RUN, "samples": 80})
    cards = {1: f"runs/{RUN}/processed/dataset_card.md",  # a store-relative key (what the pipeline writes now)
             2: f"s3://elsewhere/streamguard/runs/{RUN}/processed/dataset_card.md",  # an older absolute URI
             3: "runs/x/processed/../../../registry/taint-flow-gnn/log/000001/entry.json"}  # crafted
    for version, noise in ((1, 0.35), (2, 0.15), (3, 0.3)):
        prob = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, noise, 80), 0, 1)
        preds = records.assign(prob=prob, pred=(prob >= 0.5).astype(int))
        metrics = full_metrics(records, prob) | {"test_data": _test_data(SAME if version < 3 else OTHER, version < 3)}
        lineage = {"run": RUN if version < 3 else "cli-smoke", "sources": ["synthetic:1200"], "code_version": "test",
                   "dataset_card": cards[version]}
        lineage |= {"mlflow": {"run_id": "0123abcd", "url": MLFLOW_URL}} if version == 2 else {}
        lineage |= {"smoke": True} if version == 3 else {}
        mv = reg.register(MODEL, store.uri("runs/r/model.tar.gz"), metrics,
                          params={"lr": 0.001 * version, "epochs": 2, "hidden": 64}, lineage=lineage,
                          decision={"promote": version < 3, "kind": "first_model_floors", "reasons": ["ok: <floors>"]})
        history = [{"epoch": e, "loss": 1 / e, "train_acc": 0.7, "val_acc": 0.7, "val_f1": 0.7} for e in (1, 2)]
        dataset = {"run": RUN, "content_hash": "c0ffee", "samples": 400, "augmented": 10, "pairs": 150,
                   "per_split": {"train": {"total": 320, "vulnerable": 160}, "test": {"total": 80, "vulnerable": 40}},
                   "quarantine": {"total": 3}} if version == 2 else None
        write_model_card(store, reg.card_prefix(mv.model, version), mv, predictions=preds if version < 3 else None,
                         dataset_card=dataset,
                         training={"model_type": "gnn", "history": history, "train_samples": 400},
                         explanations=[{"id": "s0", "score": 0.9, "lines": [{"line": 2, "attribution": 1.0}],
                                        "code": "def f(c, x):\n    c.execute('S' + x)\n", "vulnerable_lines": [2]}])
        if version < 3:
            reg.promote(MODEL, version)
    reg.tag(MODEL, 1, "reviewed")
    reg.tag(MODEL, 2, "reviewed")
    reg.tag(MODEL, 2, "ticket:SEC-12")
    return store


@pytest.fixture(scope="module")
def airflow_run(airflow_db):
    """A run of the training DAG in Airflow's database, as the scheduler would have created it."""
    from datetime import datetime, timezone

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(DagRun(dag_id="streamguard_training", run_id=RUN_ID, run_type="manual", state="success",
                           run_after=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    yield RUN_ID
    with create_session() as session:
        session.query(DagRun).filter(DagRun.run_id == RUN_ID).delete()


def _jwt(role: str | None, name: str = "", **kwargs) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name or str(role).lower(), role=role),
                                           **kwargs)


@pytest.fixture(scope="module")
def api(airflow_db, populated, airflow_run):
    """Airflow's API server app (plugins mounted) and a signed-in admin's JWT."""
    from airflow.api_fastapi.app import create_app

    previous = os.environ["STREAMGUARD_STORE"]
    os.environ["STREAMGUARD_STORE"] = populated.root  # what the page reads
    app = create_app()
    yield app, _jwt("ADMIN", "admin")
    os.environ["STREAMGUARD_STORE"] = previous


@pytest.fixture
def client(api):
    from fastapi.testclient import TestClient

    app, token = api
    with TestClient(app) as c:
        c.cookies.set("_token", token)
        yield c


@pytest.fixture
def as_role(api):
    """A test client signed in (cookie) with a SimpleAuthManager role: ``as_role("VIEWER")``."""
    from fastapi.testclient import TestClient

    clients = []

    def make(role: str | None, token: str | None = None):
        c = TestClient(api[0])
        c.__enter__()
        clients.append(c)
        c.cookies.set("_token", token or _jwt(role))
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _text(page: str) -> str:
    """What a reader sees of an HTML page: tags dropped, entities decoded, spaces folded."""
    page = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", page)
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def _rows(page: str) -> list[int]:
    return [int(v) for v in re.findall(r'<tr class="version" data-version="(\d+)"', page)]


def test_plugin_adds_the_page_to_the_ui_navigation(client, api):
    plugins = client.get("/api/v2/plugins").json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "streamguard_registry"]
    (view,) = ours["external_views"]
    assert view["name"] == "Model registry" and view["url_route"] == "model-registry"
    assert view["href"] == "/streamguard/registry/" and view["category"] == "browse"
    assert ours["fastapi_apps"][0]["url_prefix"] == "/streamguard"


def test_index_lists_models_versions_metrics_and_the_champion(client):
    page = client.get("/streamguard/registry/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="model-taint-flow-gnn"' in html and '<strong class="champion">v2</strong>' in html
    assert html.count('<span class="badge archived">archived</span>') == 1
    assert html.count('<span class="badge deployed">deployed</span>') == 1
    assert 'href="http://testserver/streamguard/registry/taint-flow-gnn/1"' in html
    assert "<th>pairwise_accuracy</th>" in html and "<th>fpr</th>" in html
    assert _rows(html) == [3, 2, 1]
    v3 = html.split('data-version="3"')[1].split("</tr>")[0]
    assert 'class="badge smoke"' in v3 and "smoke: never promoted" in v3 and "Promote" not in v3
    assert f"<code title=\"{SAME}\">{SAME[:12]}</code>" in html and f"{OTHER[:12]}</code>" in html
    assert 'class="promote"' in html and "Promote v1" in html and "Promote v2" not in html  # v2 is the champion
    v2 = html.split('data-version="2"')[1].split("</tr>")[0]
    assert '<span class="tag">reviewed</span> <span class="tag">ticket:SEC-12</span>' in v2
    assert '<option value="ticket:SEC-12">ticket:SEC-12</option>' in html
    api_versions = client.get("/streamguard/registry/api/versions").json()
    assert [(v["version"], v["status"], v["aliases"]) for v in api_versions] == [
        (1, "archived", []), (2, "deployed", ["champion"]), (3, "registered", [])]


@pytest.mark.parametrize(("query", "shown"), [
    ("", [3, 2, 1]), ("?status=archived", [1]), ("?alias=champion", [2]), ("?alias=none", [3, 1]),
    ("?data=synthetic", [2, 1]), ("?data=real", [3]), ("?smoke=yes", [3]), ("?smoke=no", [2, 1]),
    ("?q=v3", [3]), ("?q=cli-smoke", [3]), ("?q=TAINT", [3, 2, 1]), ("?q=nothing-like-it", []),
    ("?data=synthetic&alias=none", [1]), ("?tag=reviewed", [2, 1]), ("?tag=ticket:SEC-12", [2]),
    ("?q=sec-12", [2])])
def test_filters_narrow_the_versions(client, query, shown):
    page = client.get(f"/streamguard/registry/{query}").text
    assert _rows(page) == shown
    assert ("versions match the filters" in page) == (len(shown) < 3)


def test_a_chart_per_metric_joins_only_versions_evaluated_on_the_same_data(client):
    page = client.get("/streamguard/registry/").text
    charts = re.findall(r'(?s)<svg class="chart" data-metric="([^"]+)".*?</svg>', page)
    assert charts == ["accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy"]
    accuracy = re.search(r'(?s)<svg class="chart" data-metric="accuracy".*?</svg>', page).group(0)
    assert accuracy.count('<circle class="point"') == 3
    assert accuracy.count("<polyline") == 1  # v1—v2 (same data); v3 was tested on other data: no line to it
    assert 'fill="#fff"' in accuracy and "v3: " in accuracy and "smoke)" in accuracy  # hollow smoke point


def test_audit_log_lists_every_registry_event(client, populated):
    page = client.get("/streamguard/registry/").text
    events = Registry(populated).events(MODEL)
    rows = re.findall(r'<tr class="event (\w+)"><td>(\d+)</td>', page)
    assert [int(seq) for _, seq in rows] == [e["seq"] for e in reversed(events)]  # newest first
    assert {kind for kind, _ in rows} >= {"registered", "promoted"}
    assert "champion v1 → v2" in _text(page)
    assert client.get(f"/streamguard/registry/api/{MODEL}/events").json() == json.loads(json.dumps(events))


def test_side_by_side_compares_only_like_with_like(client, airflow_run):
    same = client.get(f"/streamguard/registry/{MODEL}/compare?v=1&v=2").text
    assert "not-comparable" not in same and "evaluated on the same test data" in same
    assert re.search(r'class="muted delta">Δ [+-]\d\.\d{3}</span>', same)
    assert re.search(r'<tr class="param differs"><th>lr</th>', same) and '<tr class="param"><th>epochs</th>' in same
    run_href = f"/dags/streamguard_training/runs/{quote(airflow_run, safe='')}"
    assert same.count(f'href="{run_href}"') == 2 and f">{airflow_run}</a>" in same
    assert f'href="{MLFLOW_URL}"' in same
    assert same.count('class="dataset-card-link"') == 2

    other = client.get(f"/streamguard/registry/{MODEL}/compare?v=2&v=3").text
    warning = _text(re.search(r'(?s)<p class="warning not-comparable".*?</p>', other).group(0))
    assert "Not comparable: v2 and v3 were evaluated on different test data" in warning
    assert SAME[:12] in warning and OTHER[:12] in warning  # the library's why_not, naming both data
    assert 'class="incomparable"' in other and 'class="muted delta"' not in other  # no deltas across data
    v3_run = re.search(r'(?s)<tr class="lineage" data-label="run">.*?</tr>', other).group(0)
    assert 'href="/dags/streamguard_training/runs"' in v3_run and "no run of streamguard_training" in v3_run
    assert 'class="badge smoke"' in other

    assert client.get(f"/streamguard/registry/{MODEL}/compare?v=2").status_code == 400
    assert client.get(f"/streamguard/registry/{MODEL}/compare?v=2&v=9").status_code == 404
    assert client.get("/streamguard/registry/no-such-model/compare?v=1&v=2").status_code == 404


def test_dataset_card_links_serve_only_the_dataset_card(client):
    from streamguard_airflow.registry_page import dataset_card_key

    for version in (1, 2):  # a store-relative key, and an s3:// URI of the store it was written in
        md = client.get(f"/streamguard/registry/{MODEL}/{version}/files/dataset_card.md")
        assert md.status_code == 200 and md.text.startswith("# Dataset card")
        assert client.get(f"/streamguard/registry/{MODEL}/{version}/files/dataset_card.json").json()["samples"] == 80
    assert client.get(f"/streamguard/registry/{MODEL}/3/files/dataset_card.md").status_code == 404  # crafted lineage
    assert client.get(f"/streamguard/registry/{MODEL}/1/files/dataset_card.txt").status_code == 404
    assert dataset_card_key("/data/store/runs/r1/processed/dataset_card.json", "md") == \
        "runs/r1/processed/dataset_card.md"
    assert dataset_card_key("s3://b/p/runs/old/runs/r1/processed/dataset_card.md", "json") == \
        "runs/r1/processed/dataset_card.json"
    for bad in ("runs/r1/processed/manifest.jsonl", "runs/../processed/dataset_card.md", "/etc/passwd",
                "runs/r1/processed/x/dataset_card.md", "registry/m/cards/000001/model_card.md", None, 7):
        assert dataset_card_key(bad, "md") is None, bad


def test_html_card_shows_everything_the_markdown_card_has(client):
    """Every table cell and every `code` value of model_card.md is on the HTML card, and every section."""
    for version in (2, 3):
        html = client.get(f"/streamguard/registry/{MODEL}/{version}").text
        seen = _text(html)
        md = client.get(f"/streamguard/registry/{MODEL}/{version}/files/model_card.md").text
        headings = re.findall(r"^## (.+)$", md, flags=re.M)
        assert {"Per CWE", "Training", "Known limits"} <= {h.split(" (")[0] for h in headings}
        for heading in headings:
            assert heading.replace("`", "") in seen, heading
        cells = {c.strip() for line in md.splitlines() if line.startswith("|") and not line.startswith("|---")
                 for c in line.strip("|").split("|")}
        codes = set(re.findall(r"`([^`\n]+)`", md))
        shown = {x: "–" if x == "None" else x.replace("`", "") for x in (cells | codes) - {""}}  # "–": not recorded
        missing = sorted(x for x, text in shown.items() if text not in seen)
        assert not missing, missing
        for section in ('id="per-cwe"', 'id="epochs"', 'id="hyperparameters"', 'id="lineage"'):
            assert section in html, section
        if version == 2:  # the dataset card's figures (bullets in Markdown)
            assert "400 samples (10 augmented), 150 vulnerable/fixed pairs, 3 inputs quarantined" in seen
            assert "train 320 samples, 160 vulnerable" in seen and "c0ffee" in seen
    assert "CWE-78" in seen and "Smoke run" in seen and 'class="badge smoke"' in html


def test_card_page_and_its_figures(client):
    html = client.get(f"/streamguard/registry/{MODEL}/2").text
    for needle in ('id="metrics"', "Known limits", "synthetic", "ok: &lt;floors&gt;", 'class="hit"', "wilson"):
        assert needle in html, needle  # ...and text from the store is escaped, never injected
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 5
    for src in images:
        got = client.get(src)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert got.content.startswith(b"\x89PNG")
    md = client.get(f"/streamguard/registry/{MODEL}/2/files/model_card.md")
    assert md.status_code == 200 and md.text.startswith("# Model card — taint-flow-gnn v2")
    assert f'href="{MLFLOW_URL}"' in html and 'class="run-link"' in html


def test_bad_requests_and_signed_out_users(client, api):
    from fastapi.testclient import TestClient

    assert client.get(f"/streamguard/registry/{MODEL}/9").status_code == 404
    assert "no version 9" in client.get(f"/streamguard/registry/{MODEL}/9").json()["detail"]
    assert client.get(f"/streamguard/registry/{MODEL}/2/files/..%2Fsecret").status_code == 404
    assert client.get(f"/streamguard/registry/{MODEL}/2/files/aliases.json").status_code == 404
    with TestClient(api[0]) as anonymous:
        assert anonymous.get("/streamguard/registry/").status_code == 401
        anonymous.cookies.set("_token", "forged")
        assert anonymous.get("/streamguard/registry/").status_code == 403


def test_browsers_without_a_valid_session_go_to_the_login_page(api):
    """An expired session showed raw JSON 401; JSON clients keep their 401/403."""
    from fastapi.testclient import TestClient

    expired = _jwt("ADMIN", "admin", expiration_time_in_seconds=-3600)
    browser_accept = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for token in (None, expired, "forged"):
        with TestClient(api[0], follow_redirects=False) as c:
            if token:
                c.cookies.set("_token", token)
            page = c.get(f"/streamguard/registry/{MODEL}/2?x=1", headers=browser_accept)
            assert page.status_code == 303, (token, page.text)
            target = urlsplit(page.headers["location"])
            assert target.path == "/auth/login"
            assert parse_qs(target.query)["next"] == [f"/streamguard/registry/{MODEL}/2?x=1"]
            api_call = c.get("/streamguard/registry/api/versions")
            assert api_call.status_code == (403 if token == "forged" else 401)
            assert "detail" in api_call.json()
    with TestClient(api[0], follow_redirects=False) as c:  # signed in but not allowed: no login loop
        c.cookies.set("_token", _jwt(None, "nobody"))
        page = c.get("/streamguard/registry/", headers=browser_accept)
        assert page.status_code == 403 and "streamguard_training" in _text(page.text)


def test_docs_need_login_and_readers_need_the_dag_permission(api, as_role):
    """Issue 17 item 10: FastAPI's docs bypassed the login; any role could read the registry."""
    from fastapi.testclient import TestClient

    with TestClient(api[0]) as anonymous:
        for path in ("/streamguard/docs", "/streamguard/redoc", "/streamguard/openapi.json"):
            assert anonymous.get(path).status_code in (401, 404), path
    denied = as_role(None).get("/streamguard/registry/api/versions")
    assert denied.status_code == 403 and "streamguard_training" in denied.json()["detail"]
    assert as_role("VIEWER").get("/streamguard/registry/api/versions").status_code == 200


# -- promote / rollback ----------------------------------------------------------------
@pytest.fixture
def movable(populated):
    """A model of its own, v1..v3 (v3 a smoke run), v2 the champion: promote and roll back freely."""
    name = f"movable-{time.monotonic_ns()}"
    reg = Registry(populated)
    for version in (1, 2, 3):
        reg.register(name, populated.uri("runs/r/model.tar.gz"), {"accuracy": 0.5 + version / 10},
                     lineage={"run": "r", "smoke": version == 3})
    reg.promote(name, 1)
    reg.promote(name, 2)
    return name, reg


def _csrf(page: str) -> str:
    return re.search(r'<meta name="streamguard-csrf" content="([0-9a-f]{64})"', page).group(1)


def test_promote_and_rollback_need_edit_rights_the_csrf_token_and_the_current_champion(as_role, movable):
    name, reg = movable
    url = f"/streamguard/registry/api/{name}"
    viewer = as_role("VIEWER")
    page = viewer.get("/streamguard/registry/").text
    assert 'data-action="promote"' not in page and 'data-action="rollback"' not in page
    assert '<meta name="streamguard-csrf"' not in page and "read-only" in page
    refused = viewer.post(f"{url}/promote", json={"version": 1, "expected": 2})
    assert refused.status_code == 403 and "PUT on the runs of streamguard_training" in refused.json()["detail"]
    assert viewer.post(f"{url}/rollback", json={"expected": 2}).status_code == 403

    user = as_role("USER")  # SimpleAuthManager: USER may edit DAG runs
    page = user.get("/streamguard/registry/").text
    assert 'data-action="promote"' in page
    token = _csrf(page)
    no_token = user.post(f"{url}/promote", json={"version": 1, "expected": 2})
    assert no_token.status_code == 403 and "X-StreamGuard-CSRF" in no_token.json()["detail"]
    wrong = user.post(f"{url}/promote", json={"version": 1, "expected": 2}, headers={"X-StreamGuard-CSRF": "0" * 64})
    assert wrong.status_code == 403
    foreign = user.post(f"{url}/promote", json={"version": 1, "expected": 2},
                        headers={"X-StreamGuard-CSRF": token, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["detail"]
    headers = {"X-StreamGuard-CSRF": token}
    stale = user.post(f"{url}/promote", json={"version": 1, "expected": 1}, headers=headers)
    assert stale.status_code == 409 and "champion is v2, not v1" in stale.json()["detail"]
    again = user.post(f"{url}/promote", json={"version": 2, "expected": 2}, headers=headers)
    assert again.status_code == 409 and "v2 is the champion already" in again.json()["detail"]
    assert user.post(f"{url}/promote", json={"version": 3, "expected": 2}, headers=headers).status_code == 400
    assert "smoke" in user.post(f"{url}/promote", json={"version": 3, "expected": 2}, headers=headers).text
    assert user.post(f"{url}/promote", json={"version": 9, "expected": 2}, headers=headers).status_code == 404
    assert user.post(f"{url}/promote", json={"version": 1}, headers=headers).status_code == 422  # expected is required
    assert reg.aliases(name) == {"champion": 2}  # nothing above changed anything

    moved = user.post(f"{url}/promote", json={"version": 1, "expected": 2, "reason": "back to basics"},
                      headers=headers)
    assert moved.status_code == 200 and moved.json()["champion"] == 1 and reg.aliases(name) == {"champion": 1}
    assert reg.events(name)[-1]["reason"] == "back to basics (registry page, user)"
    assert user.post(f"{url}/rollback", json={"expected": 2}, headers=headers).status_code == 409
    back = user.post(f"{url}/rollback", json={"expected": 1}, headers=headers)
    assert back.status_code == 200 and back.json()["champion"] == 2 and reg.aliases(name) == {"champion": 2}


def test_bearer_clients_need_no_csrf_token(api, movable):
    from fastapi.testclient import TestClient

    name, reg = movable
    with TestClient(api[0]) as c:
        got = c.post(f"/streamguard/registry/api/{name}/promote", json={"version": 1, "expected": 2},
                     headers={"Authorization": f"Bearer {_jwt('OP', 'ops')}"})
        assert got.status_code == 200 and reg.aliases(name) == {"champion": 1}
        viewer = c.post(f"/streamguard/registry/api/{name}/rollback", json={"expected": 1},
                        headers={"Authorization": f"Bearer {_jwt('VIEWER')}"})
        assert viewer.status_code == 403 and reg.aliases(name) == {"champion": 1}


# -- headless Chromium over real HTTP --------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, installed from Debian's packages when missing (CI runs as root)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=300, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True,
                       timeout=900, env=env)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    return found


@pytest.fixture(scope="module")
def served(api):
    """The API server app on 127.0.0.1 (uvicorn in a thread)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api[0], host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", api[1]
    server.should_exit = True
    thread.join(10)


class DevTools:
    """A minimal Chrome DevTools Protocol client over Chromium's websocket."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=50_000_000)
        self.ids = itertools.count(1)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params):
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply
                return reply["result"]

    def page(self, method: str, **params):
        return self.call(method, session=True, **params)

    def open(self, url: str, ready: str, timeout: float = 60) -> None:
        """Navigate and wait until the JS expression ``ready`` is true."""
        self.page("Page.navigate", url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate(f"Boolean({ready})"):
                return
            time.sleep(0.25)
        raise AssertionError(f"{url}: {ready} never became true; page text: {self.evaluate('document.body && document.body.innerText')!r}")

    def evaluate(self, expression: str):
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--disable-background-networking", "--no-first-run", "--remote-debugging-port=0",
                             f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "about:blank"],
                            stderr=subprocess.PIPE, text=True)
    ws_url, deadline = None, time.time() + 60
    while ws_url is None and time.time() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        ws_url = match.group(1) if match else None
    assert ws_url, "chromium did not start its DevTools endpoint"
    yield DevTools(ws_url)
    proc.terminate()
    proc.wait(30)


def test_card_renders_in_headless_chromium(browser, served, tmp_path):
    base, token = served
    browser.page("Network.enable")
    browser.page("Network.setCookie", name="_token", value=token, url=base)
    browser.open(f"{base}/streamguard/registry/taint-flow-gnn/2",
                 "document.querySelectorAll('#figures img').length === 5 && "
                 "[...document.images].every(i => i.complete && i.naturalWidth > 200)")
    assert "Model card — taint-flow-gnn v2" in browser.evaluate("document.querySelector('h1').innerText")
    assert browser.evaluate("document.querySelectorAll('#metrics tr').length") >= 7
    shot = browser.page("Page.captureScreenshot", format="png")["data"]
    import matplotlib.image as mpimg

    png = base64.b64decode(shot)
    (tmp_path / "card.png").write_bytes(png)
    assert mpimg.imread(io.BytesIO(png)).shape[1] >= 600


def test_page_shows_inside_the_airflow_ui(browser, served, tmp_path):
    """The UI's own route for the external view embeds the page in an iframe."""
    base, token = served
    browser.page("Network.setCookie", name="_token", value=token, url=base)
    browser.open(f"{base}/plugin/model-registry",
                 "(() => { const f = document.querySelector('iframe');"
                 " return f && f.contentDocument && f.contentDocument.querySelector('.champion'); })()")
    assert browser.evaluate("document.querySelector('iframe').getAttribute('src')").endswith("/streamguard/registry/")
    assert browser.evaluate("document.querySelector('iframe').contentDocument.querySelector('.champion')"
                            ".innerText") == "v2"
    assert {"Dags", "Browse"} <= set(browser.evaluate("document.body.innerText").split())  # the UI around it
    (tmp_path / "ui.png").write_bytes(base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"]))


def _signed_in(browser, base: str, token: str | None) -> None:
    browser.page("Network.enable")
    browser.page("Network.deleteCookies", name="_token", url=base)
    if token:
        browser.page("Network.setCookie", name="_token", value=token, url=base)


def _wait(browser, condition: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if browser.evaluate(f"Boolean({condition})"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{condition} never became true; page text: {browser.evaluate('document.body.innerText')!r}")


def _section(name: str) -> str:
    return f"document.querySelector('[data-model=\"{name}\"]')"


def test_filter_chart_audit_log_and_compare_in_chromium(browser, served):
    base, token = served
    _signed_in(browser, base, token)
    rows = f"{_section(MODEL)}.querySelectorAll('tr.version').length"
    browser.open(f"{base}/streamguard/registry/", f"{rows} === 3")
    assert browser.evaluate(f"{_section(MODEL)}.querySelectorAll('svg.chart').length") == 7
    assert browser.evaluate(f"{_section(MODEL)}.querySelector('svg.chart').getBoundingClientRect().width") >= 250
    assert browser.evaluate(f"{_section(MODEL)}.querySelectorAll('table.audit-log tr.event').length") >= 5
    browser.evaluate("(() => { const s = document.querySelector('select[name=smoke]'); s.value = 'yes';"
                     " s.dispatchEvent(new Event('change')); })()")  # the form submits itself
    _wait(browser, f"location.search.includes('smoke=yes') && {_section(MODEL)} && {rows} === 1")
    assert browser.evaluate(f"{_section(MODEL)}.querySelector('tr.version').dataset.version") == "3"
    browser.open(f"{base}/streamguard/registry/", f"{rows} === 3")
    browser.evaluate(f"(() => {{ const s = {_section(MODEL)};"
                     " for (const v of ['2', '3']) s.querySelector(`input[name=v][value=\"${v}\"]`).click();"
                     " s.querySelector('form.compare button[type=submit]').click(); })()")
    _wait(browser, "document.querySelector('#side-by-side')")
    assert browser.evaluate("location.search") == "?v=3&v=2"  # the table's order: newest first
    assert "Not comparable" in browser.evaluate("document.querySelector('.not-comparable').innerText")


def test_admin_promotes_from_the_page_a_stale_page_gets_a_conflict_and_viewers_see_no_buttons(
        browser, served, movable, tmp_path):
    base, token = served
    name, reg = movable
    section = _section(name)
    _signed_in(browser, base, token)
    browser.open(f"{base}/streamguard/registry/?q={name}", f"{section} && {section}.querySelector('.champion')")
    promote = browser.evaluate(f"[...{section}.querySelectorAll('button.promote')].map(b => b.innerText)")
    assert promote == ["Promote v1"]  # v2 is the champion, v3 a smoke run
    browser.evaluate("window.confirm = () => true")
    browser.evaluate(f"{section}.querySelector('input[name=reason]').value = 'chromium says so'")
    browser.evaluate(f"{section}.querySelector('button.promote').click()")
    _wait(browser, f"{section} && {section}.querySelector('.champion') && "
                   f"{section}.querySelector('.champion').innerText === 'v1'")
    assert reg.aliases(name) == {"champion": 1}
    assert reg.events(name)[-1]["reason"] == "chromium says so (registry page, admin)"

    reg.promote(name, 2, "behind the page's back")  # the page still shows v1 as the champion
    browser.evaluate("window.confirm = () => true")
    browser.evaluate(f"{section}.querySelector('button.rollback').click()")
    _wait(browser, f"{section}.querySelector('.message.error')")
    assert "not v1 as expected" in browser.evaluate(f"{section}.querySelector('.message').innerText")
    assert reg.aliases(name) == {"champion": 2}  # the stale page moved nothing
    (tmp_path / "conflict.png").write_bytes(base64.b64decode(browser.page("Page.captureScreenshot",
                                                                         format="png")["data"]))

    _signed_in(browser, base, _jwt("VIEWER", "vera"))
    browser.open(f"{base}/streamguard/registry/?q={name}", f"{section} && {section}.querySelector('.champion')")
    assert browser.evaluate("document.querySelectorAll('button[data-action]').length") == 0
    assert browser.evaluate(f"{section}.querySelector('.champion').innerText") == "v2"


@pytest.mark.parametrize("session", ["expired", "missing"])
def test_an_expired_or_missing_session_leads_to_the_login_page(browser, served, session):
    base, _ = served
    expired = _jwt("ADMIN", "admin", expiration_time_in_seconds=-3600)
    _signed_in(browser, base, expired if session == "expired" else None)
    browser.open(f"{base}/streamguard/registry/{MODEL}/2", "location.pathname === '/auth/login'")
    assert parse_qs(urlsplit(browser.evaluate("location.href")).query)["next"] == [f"/streamguard/registry/{MODEL}/2"]
    _wait(browser, "document.querySelector('input[type=password]')")  # the auth manager's own login form


@pytest.fixture(scope="module")
def serialized_dags(airflow_db):
    """The DAGs parsed into the test metadata DB, as the dag-processor would."""
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True,
                   env=dict(os.environ), timeout=600)


TRIGGER_BUTTON = "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Trigger')"
DIALOG_TRIGGER = ("[...document.querySelectorAll('[role=dialog] button')]"
                  ".find(b => b.innerText.trim() === 'Trigger')")


@pytest.mark.parametrize("dag_id", ["streamguard_training", "streamguard_ingestion", "streamguard_retraining_monitor",
                                    "streamguard_scan"])
def test_each_dag_triggers_from_the_ui_with_its_defaults(browser, served, serialized_dags, dag_id, tmp_path):
    """Issue 18 item 1: the store Param's "" default kept the trigger form's Trigger button disabled."""
    base, token = served
    browser.page("Network.setCookie", name="_token", value=token, url=base)
    browser.open(f"{base}/dags/{dag_id}", TRIGGER_BUTTON)
    browser.evaluate(f"{TRIGGER_BUTTON}.click()")
    deadline = time.time() + 60
    while time.time() < deadline and not browser.evaluate(f"Boolean({DIALOG_TRIGGER})"):
        time.sleep(0.25)
    (tmp_path / f"{dag_id}.png").write_bytes(base64.b64decode(browser.page("Page.captureScreenshot",
                                                                           format="png")["data"]))
    assert browser.evaluate(f"Boolean({DIALOG_TRIGGER})"), browser.evaluate("document.body.innerText")
    text = browser.evaluate("document.querySelector('[role=dialog]').innerText")
    assert browser.evaluate(f"{DIALOG_TRIGGER}.disabled") is False, text
    assert "Run" in text  # the shared section of store / smoke
