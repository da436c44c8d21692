"""The "Model registry" page of the Airflow UI: a small FastAPI app the API server mounts.

What it offers, all read through ``streamguard_ml.registry`` (the code the CLI uses)
from the store named by ``STREAMGUARD_STORE``, else the Airflow Variable
``streamguard_store``, else the default:

* ``/registry/`` — every model: champion, versions (status, aliases, a ``smoke``
  badge, the test data each was evaluated on, headline metrics, the gate), filters
  (status, alias, data kind, smoke, free text), an SVG chart of each headline metric
  over versions, the audit log, and promote / rollback buttons for users allowed to
  edit the training DAG's runs.
* ``/registry/<model>/compare?v=1&v=2`` — versions side by side (metrics, data,
  params, lineage with links to the Airflow run, the dataset card and MLflow), saying
  plainly when they were evaluated on different data.
* ``/registry/<model>/<version>`` — the model card in HTML (everything the Markdown
  card has), its figures, files and the version's dataset card.
* ``POST /registry/api/<model>/promote|rollback`` — what the buttons call.

Access: every route needs a signed-in Airflow user (the UI's ``_token`` cookie, or a
bearer token) whom Airflow's auth manager lets read the training DAG's runs; a
browser whose session expired is sent to the login page, other clients get the 401.
Promote and rollback need ``PUT`` on those runs (what editing a DAG run needs), the
current champion the caller expects (so a stale page gets a conflict, never a wrong
move) and, when the cookie authenticates, a CSRF token bound to that cookie (see
:func:`check_csrf`).  FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` are off:
they would be served outside the dependency that checks the user.
Importing this module is cheap: no torch, and Airflow's API internals are imported
only when a request arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape
from markupsafe import Markup, escape
from pydantic import BaseModel

log = logging.getLogger(__name__)

#: Files of a model card the page may serve, with their media types.
CARD_FILES = {"model_card.md": "text/markdown; charset=utf-8", "model_card.json": "application/json",
              "confusion_matrix.png": "image/png", "roc_curve.png": "image/png", "pr_curve.png": "image/png",
              "reliability.png": "image/png", "training_curves.png": "image/png"}
#: A dataset card is shown as plain text (browsers download text/markdown instead of showing it).
DATASET_CARD_TYPES = {"md": "text/plain; charset=utf-8", "json": "application/json"}
HEADLINE = ("accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy")
CHAMPION = "champion"
#: The DAG whose runs write the registry: its permissions are the registry's.
TRAINING_DAG_ID = "streamguard_training"
CSRF_HEADER = "X-StreamGuard-CSRF"
TEMPLATES = Path(__file__).with_name("registry_templates")

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if _number(x) else "–"


def _figure(x: Any) -> str:
    """A metric for the comparison: counts as integers, rates to three places."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else _fmt(x)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # NaN is not a figure


def _text(value: Any) -> str:
    """A lineage or parameter value as one line (lists and dicts as compact JSON)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return "–" if value is None or isinstance(value, Undefined) else str(value)


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(fmt=_fmt, figure=_figure, text=_text, headline=HEADLINE, **context)
    return HTMLResponse(html, status_code=status_code)


# -- who is asking -----------------------------------------------------------------
class LoginRequired(Exception):
    """A browser's session is missing, expired or not valid: send it to the login page."""

    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


def _wants_html(request: Request) -> bool:
    """A browser navigating (GET with HTML accepted), not a script or a JSON client."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


def _session_token(request: Request) -> str | None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    return request.cookies.get(COOKIE_NAME_JWT_TOKEN)


def login_url(request: Request) -> str:
    """The auth manager's login page, coming back to this page once signed in."""
    from airflow.api_fastapi.app import get_auth_manager

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return get_auth_manager().get_url_login(next_url=here)


async def require_user(request: Request) -> Any:
    """The signed-in Airflow user allowed to read the training DAG's runs.

    No token: 401; an expired one: 401; a forged one: 403 — except that a browser
    navigating to a page is redirected to the login page in those three cases (an
    expired session used to show raw JSON).  A valid user without the permission gets
    403 either way: signing in again would not help.
    """
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    try:
        user = await resolve_user_from_token(_bearer(request) or _session_token(request))
    except HTTPException as exc:
        if _wants_html(request) and exc.status_code in (401, 403):
            raise LoginRequired(login_url(request)) from None
        raise
    authorize(user, "GET")
    return user


