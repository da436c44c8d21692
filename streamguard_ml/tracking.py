"""Experiment tracking: every training run's figures in MLflow, and the same figures read from the store.

With ``mlflow_tracking_uri`` set (the DAG Param, or ``MLFLOW_TRACKING_URI`` for the CLI),
the pipeline's register step logs one MLflow run per (StreamGuard run, model type), in
the experiment named after the registry model (``taint-flow-gnn``, ...):

* params: the hyperparameters of ``training.json`` plus the data content hash, sources,
  code version, training backend and sample counts;
* metrics: the per-epoch history (``loss``, ``val_f1``, ... with ``step=epoch``), the
  kept model's validation figures (``validation_*``) and the final test evaluation
  (``test_*``, ``test_at_0.5_*``, ``test_calibration_*``), flat numbers only;
* artifacts: ``training.json``, the evaluation documents and, once the version is
  registered, its model card (Markdown, JSON and figures) under ``model_card/``;
* tags: ``streamguard.run_key``, ``streamguard.model_type``, ``streamguard.registry_model``,
  ``streamguard.registry_version``, ``streamguard.smoke``.

Logging happens in the Airflow task (or CLI process) that registers the version, never in
a SageMaker training container: the figures are read from the store, so every backend is
tracked the same way.  It is idempotent: a retried or re-run task finds its MLflow run by
the two ``streamguard.*`` tags and logs into it again with the same timestamps, which
MLflow stores once, so there is never a second run or a doubled curve.

The version links to its MLflow run through ``lineage["mlflow"]`` (run id, experiment id,
UI URL): registry entries are write-once, so :func:`track` runs *before* the registration
and :func:`attach_version` (card, version tag) after it.  Tracking never loses a training
run: a server that does not answer, or any MLflow error, is logged as a warning naming the
tracking URI, and the version is registered without the link.

``mlflow`` is imported lazily, only when tracking is on: DAG files import the pipeline and
must stay cheap to parse.  :func:`list_runs`, :func:`run_figures` and :func:`compare_runs`
read the same figures from the store alone (``streamguard-ml runs list|show|compare``).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import layout
from .config import ALL_MODEL_TYPES, REGISTRY_NAMES
from .store import LocalStore, S3Store, Store, StoreError

log = logging.getLogger(__name__)

TAG_RUN_KEY = "streamguard.run_key"
TAG_MODEL_TYPE = "streamguard.model_type"
TAG_REGISTRY_MODEL = "streamguard.registry_model"
TAG_REGISTRY_VERSION = "streamguard.registry_version"
TAG_SMOKE = "streamguard.smoke"
#: Artifact folder of the model card inside the MLflow run.
CARD_ARTIFACTS = "model_card"
#: Artifact folder of the run's own documents (training.json, evaluation).
RUN_ARTIFACTS = "streamguard"
#: Seconds to wait for the tracking server's /health before giving up on tracking this run.
HEALTH_TIMEOUT_S = 10.0
#: MLflow's limits: characters of a param value, entries of one log_batch call.
MAX_PARAM_VALUE, MAX_TAG_VALUE = 6000, 8000
BATCH_METRICS, BATCH_PARAMS = 1000, 100
#: Per-epoch history columns that are not curves (the epoch is the step itself).
NOT_CURVES = ("epoch",)
#: Headline metrics of ``runs list`` (from the final evaluation).
HEADLINE = ("accuracy", "f1", "fpr", "roc_auc", "pairwise_accuracy")

_UNSAFE_METRIC = re.compile(r"[^A-Za-z0-9_\-. /:]+")


class TrackingError(RuntimeError):
    """Tracking could not be done; the message names the tracking URI."""


# -- what a run left in the store ---------------------------------------------------------
def _read(store: Store, key: str) -> Any:
    return store.read_json(key) if store.exists(key) else None


def run_model_types(store: Store) -> dict[str, list[str]]:
    """Every run in the store that trained something, with the model types it trained (run key → types)."""
    found: dict[str, list[str]] = {}
    for key in store.list("runs"):
        parts = key.split("/")
        if len(parts) == 5 and parts[2] == "models" and parts[4] == "training.json":
            found.setdefault(parts[1], []).append(parts[3])
    order = {t: i for i, t in enumerate(ALL_MODEL_TYPES)}
    return {run: sorted(types, key=lambda t: (order.get(t, len(order)), t)) for run, types in sorted(found.items())}


def modified_at(store: Store, key: str) -> str | None:
    """When ``key`` was last written (ISO 8601, UTC), or None where the store cannot tell.

    The run documents carry no timestamp of their own; the time ``training.json`` was
    written is when training finished.
    """
    try:
        if isinstance(store, LocalStore):
            stamp = Path(store.uri(key)).stat().st_mtime
            return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
        if isinstance(store, S3Store):
            head = store.client.head_object(Bucket=store.bucket, Key=store._k(key))
            return head["LastModified"].astimezone(timezone.utc).isoformat(timespec="seconds")
    except (OSError, StoreError, KeyError, AttributeError) as exc:
        log.debug("no modification time for %s: %s", key, exc)
    except Exception as exc:  # botocore's ClientError and friends: a missing time is no reason to fail
        log.debug("no modification time for %s: %s", key, exc)
    return None


def run_figures(store: Store, run: str, model_type: str) -> dict[str, Any]:
    """One (run, model type) as the store holds it: the figures MLflow would show, without MLflow.

    ``params`` are the hyperparameters, ``history`` the per-epoch rows, ``evaluation`` the
    final test metrics (None before evaluation), ``data`` the identity of the data it was
    trained and tested on, ``registered`` the registry version made from it (if any, with
    its MLflow link).  A ValueError names the run when it trained no such model.
    """
    run = layout.run_key(run)
    training = _read(store, layout.training_summary(run, model_type))
    if training is None:
        types = run_model_types(store).get(run)
        raise ValueError(f"run {run!r} has no trained {model_type} model in {store.uri('runs')}: "
                         + (f"it trained {', '.join(types)}" if types else "no such run (see `streamguard-ml runs list`)"))
    evaluation = _read(store, layout.eval_metrics(run, model_type))
    decision = _read(store, layout.decision(run, model_type))
    dataset = training.get("dataset") if isinstance(training.get("dataset"), dict) else {}
    test = (evaluation or {}).get("test_data") if isinstance((evaluation or {}).get("test_data"), dict) else {}
    return {
        "run": run, "model_type": model_type, "model": REGISTRY_NAMES.get(model_type, model_type),
        "created": modified_at(store, layout.training_summary(run, model_type)),
        "params": dict(training.get("hyperparameters") or {}),
        "history": [row for row in training.get("history") or [] if isinstance(row, dict)],
        "validation": training.get("validation") if isinstance(training.get("validation"), dict) else {},
        "evaluation": evaluation,
        "decision": decision,
        "data": {"content_hash": dataset.get("content_hash"), "train_samples": training.get("train_samples"),
                 "val_samples": training.get("val_samples"), "test_samples": test.get("samples"),
                 "test_content_hash": test.get("content_hash"), "test_statement": test.get("statement")},
        "backend": training.get("backend"),
        "registered": _registered(store, run, model_type),
    }


def _registered(store: Store, run: str, model_type: str) -> dict[str, Any] | None:
    """The registry version this run's model became (``{"version", "status", "mlflow"}``), if any."""
    from .registry import Registry

    registry = Registry(store)
    model = REGISTRY_NAMES.get(model_type, model_type)
    if model not in registry.models():
        return None
    for mv in registry.list(model):
        if (mv.lineage or {}).get("run") == run or mv.idempotency_key == f"{run}:{model_type}":
            return {"version": mv.version, "status": mv.status, "mlflow": (mv.lineage or {}).get("mlflow")}
    return None


