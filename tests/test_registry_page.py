"""The "Model registry" page of the Airflow UI: through the API server's own app
(FastAPI test client) and rendered by headless Chromium over real HTTP."""

from __future__ import annotations

import base64
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

import numpy as np
import pandas as pd
import pytest

from streamguard_ml.evaluate import full_metrics
from streamguard_ml.model_card import write_model_card
from streamguard_ml.registry import Registry


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """Two versions of one model with model cards, v2 the champion."""
    from streamguard_ml.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("page") / "store")
    reg = Registry(store)
    rng = np.random.default_rng(3)
    y = np.array([1, 0] * 40)
    records = pd.DataFrame({"id": [f"s{i}" for i in range(80)], "label": y, "pair_id": [f"p{i // 2}" for i in range(80)],
                            "cwe": ["CWE-89"] * 80})
    from archive_support import FAKE_MODEL

    store.write_bytes("runs/r/model.tar.gz", FAKE_MODEL)
    for version, noise in ((1, 0.35), (2, 0.15)):
        prob = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, noise, 80), 0, 1)
        preds = records.assign(prob=prob, pred=(prob >= 0.5).astype(int))
        mv = reg.register("taint-flow-gnn", store.uri("runs/r/model.tar.gz"), full_metrics(records, prob),
                          lineage={"run": "r", "sources": ["synthetic:1200"], "code_version": "test"},
                          decision={"promote": True, "kind": "first_model_floors", "reasons": ["ok: <floors>"]})
        history = [{"epoch": e, "loss": 1 / e, "train_acc": 0.7, "val_acc": 0.7, "val_f1": 0.7} for e in (1, 2)]
        write_model_card(store, reg.card_prefix(mv.model, version), mv, predictions=preds,
                         training={"model_type": "gnn", "history": history},
                         explanations=[{"id": "s0", "score": 0.9, "lines": [{"line": 2, "attribution": 1.0}],
                                        "code": "def f(c, x):\n    c.execute('S' + x)\n", "vulnerable_lines": [2]}])
        reg.promote("taint-flow-gnn", version)
    return store


@pytest.fixture(scope="module")
def api(airflow_db, populated):
    """Airflow's API server app (plugins mounted) and a signed-in user's JWT."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    previous = os.environ["STREAMGUARD_STORE"]
    os.environ["STREAMGUARD_STORE"] = populated.root  # what the page reads
    app = create_app()
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
    yield app, token
    os.environ["STREAMGUARD_STORE"] = previous


@pytest.fixture
def client(api):
    from fastapi.testclient import TestClient

    app, token = api
    with TestClient(app) as c:
        c.cookies.set("_token", token)
        yield c


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
    api_versions = client.get("/streamguard/registry/api/versions").json()
    assert [(v["version"], v["status"], v["aliases"]) for v in api_versions] == [
        (1, "archived", []), (2, "deployed", ["champion"])]


def test_card_page_and_its_figures(client):
    html = client.get("/streamguard/registry/taint-flow-gnn/2").text
    for needle in ('id="metrics"', "Known limits", "synthetic", "ok: &lt;floors&gt;", 'class="hit"', "wilson"):
        assert needle in html, needle  # ...and text from the store is escaped, never injected
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 5
    for src in images:
        got = client.get(src)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert got.content.startswith(b"\x89PNG")
    md = client.get("/streamguard/registry/taint-flow-gnn/2/files/model_card.md")
    assert md.status_code == 200 and md.text.startswith("# Model card — taint-flow-gnn v2")


def test_bad_requests_and_signed_out_users(client, api):
    from fastapi.testclient import TestClient

    assert client.get("/streamguard/registry/taint-flow-gnn/9").status_code == 404
    assert "no version 9" in client.get("/streamguard/registry/taint-flow-gnn/9").json()["detail"]
    assert client.get("/streamguard/registry/taint-flow-gnn/2/files/..%2Fsecret").status_code == 404
    assert client.get("/streamguard/registry/taint-flow-gnn/2/files/aliases.json").status_code == 404
    with TestClient(api[0]) as anonymous:
        assert anonymous.get("/streamguard/registry/").status_code == 401
        anonymous.cookies.set("_token", "forged")
        assert anonymous.get("/streamguard/registry/").status_code == 403


def test_docs_need_login_and_readers_need_the_dag_permission(api):
    """Issue 17 item 10: FastAPI's docs bypassed the login; any role could read the registry."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    with TestClient(api[0]) as anonymous:
        for path in ("/streamguard/docs", "/streamguard/redoc", "/streamguard/openapi.json"):
            assert anonymous.get(path).status_code in (401, 404), path
    no_role = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
    viewer = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="vera", role="VIEWER"))
    with TestClient(api[0]) as c:
        c.cookies.set("_token", no_role)
        denied = c.get("/streamguard/registry/api/versions")
        assert denied.status_code == 403 and "streamguard_training" in denied.json()["detail"]
        c.cookies.set("_token", viewer)
        assert c.get("/streamguard/registry/api/versions").status_code == 200


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


@pytest.fixture(scope="module")
def serialized_dags(airflow_db):
    """The three DAGs parsed into the test metadata DB, as the dag-processor would."""
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], check=True, capture_output=True,
                   env=dict(os.environ), timeout=600)


TRIGGER_BUTTON = "[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Trigger')"
DIALOG_TRIGGER = ("[...document.querySelectorAll('[role=dialog] button')]"
                  ".find(b => b.innerText.trim() === 'Trigger')")


@pytest.mark.parametrize("dag_id", ["streamguard_training", "streamguard_ingestion", "streamguard_retraining_monitor"])
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
