"""Params the three DAGs share, written once.

An optional Param is nullable (``type=["null", ...]``): Airflow's trigger form marks
every other field required, and an empty required string keeps its Trigger button
disabled — the ``store`` Param did exactly that with its ``""`` default.
"""

from __future__ import annotations

from airflow.sdk import Param

RUN = "Run"


def store_param() -> Param:
    """Where this run's artifacts go; empty: the deployment's store (``STREAMGUARD_ALLOWED_STORES`` bounds it)."""
    return Param(None, type=["null", "string"], section=RUN,
                 description="Artifact store for this run: a directory or s3://bucket/prefix. Leave empty for the "
                             "deployment's store (STREAMGUARD_STORE); the deployment may restrict which stores a "
                             "run can name (STREAMGUARD_ALLOWED_STORES).")


def smoke_param(what: str) -> Param:
    return Param(False, type="boolean", section=RUN, description=f"Shrink {what} for a quick end-to-end check.")


def mlflow_tracking_uri_param() -> Param:
    """The MLflow server a training run logs to; empty: the deployment's ``MLFLOW_TRACKING_URI``, else none."""
    return Param(None, type=["null", "string"], section=RUN,
                 description="MLflow tracking server (http://host:5000) to log params, per-epoch metrics, the "
                             "evaluation and the model card to. Leave empty for the deployment's "
                             "MLFLOW_TRACKING_URI (no tracking when that is unset too); the deployment may restrict "
                             "which servers a run can name (STREAMGUARD_ALLOWED_TRACKING_URIS).")