def allowed(user: Any, method: str) -> bool:
    """Whether the auth manager allows ``method`` on the training DAG's runs for ``user``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return bool(get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                                     details=DagDetails(id=TRAINING_DAG_ID), user=user))


def authorize(user: Any, method: str) -> None:
    """403 unless the auth manager allows ``method`` on the training DAG's runs for ``user``."""
    if not allowed(user, method):
        raise HTTPException(status_code=403, detail=f"{method} on the runs of {TRAINING_DAG_ID} is not allowed "
                                                    "for this user: ask an Airflow admin for that permission")


def may_edit(user: Any) -> bool:
    """Promote and rollback need what editing a DAG run of the training DAG needs."""
    return allowed(user, "PUT")


def csrf_token(session: str) -> str:
    """The token the page's script sends with a POST: an HMAC keyed by the session cookie.

    The cookie is HttpOnly, so a page on another site can neither read it nor compute
    this; and since it is derived, not stored, any API server worker can check it.
    """
    return hmac.new(session.encode(), b"streamguard-registry-csrf", hashlib.sha256).hexdigest()


def check_csrf(request: Request) -> None:
    """403 for a cookie-authenticated POST without this session's CSRF token, or from another origin.

    A bearer-token client needs neither: a browser never attaches that header by itself.
    """
    if _bearer(request):
        return
    session = _session_token(request) or ""
    sent = request.headers.get(CSRF_HEADER, "")
    if not session or not hmac.compare_digest(sent, csrf_token(session)):
        raise HTTPException(status_code=403, detail=f"missing or stale {CSRF_HEADER} header: reload the registry "
                                                    "page and try again")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(status_code=403, detail=f"cross-origin request from {origin} refused")


def _user_name(user: Any) -> str:
    try:
        return str(user.get_name())
    except Exception:  # an auth manager's user without a name: still recorded, anonymously
        return "unknown user"


# -- the registry ------------------------------------------------------------------
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


def _model(registry: Any, model: str) -> str:
    if model not in registry.models():
        raise HTTPException(status_code=404, detail=f"no model {model!r} in the registry (known: "
                                                    f"{', '.join(registry.models()) or 'none'})")
    return model


def _version(registry: Any, model: str, version: int) -> Any:
    from streamguard_ml.registry import RegistryError

    try:
        return registry.get(model, version)
    except RegistryError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _test_data(mv: Any) -> dict[str, Any]:
    return (mv.metrics or {}).get("test_data") or {}


def evaluated_on(mv: Any) -> str | None:
    """The content hash of the test data ``mv``'s metrics come from (None: not recorded)."""
    return _test_data(mv).get("content_hash")


def data_kind(mv: Any) -> str:
    """``real``, ``synthetic`` or ``unrecorded``: the data source kind of the test split (a filter facet)."""
    test = _test_data(mv)
    if test.get("synthetic_only"):
        return "synthetic"
    if test.get("real") or (test and "synthetic_only" in test):
        return "real"
    return "unrecorded"


def is_smoke(mv: Any) -> bool:
    return bool((mv.lineage or {}).get("smoke"))


# -- links ---------------------------------------------------------------------------
_RUN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def dataset_card_key(ref: Any, ext: str) -> str | None:
    """The store key of a version's dataset card (``.md`` or ``.json``), or None.

    Lineage holds a store-relative key (``runs/<run>/processed/dataset_card.md``) or, in
    older entries, an absolute path or ``s3://`` URI of the store it was written in: the
    part from the last ``runs/`` segment on is the key either way.  Only exactly
    ``runs/<run>/processed/dataset_card.{md,json}`` is accepted, so the route that serves
    it can never read any other file of the store.
    """
    if not isinstance(ref, str) or ext not in DATASET_CARD_TYPES:
        return None
    parts = ref.replace("\\", "/").split("/")
    if "runs" not in parts:
        return None
    key = parts[len(parts) - 1 - parts[::-1].index("runs"):]
    if (len(key) != 4 or not _RUN_KEY.fullmatch(key[1]) or key[2] != "processed"
            or key[3] not in ("dataset_card.md", "dataset_card.json")):
        return None
    return f"runs/{key[1]}/processed/dataset_card.{ext}"


