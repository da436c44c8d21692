"""The "Model registry" page of the Airflow UI: a small FastAPI app the API server mounts.

It shows every model, its versions (status, aliases, headline metrics, the
promotion decision), the champion, and each version's model card with its
figures.  It reads the registry through ``streamguard_ml.registry`` — the same
code the CLI uses — from the store named by ``STREAMGUARD_STORE``, else the
Airflow Variable ``streamguard_store``, else the default.  Every route needs a
signed-in Airflow user (the UI's ``_token`` cookie, or a bearer token) whom
Airflow's auth manager lets read the runs of the training DAG: the registry is
what those runs produced.  The page only reads; an action added to it must ask for
``PUT`` on those runs (what editing a DAG run needs) through :func:`authorize`.
FastAPI's own ``/docs``, ``/redoc`` and ``/openapi.json`` are switched off: they
would be served outside the dependency that checks the user.
Importing this module is cheap: no torch, and Airflow's API internals are
imported only when a request arrives.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import DictLoader, Environment, select_autoescape

#: Files of a model card the page may serve, with their media types.
CARD_FILES = {"model_card.md": "text/markdown; charset=utf-8", "model_card.json": "application/json",
              "confusion_matrix.png": "image/png", "roc_curve.png": "image/png", "pr_curve.png": "image/png",
              "reliability.png": "image/png", "training_curves.png": "image/png"}
HEADLINE = ("accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1a202c}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem} table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #cbd5e0;padding:.3rem .6rem;text-align:left;font-size:.9rem} th{background:#edf2f7}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.6rem;font-size:.8rem;background:#e2e8f0}
.deployed{background:#c6f6d5} .archived{background:#fed7d7} .approved{background:#bee3f8}
img{max-width:480px;margin:.5rem 1rem .5rem 0;border:1px solid #e2e8f0} pre{background:#f7fafc;padding:.6rem}
.hit{background:#fefcbf} .muted{color:#718096}
"""

