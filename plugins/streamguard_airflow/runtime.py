"""Per-task context: the run's configuration, its store and its run key.

The configuration of a DAG run is its Params (which ``dag_run.conf`` overrides)
mapped onto :class:`streamguard_ml.config.PipelineConfig`, with ``smoke``
applied; the store is the ``store`` Param (if ``STREAMGUARD_ALLOWED_STORES`` allows
it), else ``STREAMGUARD_STORE``, else the Airflow Variable ``streamguard_store``,
else the embedded default.
"""

from __future__ import annotations

import logging
import os
from typing import Any


def _params(context: dict[str, Any]) -> dict[str, Any]:
    params = dict(context.get("params") or {})
    sources = list(params.get("sources") or [])
    sources += [f"jsonl:{p}" for p in params.get("jsonl_sources") or []]
    sources += [f"feedback:{uri}" for uri in params.get("feedback") or []]  # analyst verdicts → labels
    params["sources"] = sources
    return params


def config(context: dict[str, Any]) -> Any:
    from streamguard_ml.config import PipelineConfig

    _route_logs()
    return PipelineConfig.from_mapping(_params(context)).effective()


def store(context: dict[str, Any]) -> Any:
    """The run's store; a ``store`` Param must be one the deployment allows (``STREAMGUARD_ALLOWED_STORES``)."""
    from streamguard_ml.config import check_store_allowed
    from streamguard_ml.store import open_store

    named = (context.get("params") or {}).get("store")
    root = check_store_allowed(named) if named else os.environ.get("STREAMGUARD_STORE")
    if not root:
        from airflow.sdk import Variable

        root = Variable.get("streamguard_store", default=None)
    return open_store(root or None)


def run_id(context: dict[str, Any]) -> str:
    """The DAG run id (a store-safe run key is derived from it by the library)."""
    return context["dag_run"].run_id


def _route_logs() -> None:
    """Library progress lines at INFO end up in the task log."""
    logging.getLogger("streamguard_ml").setLevel(logging.INFO)


DATASET_MODES = ("auto", "ingest", "published")


def dataset_mode(context: dict[str, Any]) -> str:
    """``ingest`` or ``published``: the ``dataset`` Param, where ``auto`` follows how the run started —
    a run started by the published-dataset Asset trains on it, any other run ingests its sources."""
    choice = (context.get("params") or {}).get("dataset") or "auto"
    if choice not in DATASET_MODES:
        raise ValueError(f"dataset={choice!r}: use one of {DATASET_MODES}")
    if choice != "auto":
        return choice
    run_type = getattr(context.get("dag_run"), "run_type", "")
    return "published" if getattr(run_type, "value", run_type) == "asset_triggered" else "ingest"


def triggering_publication(context: dict[str, Any]) -> dict[str, Any] | None:
    """The publication record carried by the newest Asset event that started this run, if any."""
    events = context.get("triggering_asset_events") or {}
    for asset in events:
        for event in reversed(list(events[asset])):
            if (event.extra or {}).get("content_hash"):
                return dict(event.extra)
    return None