def airflow_run_ids() -> dict[str, str]:
    """Run key (``layout.run_key``) → DAG run id, for the training DAG's runs in Airflow's database.

    Lineage records the run *key* (store-safe: ``+`` and ``:`` of a run id become
    ``-``), which is not always the run id the Airflow UI's URL needs; the database
    has the ids.  Empty when the database cannot be read: the page still works,
    without the links.
    """
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from streamguard_ml.layout import run_key

    try:
        with create_session() as session:
            ids = session.scalars(select(DagRun.run_id).where(DagRun.dag_id == TRAINING_DAG_ID)).all()
    except Exception as exc:  # the page must not fail because the metadata DB did
        log.warning("cannot read the runs of %s (no links to them): %s", TRAINING_DAG_ID, exc)
        return {}
    out: dict[str, str] = {}
    for run_id in ids:
        try:
            out.setdefault(run_key(run_id), run_id)
        except ValueError:
            continue
    return out


def _ui(path: str) -> str:
    from airflow.api_fastapi.app import API_ROOT_PATH

    return f"{API_ROOT_PATH.rstrip('/')}/{path}"


def run_link(key: Any, run_ids: dict[str, str]) -> dict[str, Any]:
    """Lineage row of the training run: its Airflow page when Airflow knows the run, else the runs list."""
    if not key:
        return {"label": "run", "text": "–"}
    run_id = run_ids.get(str(key))
    if run_id:
        return {"label": "run", "text": run_id, "id": "run-link",
                "href": _ui(f"dags/{TRAINING_DAG_ID}/runs/{quote(run_id, safe='')}")}
    return {"label": "run", "text": str(key), "href": _ui(f"dags/{TRAINING_DAG_ID}/runs"), "id": "run-link",
            "note": f"no run of {TRAINING_DAG_ID} in Airflow has this id (a CLI run, or a deleted one): "
                    "the link lists the DAG's runs"}


def _http_url(value: Any) -> str | None:
    """``value`` if it is an http(s) URL (never a ``javascript:`` one from a crafted entry)."""
    return value if isinstance(value, str) and urlsplit(value).scheme in ("http", "https") else None


def lineage_rows(mv: Any, run_ids: dict[str, str], files: str) -> list[dict[str, Any]]:
    """Lineage as table rows, with links to the Airflow run, the dataset card and MLflow."""
    lineage = dict(mv.lineage or {})
    rows = [run_link(lineage.pop("run", None), run_ids)]
    if lineage.pop("smoke", None):
        rows.append({"label": "smoke", "text": "smoke run: shrunk data and epochs, never promoted",
                     "badge": "smoke"})
    card = lineage.pop("dataset_card", None)
    if card is not None:
        linked = dataset_card_key(card, "md") is not None
        rows.append({"label": "dataset card", "text": card, "id": "dataset-card-link",
                     "href": f"{files}/dataset_card.md" if linked else None,
                     "extra": {"JSON": f"{files}/dataset_card.json"} if linked else {}})
    mlflow = lineage.pop("mlflow", None)
    if isinstance(mlflow, dict):
        rows.append({"label": "MLflow run", "text": mlflow.get("run_id") or "MLflow run", "id": "mlflow-link",
                     "href": _http_url(mlflow.get("url"))})
    elif mlflow is not None:
        rows.append({"label": "MLflow run", "text": _text(mlflow)})
    rows += [{"label": k, "text": _text(v)} for k, v in lineage.items()]
    rows += [{"label": "artifact", "text": mv.artifact_uri}, {"label": "created", "text": mv.created_at}]
    return rows