_TEMPLATES = {
    "base.html": """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{% block title %}Model registry{% endblock %} · StreamGuard ML</title><style>{{ style }}</style></head>
<body>{% block body %}{% endblock %}</body></html>""",
    "index.html": """{% extends "base.html" %}{% block body %}
<h1>StreamGuard model registry</h1>
<p class="muted">Store <code>{{ store }}</code> · {{ models|length }} model(s)</p>
{% if not models %}<p id="empty">No model is registered yet: run the <code>streamguard_training</code> DAG.</p>{% endif %}
{% for m in models %}
<h2 id="model-{{ m.name }}">{{ m.name }}</h2>
<p>Champion: {% if m.champion %}<strong class="champion">v{{ m.champion.version }}</strong>
 (accuracy {{ fmt(m.champion.metrics.accuracy) }}, FPR {{ fmt(m.champion.metrics.fpr) }})
 {% else %}<span class="muted">none yet</span>{% endif %}</p>
<table class="versions"><tr><th>version</th><th>status</th><th>aliases</th>
{% for k in headline %}<th>{{ k }}</th>{% endfor %}<th>gate</th><th>created</th><th>model card</th></tr>
{% for v in m.versions|reverse %}<tr>
<td>v{{ v.version }}</td><td><span class="badge {{ v.status }}">{{ v.status }}</span></td>
<td>{{ v.aliases|join(", ") }}</td>{% for k in headline %}<td>{{ fmt(v.metrics.get(k)) }}</td>{% endfor %}
<td>{% if v.decision %}{{ "promote" if v.decision.promote else "keep" }}{% else %}–{% endif %}</td>
<td>{{ v.created_at }}</td><td><a href="{{ base }}/{{ m.name }}/{{ v.version }}">card</a></td></tr>{% endfor %}
</table>{% endfor %}{% endblock %}""",
    "card.html": """{% extends "base.html" %}{% block title %}{{ v.model }} v{{ v.version }}{% endblock %}
{% block body %}<p><a href="{{ base }}/">← all models</a></p>
<h1>Model card — {{ v.model }} v{{ v.version }} <span class="badge {{ v.status }}">{{ v.status }}</span>
{% for a in v.aliases %}<span class="badge deployed">{{ a }}</span>{% endfor %}</h1>
{% if not card %}<p id="no-card">No model card has been written for this version yet:
<code>streamguard-ml registry card {{ v.model }} {{ v.version }} --refresh</code></p>{% else %}
<p><a href="{{ files }}/model_card.md">Markdown</a> · <a href="{{ files }}/model_card.json">JSON</a></p>
<h2>Lineage</h2><table>{% for k, val in v.lineage.items() %}<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}
<tr><th>artifact</th><td>{{ v.artifact_uri }}</td></tr><tr><th>created</th><td>{{ v.created_at }}</td></tr></table>
<h2>Data</h2><table>{% for k, val in card.data.items() %}<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}</table>
{% if card.test_data %}<p id="provenance"><strong>{{ card.test_data.statement }}</strong></p>{% endif %}
{% if card.operating_point %}<h2>Operating point</h2><table id="operating-point">
<tr><th>threshold</th><td>{{ fmt(card.operating_point.threshold) }}</td></tr>
<tr><th>policy</th><td>{{ card.operating_point.policy }}{% if card.operating_point.max_fpr %} (validation FPR
&le; {{ card.operating_point.max_fpr }}){% endif %}</td></tr>
{% for k, val in (card.operating_point.validation or {}).items() %}<tr><th>validation {{ k }}</th>
<td>{{ fmt(val) }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Metrics on the test split (95 % intervals)</h2>
<table id="metrics"><tr><th>metric</th><th>value</th><th>interval</th><th>method</th><th>at 0.5</th></tr>
{% for name, m in card.metrics_ci.items() %}<tr><td>{{ name }}</td><td>{{ fmt(m.value) }}</td>
<td>{% if m.ci %}[{{ fmt(m.ci[0]) }}, {{ fmt(m.ci[1]) }}]{% else %}–{% endif %}</td><td>{{ m.method }}</td>
<td>{{ fmt((card["at_0.5"] or {}).get(name)) }}</td></tr>{% endfor %}
</table>
{% if card.calibration and card.calibration.test %}<h2>Calibration ({{ card.calibration.test.method }})</h2>
<table id="calibration"><tr><th>split</th><th>Brier before</th><th>Brier after</th><th>ECE before</th><th>ECE after</th></tr>
{% for split in ("validation", "test") %}{% set c = card.calibration[split] %}{% if c %}<tr><td>{{ split }}</td>
<td>{{ fmt(c.brier_before) }}</td><td>{{ fmt(c.brier_after) }}</td><td>{{ fmt(c.ece_before) }}</td>
<td>{{ fmt(c.ece_after) }}</td></tr>{% endif %}{% endfor %}</table>{% endif %}
<h2>Confusion matrix</h2><table><tr><th></th><th>predicted safe</th><th>predicted vulnerable</th></tr>
<tr><th>actually safe</th><td>{{ card.confusion_matrix.tn }}</td><td>{{ card.confusion_matrix.fp }}</td></tr>
<tr><th>actually vulnerable</th><td>{{ card.confusion_matrix.fn }}</td><td>{{ card.confusion_matrix.tp }}</td></tr></table>
<div id="figures">{% for key, name in card.figures.items() %}<img src="{{ files }}/{{ name }}" alt="{{ key }}">{% endfor %}</div>
{% if card.decision %}<h2>Promotion gate: {{ "promote" if card.decision.promote else "keep as challenger" }}</h2>
<ul>{% for r in card.decision.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
{% if card.explanations %}<h2>Explanation examples</h2>{% for ex in card.explanations[:3] %}
<p>Sample <code>{{ ex.id }}</code>: score {{ fmt(ex.score) }}, lines the fix changed {{ ex.vulnerable_lines }}</p>
<pre>{% set top = ex.lines[:3]|map(attribute="line")|list %}{% for line in ex.code.splitlines() %}<span
{% if loop.index in top %} class="hit"{% endif %}>{{ "%3d"|format(loop.index) }}  {{ line }}</span>
{% endfor %}</pre>{% endfor %}{% endif %}
<h2>Known limits</h2><ul id="limits">{% for l in card.known_limits %}<li>{{ l }}</li>{% endfor %}</ul>
{% endif %}{% endblock %}""",
}