def _headline(evaluation: dict[str, Any] | None) -> dict[str, float]:
    return {k: v for k in HEADLINE if (v := _number((evaluation or {}).get(k))) is not None}


def list_runs(store: Store) -> list[dict[str, Any]]:
    """Every trained (run, model type) in the store, newest first: created time, epochs, headline test metrics."""
    rows = []
    for run, types in run_model_types(store).items():
        for model_type in types:
            figures = run_figures(store, run, model_type)
            rows.append({"run": run, "model_type": model_type, "created": figures["created"],
                         "epochs": len(figures["history"]), "evaluated": figures["evaluation"] is not None,
                         "metrics": _headline(figures["evaluation"]),
                         "version": (figures["registered"] or {}).get("version")})
    return sorted(rows, key=lambda r: (r["created"] or "", r["run"], r["model_type"]), reverse=True)


def compare_runs(store: Store, a: str, b: str, model_type: str | None = None) -> dict[str, Any]:
    """Two runs of one model type side by side: params that differ, metric deltas, and whether the deltas
    mean anything (were both evaluated on the same data).

    Without ``model_type`` the one model type both runs trained is taken (a ValueError when
    there is none, or several: then it must be named).
    """
    a, b = layout.run_key(a), layout.run_key(b)
    trained = run_model_types(store)
    for run in (a, b):
        if run not in trained:
            raise ValueError(f"no run {run!r} in {store.uri('runs')} (see `streamguard-ml runs list`)")
    if model_type is None:
        common = [t for t in trained[a] if t in trained[b]]
        if len(common) != 1:
            raise ValueError(f"runs {a} and {b} trained {'/'.join(common) or 'no common model type'}: "
                             "name one with --model-type")
        model_type = common[0]
    fa, fb = run_figures(store, a, model_type), run_figures(store, b, model_type)
    names = sorted(set(fa["params"]) | set(fb["params"]))
    params = {k: {"a": fa["params"].get(k), "b": fb["params"].get(k)} for k in names
              if fa["params"].get(k) != fb["params"].get(k)}
    ma, mb = flat_metrics(fa["evaluation"] or {}), flat_metrics(fb["evaluation"] or {})
    metrics = {k: {"a": ma.get(k), "b": mb.get(k),
                   "delta": mb[k] - ma[k] if k in ma and k in mb else None}
               for k in sorted(set(ma) | set(mb))}
    return {"model_type": model_type, "a": a, "b": b, "params": params, "metrics": metrics,
            "epochs": {"a": len(fa["history"]), "b": len(fb["history"])},
            "final_epoch": {"a": fa["history"][-1] if fa["history"] else None,
                            "b": fb["history"][-1] if fb["history"] else None},
            **same_data(fa["data"], fb["data"], fa["evaluation"] is not None and fb["evaluation"] is not None)}