# -- the index: rows, filters, charts, audit log -----------------------------------
def version_row(mv: Any, champion: int | None) -> dict[str, Any]:
    """What the versions table and the filters need of one version."""
    data = evaluated_on(mv)
    return {"mv": mv, "version": mv.version, "model": mv.model, "status": mv.status, "aliases": mv.aliases,
            "smoke": is_smoke(mv), "data": data, "data_short": data[:12] if data else None, "kind": data_kind(mv),
            "run": (mv.lineage or {}).get("run"), "metrics": mv.metrics or {},
            "tags": list(getattr(mv, "tags", None) or []),
            "promotable": not is_smoke(mv) and mv.version != champion}


@dataclass(frozen=True)
class Filters:
    """The index's filter facets (query parameters); empty means any.

    The facets are status, alias (``none``: no alias), tag (``registry tag``), the kind
    of test data (real / synthetic / unrecorded), smoke (``yes`` / ``no``) and free text
    over model name, ``v<N>``, run key and tags.
    """

    status: str = ""
    alias: str = ""
    tag: str = ""
    data: str = ""
    smoke: str = ""
    q: str = ""

    @property
    def active(self) -> bool:
        return any((self.status, self.alias, self.tag, self.data, self.smoke, self.q))

    def matches(self, row: dict[str, Any]) -> bool:
        return self._facets(row) and self._text(row)

    def _facets(self, row: dict[str, Any]) -> bool:
        if self.alias == "none":
            alias_ok = not row["aliases"]
        else:
            alias_ok = not self.alias or self.alias in row["aliases"]
        smoke_ok = not self.smoke or row["smoke"] == (self.smoke == "yes")
        status_ok = not self.status or row["status"] == self.status
        tag_ok = not self.tag or self.tag in row["tags"]
        return alias_ok and smoke_ok and status_ok and tag_ok and (not self.data or row["kind"] == self.data)

    def _text(self, row: dict[str, Any]) -> bool:
        haystack = " ".join((row["model"], f"v{row['version']}", str(row["run"] or ""), *row["tags"]))
        return not self.q or self.q.lower() in haystack.lower()


_PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#4a5568")