_env = Environment(loader=DictLoader(_TEMPLATES), autoescape=select_autoescape(default=True))


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(style=_STYLE, fmt=_fmt, headline=HEADLINE, **context))


#: The DAG whose runs write the registry: its permissions are the registry's.
TRAINING_DAG_ID = "streamguard_training"


async def require_user(request: Request) -> Any:
    """The signed-in Airflow user allowed to read the training DAG's runs, else 401/403."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    user = await resolve_user_from_token(token)
    authorize(user, "GET")
    return user


def authorize(user: Any, method: str) -> None:
    """403 unless the auth manager allows ``method`` on the training DAG's runs for ``user``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    allowed = get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                                   details=DagDetails(id=TRAINING_DAG_ID), user=user)
    if not allowed:
        raise HTTPException(status_code=403, detail=f"{method} on the runs of {TRAINING_DAG_ID} is not allowed "
                                                    "for this user: ask an Airflow admin for that permission")


def store_root() -> str | None:
    root = os.environ.get("STREAMGUARD_STORE")
    if not root:
        from airflow.models import Variable

        root = Variable.get("streamguard_store", default_var=None)
    return root or None


def _registry() -> Any:
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import open_store

    return Registry(open_store(store_root()))


def _version(registry: Any, model: str, version: int) -> Any:
    from streamguard_ml.registry import RegistryError

    try:
        return registry.get(model, version)
    except RegistryError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def create_app() -> FastAPI:
    """The page's routes; the plugin mounts this app under ``/streamguard``."""
    app = FastAPI(title="StreamGuard model registry", dependencies=[Depends(require_user)],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/registry/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        registry = _registry()
        models = []
        for name in registry.models():
            versions = registry.list(name)
            champion = next((v for v in versions if "champion" in v.aliases), None)
            models.append({"name": name, "versions": versions, "champion": champion})
        return _render("index.html", models=models, store=registry.store.root,
                       base=str(request.url_for("index")).rstrip("/"))

    @app.get("/registry/api/versions")
    def versions() -> JSONResponse:
        """The same documents as ``streamguard-ml registry list --json``."""
        return JSONResponse([mv.to_dict() for mv in _registry().list()])

    @app.get("/registry/{model}/{version}", response_class=HTMLResponse)
    def card(request: Request, model: str, version: int) -> HTMLResponse:
        registry = _registry()
        mv = _version(registry, model, version)
        key = f"{registry.card_prefix(model, version)}/model_card.json"
        card_doc = registry.store.read_json(key) if registry.store.exists(key) else None
        base = str(request.url_for("index")).rstrip("/")
        return _render("card.html", v=mv, card=card_doc, base=base, files=f"{base}/{model}/{version}/files")

    @app.get("/registry/{model}/{version}/files/{name}")
    def card_file(model: str, version: int, name: str) -> Response:
        if name not in CARD_FILES:
            raise HTTPException(status_code=404, detail=f"{name} is not part of a model card")
        registry = _registry()
        _version(registry, model, version)
        key = f"{registry.card_prefix(model, version)}/{name}"
        if not registry.store.exists(key):
            raise HTTPException(status_code=404, detail=f"{model} v{version} has no {name}")
        return Response(registry.store.read_bytes(key), media_type=CARD_FILES[name])

    return app