def same_data(da: dict[str, Any], db: dict[str, Any], both_evaluated: bool = True) -> dict[str, Any]:
    """``{"same_test_data": True/False/None, "data_basis": why}``: are two runs' test figures comparable?

    The test split's own content hash decides when both evaluations recorded one; else the
    dataset's content hash (the same dataset, split by the same settings, gives the same test
    split; different data never does); None when neither tells.
    """
    if not both_evaluated:
        return {"same_test_data": None, "data_basis": "not both runs were evaluated"}
    if da.get("test_content_hash") and db.get("test_content_hash"):
        same = da["test_content_hash"] == db["test_content_hash"]
        return {"same_test_data": same, "data_basis": "content hash of the test split"
                + ("" if same else ": different test functions, so the metric deltas do not say which is better")}
    if da.get("content_hash") and db.get("content_hash"):
        if da["content_hash"] != db["content_hash"]:
            return {"same_test_data": False, "data_basis": "content hash of the dataset: trained and tested on "
                    "different data, so the metric deltas do not say which is better"}
        return {"same_test_data": True, "data_basis": "content hash of the dataset (the same dataset; the test "
                "split also depends on the split settings, which the runs do not record)"}
    return {"same_test_data": None, "data_basis": "neither run recorded what its test data was"}


# -- MLflow ---------------------------------------------------------------------------------
def enabled(cfg: Any) -> bool:
    return bool(getattr(cfg, "mlflow_tracking_uri", None))