def data_groups(rows: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    """One colour per test-data identity, in order of first appearance (None: unrecorded)."""
    groups: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault(row["data"], {"colour": _PALETTE[len(groups) % len(_PALETTE)], "versions": [],
                                                "short": row["data_short"], "kind": row["kind"]})
        group["versions"].append(row["version"])
    return groups


def metric_chart(metric: str, rows: list[dict[str, Any]], groups: dict[str | None, dict[str, Any]]) -> Markup | None:
    """An inline SVG of ``metric`` over versions, None when no version has it.

    Points are coloured by the test data they were measured on, and lines join only
    points of the same data: a line between figures from different test sets would
    draw a trend that is not there.  Smoke versions are hollow points.
    """
    points = [(i, row) for i, row in enumerate(rows) if _number(row["metrics"].get(metric))]
    if not points:
        return None
    width, height, pad = 300, 150, 30
    values = [float(row["metrics"][metric]) for _, row in points]
    low, high = min(0.0, *values), max(1.0, *values)
    step = (width - 2 * pad) / max(len(rows) - 1, 1)
    x = lambda i: pad + i * step  # noqa: E731
    y = lambda v: height - pad - (float(v) - low) / (high - low) * (height - 2 * pad)  # noqa: E731
    parts = [f'<svg class="chart" data-metric="{escape(metric)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(metric)} over versions">',
             f'<text x="{pad}" y="14" class="chart-title">{escape(metric)}</text>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<line x1="{pad}" x2="{width - pad / 2}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
                     f'<text x="{pad - 4}" y="{y(tick) + 3:.1f}" class="tick" text-anchor="end">{tick:g}</text>')
    label_every = max(1, len(rows) // 8)
    for i, row in enumerate(rows):
        if i % label_every == 0 or i == len(rows) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - pad + 14}" class="tick" text-anchor="middle">'
                         f'v{row["version"]}</text>')
    for data, group in groups.items():
        line = [f"{x(i):.1f},{y(row['metrics'][metric]):.1f}" for i, row in points if row["data"] == data]
        if len(line) > 1:
            parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{group["colour"]}"/>')
    for i, row in points:
        colour = groups[row["data"]]["colour"]
        fill = "#fff" if row["smoke"] else colour
        tip = (f"v{row['version']}: {_fmt(row['metrics'][metric])} (test data {row['data_short'] or 'unrecorded'}"
               f"{', smoke' if row['smoke'] else ''})")
        parts.append(f'<circle class="point" cx="{x(i):.1f}" cy="{y(row["metrics"][metric]):.1f}" r="4" '
                     f'fill="{fill}" stroke="{colour}" stroke-width="2"><title>{escape(tip)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """One audit-log entry in words."""
    kind, reason = event.get("event"), event.get("reason") or ""
    if kind == "status":
        detail = f"status → {event.get('status')}"
    elif kind == "decision":
        decision = event.get("decision") or {}
        detail = (f"gate: {'promote' if decision.get('promote') else 'keep as challenger'} "
                  f"({decision.get('kind', '?')})")
        reason = reason or "; ".join(decision.get("reasons") or [])
    elif kind in ("promoted", "rolled_back"):
        before = f"v{event['previous']}" if event.get("previous") is not None else "none"
        detail = f"champion {before} → v{event.get('version')}"
    else:
        detail = str(kind)
    return {"seq": event.get("seq"), "at": event.get("at"), "event": kind, "version": event.get("version"),
            "detail": detail, "reason": reason}


def model_view(registry: Any, name: str, filters: Filters) -> dict[str, Any]:
    """Everything the index shows of one model."""
    versions = registry.list(name)
    champion = registry.aliases(name).get(CHAMPION)
    rows = [version_row(mv, champion) for mv in versions]
    groups = data_groups(rows)
    charts = [(metric, chart) for metric in HEADLINE if (chart := metric_chart(metric, rows, groups)) is not None]
    return {"name": name, "rows": rows, "shown": [r for r in rows if filters.matches(r)], "groups": groups,
            "champion": next((r for r in rows if r["version"] == champion), None), "charts": charts,
            "events": [event_row(e) for e in reversed(registry.events(name))]}


def facet_options(models: list[dict[str, Any]]) -> dict[str, list[str]]:
    from streamguard_ml.registry import STATUSES

    aliases = sorted({a for m in models for r in m["rows"] for a in r["aliases"]} | {CHAMPION})
    tags = sorted({t for m in models for r in m["rows"] for t in r["tags"]})
    return {"status": list(STATUSES), "alias": [*aliases, "none"], "tag": tags,
            "data": ["real", "synthetic", "unrecorded"], "smoke": ["yes", "no"]}


# -- the comparison ------------------------------------------------------------------
def comparability(registry: Any, model: str, versions: list[Any]) -> list[dict[str, Any]]:
    """For each version after the first: whether its figures compare with the first's, and why not.

    ``Registry.compare`` decides (same test data, or the gate's paired numbers); for a
    library without that verdict the page compares the recorded test-data hashes itself.
    """
    first = versions[0]
    out = []
    for other in versions[1:]:
        doc = registry.compare(model, first.version, other.version)
        if "comparable" not in doc:
            same = evaluated_on(first) is not None and evaluated_on(first) == evaluated_on(other)
            doc = {**doc, "comparable": same, "basis": "same_data" if same else None, "why_not": None if same else (
                f"v{first.version} and v{other.version} were evaluated on different or unrecorded test data "
                f"({evaluated_on(first) or 'unrecorded'} vs {evaluated_on(other) or 'unrecorded'})")}
        out.append({"a": first.version, "b": other.version, "comparable": bool(doc.get("comparable")),
                    "why_not": doc.get("why_not"), "basis": doc.get("basis"), "paired_on": doc.get("paired_on"),
                    "metrics": doc.get("metrics") or {}})
    return out


def side_by_side(registry: Any, model: str, versions: list[Any], run_ids: dict[str, str],
                 base: str) -> dict[str, Any]:
    """The comparison page's tables: one column per version."""
    metric_keys = [k for k in HEADLINE if any(_number((mv.metrics or {}).get(k)) for mv in versions)]
    metric_keys += sorted({k for mv in versions for k, v in (mv.metrics or {}).items()
                           if _number(v) and k not in HEADLINE and k not in ("tp", "fp", "tn", "fn")})
    param_keys = sorted({k for mv in versions for k in (mv.params or {})})
    params = [(k, [_text((mv.params or {}).get(k)) for mv in versions]) for k in param_keys]
    lineages = [{r["label"]: r for r in lineage_rows(mv, run_ids, f"{base}/{model}/{mv.version}/files")}
                for mv in versions]
    labels = list(dict.fromkeys(label for rows in lineages for label in rows))
    pairs = comparability(registry, model, versions)
    return {"versions": versions, "metric_keys": metric_keys, "params": params, "pairs": pairs,
            "pair_of": {p["b"]: p for p in pairs},
            "lineage": [(label, [rows.get(label) for rows in lineages]) for label in labels],
            "same_data": all(p["comparable"] and p["basis"] == "same_data" for p in pairs),
            "data": [{"hash": evaluated_on(mv), "kind": data_kind(mv), **_test_data(mv)} for mv in versions]}


# -- promote / rollback --------------------------------------------------------------
class PromoteRequest(BaseModel):
    """``expected``: the champion the page showed (null: none); a different one now is a conflict."""

    version: int
    expected: int | None
    reason: str = ""


class RollbackRequest(BaseModel):
    """``expected``: the champion the page showed; rolled back only if it still is."""

    expected: int
    reason: str = ""


def promote_from_page(registry: Any, model: str, version: int, expected: int | None, reason: str) -> Any:
    """Promote ``version`` if the champion is still ``expected``, the one the page showed.

    The check and the promotion are one compare-and-append in the registry, so of two people
    promoting from the same page only the first moves the champion; the other gets a 409.
    """
    from streamguard_ml.registry import RegistryConflict

    try:
        return registry.promote(model, version, reason, expected=expected)
    except RegistryConflict as exc:
        raise RegistryConflict(f"{exc} (reload the page: it showed "
                               f"{'v' + str(expected) if expected is not None else 'no champion'})") from None


def _registry_call(action: Any) -> JSONResponse:
    """Run a registry change; a conflict is 409, any other refusal (smoke, unknown version) 400."""
    from streamguard_ml.registry import RegistryConflict, RegistryError

    try:
        mv = action()
    except RegistryConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except RegistryError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return JSONResponse({"model": mv.model, "champion": mv.version, "status": mv.status})


def _reason(text: str, action: str, user: Any) -> str:
    note = " ".join(text.split())[:500] or action
    return f"{note} (registry page, {_user_name(user)})"


# -- the app -------------------------------------------------------------------------
def _page_context(request: Request, user: Any) -> dict[str, Any]:
    """What every page needs: links, whether to show edit buttons, and the CSRF token for them."""
    base = str(request.url_for("index")).rstrip("/")
    editor = may_edit(user)
    session = _session_token(request)
    return {"base": base, "can_edit": editor, "user": _user_name(user), "login": login_url(request),
            "csrf": csrf_token(session) if editor and session else "", "csrf_header": CSRF_HEADER}


def _error_response(request: Request, exc: HTTPException) -> Response:
    if _wants_html(request):
        return _render("error.html", status_code=exc.status_code, code=exc.status_code, detail=exc.detail,
                       base=str(request.url_for("index")).rstrip("/"))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app() -> FastAPI:
    """The page's routes; the plugin mounts this app under ``/streamguard``."""
    app = FastAPI(title="StreamGuard model registry", dependencies=[Depends(require_user)],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(exc.url, status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error_response(request, exc)

    @app.get("/registry/", response_class=HTMLResponse)
    def index(request: Request, user: Any = Depends(require_user), status: str = "", alias: str = "",
              tag: str = "", data: str = "", smoke: str = "", q: str = "") -> HTMLResponse:
        registry = _registry()
        filters = Filters(status=status, alias=alias, tag=tag, data=data, smoke=smoke, q=q.strip())
        models = [model_view(registry, name, filters) for name in registry.models()]
        return _render("index.html", models=models, store=registry.store.root, filters=filters,
                       options=facet_options(models), **_page_context(request, user))

    @app.get("/registry/api/versions")
    def versions() -> JSONResponse:
        """The same documents as ``streamguard-ml registry list --json``."""
        return JSONResponse([mv.to_dict() for mv in _registry().list()])

    @app.get("/registry/api/{model}/events")
    def events(model: str) -> JSONResponse:
        """The audit log of ``model``, oldest first (``Registry.events``)."""
        registry = _registry()
        return JSONResponse(registry.events(_model(registry, model)))

    @app.post("/registry/api/{model}/promote")
    def promote(model: str, body: PromoteRequest, request: Request,
                user: Any = Depends(require_user)) -> JSONResponse:
        authorize(user, "PUT")
        check_csrf(request)
        registry = _registry()
        _version(registry, _model(registry, model), body.version)
        return _registry_call(lambda: promote_from_page(registry, model, body.version, body.expected,
                                                        _reason(body.reason, "promoted", user)))

    @app.post("/registry/api/{model}/rollback")
    def rollback(model: str, body: RollbackRequest, request: Request,
                 user: Any = Depends(require_user)) -> JSONResponse:
        authorize(user, "PUT")
        check_csrf(request)
        registry = _registry()
        _model(registry, model)
        return _registry_call(lambda: registry.rollback(model, _reason(body.reason, "rolled back", user),
                                                        expected=body.expected))

    @app.get("/registry/{model}/compare", response_class=HTMLResponse)
    def compare(request: Request, model: str, v: list[int] = Query(default=[]),
                user: Any = Depends(require_user)) -> HTMLResponse:
        registry = _registry()
        _model(registry, model)
        chosen = list(dict.fromkeys(v))
        if len(chosen) < 2:
            raise HTTPException(status_code=400, detail="choose at least two versions to compare (?v=1&v=2)")
        versions = [_version(registry, model, n) for n in chosen]
        context = _page_context(request, user)
        return _render("compare.html", model=model, cmp=side_by_side(registry, model, versions, airflow_run_ids(),
                                                                     context["base"]), **context)

    @app.get("/registry/{model}/{version}", response_class=HTMLResponse)
    def card(request: Request, model: str, version: int, user: Any = Depends(require_user)) -> HTMLResponse:
        registry = _registry()
        mv = _version(registry, model, version)
        key = f"{registry.card_prefix(model, version)}/model_card.json"
        card_doc = registry.store.read_json(key) if registry.store.exists(key) else None
        context = _page_context(request, user)
        files = f"{context['base']}/{model}/{version}/files"
        return _render("card.html", v=mv, card=card_doc, files=files, smoke=is_smoke(mv),
                       data_short=(evaluated_on(mv) or "")[:12],
                       lineage=lineage_rows(mv, airflow_run_ids(), files), **context)

    @app.get("/registry/{model}/{version}/files/dataset_card.{ext}")
    def dataset_card(model: str, version: int, ext: str) -> Response:
        """The dataset card of the run that trained this version (only that file, read from the store)."""
        registry = _registry()
        mv = _version(registry, model, version)
        key = dataset_card_key((mv.lineage or {}).get("dataset_card"), ext)
        if key is None or not registry.store.exists(key):
            raise HTTPException(status_code=404, detail=f"{model} v{version} has no dataset card {ext} in this store")
        return Response(registry.store.read_bytes(key), media_type=DATASET_CARD_TYPES[ext],
                        headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/registry/{model}/{version}/files/{name}")
    def card_file(model: str, version: int, name: str) -> Response:
        if name not in CARD_FILES:
            raise HTTPException(status_code=404, detail=f"{name} is not part of a model card")
        registry = _registry()
        _version(registry, model, version)
        key = f"{registry.card_prefix(model, version)}/{name}"
        if not registry.store.exists(key):
            raise HTTPException(status_code=404, detail=f"{model} v{version} has no {name}")
        return Response(registry.store.read_bytes(key), media_type=CARD_FILES[name],
                        headers={"X-Content-Type-Options": "nosniff"})

    return app