def redact(uri: str) -> str:
    """``uri`` without a user name or password (``https://u:p@host`` → ``https://host``): it goes into logs and
    registry lineage, which more people read than may use the server's credentials."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def metric_name(name: str) -> str:
    """A name MLflow accepts (letters, digits, ``_ - . / :`` and space), anything else as ``_``."""
    return _UNSAFE_METRIC.sub("_", str(name)).strip() or "_"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The flat numeric figures of an evaluation document (and of its ``at_0.5`` and ``calibration`` parts),
    names sanitised for MLflow; nested per-CWE tables, provenance and the operating point stay artifacts."""
    out: dict[str, float] = {}
    for key, value in sorted((metrics or {}).items()):
        number = _number(value)
        if number is not None:
            out[metric_name(f"{prefix}{key}")] = number
        elif key in ("at_0.5", "calibration") and isinstance(value, dict):
            out.update(flat_metrics({k: v for k, v in value.items() if not isinstance(v, dict)}, f"{prefix}{key}_"))
    return out


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value) if not isinstance(value, (list, tuple)) else \
        ",".join(map(str, value))
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def run_params(training: dict[str, Any], lineage: dict[str, Any]) -> dict[str, str]:
    """What defines the run: hyperparameters plus the data, code and backend it was trained with."""
    dataset = training.get("dataset") if isinstance(training.get("dataset"), dict) else {}
    parent = lineage.get("fine_tuned_from")
    extra = {"data_content_hash": lineage.get("data_content_hash") or dataset.get("content_hash"),
             "sources": lineage.get("sources"), "code_version": lineage.get("code_version"),
             "training_backend": lineage.get("training_backend") or training.get("backend"),
             "base_model": lineage.get("base_model"), "smoke": lineage.get("smoke"),
             "fine_tuned_from_version": parent.get("version") if isinstance(parent, dict) else None,
             "train_samples": training.get("train_samples"), "val_samples": training.get("val_samples")}
    params = {**dict(training.get("hyperparameters") or {}), **{k: v for k, v in extra.items() if v is not None}}
    return {metric_name(k): _param_value(v) for k, v in sorted(params.items())}


#: Comma-separated tracking URIs a run may log to (a run's URI must equal one or lie under it).  Unset: any.
#: Whoever triggers a DAG names the server, and the run's documents and model card are uploaded there.
ALLOWED_TRACKING_URIS_ENV = "STREAMGUARD_ALLOWED_TRACKING_URIS"


def check_allowed(uri: str) -> None:
    """A TrackingError unless the deployment allows runs to log to ``uri`` (see :data:`ALLOWED_TRACKING_URIS_ENV`)."""
    from .config import deployment_roots

    allowed = deployment_roots(ALLOWED_TRACKING_URIS_ENV)
    if allowed and not any(uri.rstrip("/") == r.rstrip("/") or uri.startswith(r.rstrip("/") + "/") for r in allowed):
        raise TrackingError(f"tracking URI {redact(uri)} is not one this deployment allows "
                            f"({ALLOWED_TRACKING_URIS_ENV}={','.join(map(redact, allowed))})")


def _check_server(uri: str) -> None:
    """A TrackingError unless an HTTP tracking server answers ``/health`` (any HTTP reply counts: a proxy
    asking for credentials is a server).  MLflow's own client would retry for minutes first."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(f"no MLflow tracking server answers at {redact(uri)}: "
                            f"{getattr(exc, 'reason', exc)}") from None


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"mlflow_tracking_uri is {redact(uri)} but mlflow is not installed: "
                            "pip install 'streamguard-ml[mlflow]'") from None
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created on first use (by whichever task gets there first)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={"streamguard.registry_model": name})
    except Exception:  # created concurrently: RESOURCE_ALREADY_EXISTS
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def find_run(client: Any, experiment_id: str, run: str, model_type: str) -> Any | None:
    """The MLflow run an earlier attempt made for (run, model type), oldest first, or None."""
    query = f"tags.`{TAG_RUN_KEY}` = '{run}' and tags.`{TAG_MODEL_TYPE}` = '{model_type}'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1,
                               order_by=["attributes.start_time ASC"])
    return found[0] if found else None


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI (None for a tracking URI with no UI of its own: a file or database)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{redact(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _batches(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def track(store: Store, run: str, model_type: str, cfg: Any, lineage: dict[str, Any] | None = None,
          evaluation: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Log (run, model type) to MLflow before it is registered; returns the link for ``lineage["mlflow"]``.

    ``evaluation`` is :func:`streamguard_ml.pipeline.evaluate_step`'s result (its ``metrics`` are
    what the version registers; without it the store's ``challenger-metrics.json``).  Returns
    ``{"run_id", "experiment_id", "url", "tracking_uri"}``, or None when tracking is off
    (no ``cfg.mlflow_tracking_uri``) or failed: a failure is a warning, never the end of a
    training run whose model is already in the store.
    """
    uri = getattr(cfg, "mlflow_tracking_uri", None)
    if not uri:
        return None
    try:
        return _track(uri, store, layout.run_key(run), model_type, lineage or {}, evaluation)
    except Exception as exc:
        log.warning("MLflow tracking at %s failed for run %s %s; it is registered without an MLflow link: %s",
                    redact(uri), layout.run_key(run), model_type, _one_line(exc))
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def _track(uri: str, store: Store, run: str, model_type: str, lineage: dict[str, Any],
           evaluation: dict[str, Any] | None) -> dict[str, Any]:
    from mlflow.entities import Metric, Param, RunTag

    check_allowed(uri)
    _check_server(uri)
    client = _client(uri)
    model = REGISTRY_NAMES.get(model_type, model_type)
    experiment_id = _experiment_id(client, model)
    training = store.read_json(layout.training_summary(run, model_type))
    # evaluate_step's result carries the metrics that are registered; else what evaluation wrote to the store
    final = (evaluation or {}).get("metrics") or _read(store, layout.eval_metrics(run, model_type)) or {}
    tags = {TAG_RUN_KEY: run, TAG_MODEL_TYPE: model_type, TAG_REGISTRY_MODEL: model,
            TAG_SMOKE: str(bool(lineage.get("smoke"))).lower(), "streamguard.store": store.root[:MAX_TAG_VALUE]}
    existing = find_run(client, experiment_id, run, model_type)
    if existing is None:
        mlrun = client.create_run(experiment_id, tags=tags, run_name=f"{run}/{model_type}")
        log.info("MLflow run %s for %s %s (experiment %s)", mlrun.info.run_id, run, model_type, model)
    else:
        mlrun = existing
        log.info("MLflow run %s for %s %s exists: logging into it again", mlrun.info.run_id, run, model_type)
    run_id, t0 = mlrun.info.run_id, int(mlrun.info.start_time)
    # Fixed timestamps (the run's start + step): a retry logs byte-identical points, which MLflow keeps once.
    metrics = [Metric(metric_name(k), float(v), t0 + int(row["epoch"]), int(row["epoch"]))
               for row in training.get("history") or [] if isinstance(row.get("epoch"), int)
               for k, v in sorted(row.items()) if k not in NOT_CURVES and _number(v) is not None]
    finals = {**flat_metrics(training.get("validation") or {}, "validation_"),
              **flat_metrics(final, "test_")}
    metrics += [Metric(k, v, t0, 0) for k, v in sorted(finals.items())]
    params = [Param(k, v) for k, v in run_params(training, lineage).items()]
    for chunk in _batches(params, BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in _batches(metrics, BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    with tempfile.TemporaryDirectory(prefix="sg-mlflow-") as tmp:
        for key in (layout.training_summary(run, model_type), layout.eval_metrics(run, model_type), layout.decision(run, model_type)):
            if store.exists(key):
                path = store.download_file(key, Path(tmp) / Path(key).name)
                client.log_artifact(run_id, str(path), RUN_ARTIFACTS)
    return {"run_id": run_id, "experiment_id": experiment_id, "url": run_url(uri, experiment_id, run_id),
            "tracking_uri": redact(uri)}


def attach_version(store: Store, cfg: Any, link: dict[str, Any] | None, model: str, version: int,
                   card_prefix: str) -> bool:
    """After registration: the model card (every file under ``card_prefix``) as artifacts, the registry version
    as tags, and the MLflow run marked finished.  True when done; False when tracking is off or failed
    (a warning, like :func:`track`)."""
    uri = getattr(cfg, "mlflow_tracking_uri", None)
    if not uri or not link:
        return False
    try:
        from mlflow.entities import RunTag

        client = _client(uri)
        run_id = link["run_id"]
        with tempfile.TemporaryDirectory(prefix="sg-mlflow-card-") as tmp:
            keys = store.list(card_prefix)
            for key in keys:
                store.download_file(key, Path(tmp) / key[len(card_prefix) + 1:])
            if keys:
                client.log_artifacts(run_id, tmp, CARD_ARTIFACTS)
        note = (f"StreamGuard registry: {model} v{version}. Model card: artifacts {CARD_ARTIFACTS}/model_card.md "
                f"(store: {store.uri(card_prefix)}).")
        client.log_batch(run_id, tags=[RunTag(TAG_REGISTRY_MODEL, model), RunTag(TAG_REGISTRY_VERSION, str(version)),
                                       RunTag("mlflow.note.content", note[:MAX_TAG_VALUE])])
        client.set_terminated(run_id, "FINISHED")
        return True
    except Exception as exc:
        log.warning("MLflow tracking at %s: the model card of %s v%d was not logged to MLflow run %s: %s",
                    redact(uri), model, version, link.get("run_id"), _one_line(exc))
        return False
