"""Tasks of ``streamguard_scan``: resolve the model once, scan each repository (one mapped task each), report.

Each task calls the library (:mod:`streamguard_ml.scan`, :mod:`streamguard_ml.repositories`)
and passes only URIs and small dicts through XCom.  Keys come from the run id and the
repository's name (:func:`streamguard_ml.repositories.repository_name`: its name and a hash
of its URI), so a retry of a run overwrites its own scan and two repositories with the same
folder name never share a key.

A repository that cannot be scanned fails its own mapped task and records why in the
store (``error.json`` in its scan folder); the others still run.  ``summarize`` runs once
they all finished (``all_done``), writes the run's summary, publishes :data:`SCANS` with
the per-repository outcome, and ``check_scans`` then fails the run if any repository failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from . import runtime

#: The scans of ``streamguard_scan`` (a logical name: the SARIF logs and findings live in the store).
SCANS = Asset(name="streamguard_scans", uri="streamguard://scans")
SCAN_TASK = "scan_repository"
ERROR_FILE = "error.json"


def _store_and_run() -> tuple[Any, str]:
    context = get_current_context()
    runtime._route_logs()
    return runtime.store(context), runtime.run_id(context)


def _params() -> dict[str, Any]:
    return dict(get_current_context().get("params") or {})


def run_summary_key(run: str) -> str:
    from streamguard_ml import layout

    return f"{layout.scans()}/{layout.run_key(run)}/run-summary.json"


@task
def resolve_model() -> dict[str, Any]:
    """The model version every repository is scanned with, resolved once: model, version, artifact URI."""
    from streamguard_ml.config import REGISTRY_NAMES
    from streamguard_ml.registry import Registry, RegistryError

    params = _params()
    store, _ = _store_and_run()
    model, ref = str(params.get("model") or "taint-flow-gnn"), str(params.get("model_version") or "deployed")
    if ":" in ref and not ref.startswith("best:"):
        model, ref = ref.split(":", 1)
    registry = Registry(store)
    where = registry.store.uri(registry.prefix)
    name, models = REGISTRY_NAMES.get(model, model), registry.models()
    train_first = ("run the streamguard_training DAG first (or register and promote a version with "
                   "`streamguard-ml registry register` and `registry promote`)")
    if not models:
        raise AirflowFailException(f"no model to scan with: the registry at {where} holds no models yet; "
                                   f"{train_first}")
    if name not in models:
        raise AirflowFailException(f"no model {model!r} in the registry at {where}: registered models: "
                                   f"{', '.join(models)}; set the model Param to one of them")
    try:
        mv = registry.resolve(name, ref)
    except RegistryError as exc:
        raise AirflowFailException(f"no version {ref!r} of {name} to scan with in the registry at {where}: "
                                   f"{exc}; {train_first}, or set model_version (latest, a number)") from None
    resolved = {"model": mv.model, "version": mv.version, "artifact_uri": mv.artifact_uri,
                "threshold": mv.threshold}
    print(f"scanning with {mv.model} v{mv.version} ({mv.artifact_uri})", flush=True)
    return resolved


@task
def plan_repositories() -> list[dict[str, str]]:
    """One entry per repository (``uri`` and its store-safe ``name``): the list drives the mapped scans."""
    from streamguard_ml.repositories import default_repository, repository_name

    repositories = [str(r).strip() for r in _params().get("repositories") or [] if str(r).strip()]
    if not repositories:
        repositories = [str(default_repository())]
        print(f"no repositories given: scanning this project's own code at {repositories[0]}", flush=True)
    planned: dict[str, str] = {}
    for uri in repositories:  # one task per repository: "app" and "app/" are the same one
        planned.setdefault(repository_name(uri), uri)
    return [{"uri": uri, "name": name} for name, uri in planned.items()]


def scan_options(params: dict[str, Any]) -> Any:
    from streamguard_ml.scan import ScanOptions

    threshold = params.get("threshold")
    if threshold is not None and not 0 <= float(threshold) <= 1:
        raise AirflowFailException(f"threshold={threshold}: give a probability between 0 and 1 (or leave it "
                                   "empty for the version's own threshold)")
    return ScanOptions(excludes=tuple(str(g) for g in params.get("exclude") or []),
                       threshold=None if threshold is None else float(threshold))


@task(map_index_template="{{ repository_label }}")
def scan_repository(repository: dict[str, str], model: dict[str, Any]) -> dict[str, Any]:
    """Fetch one repository, scan it and write its SARIF log, findings and summary to the store."""
    from streamguard_ml import layout

    context = get_current_context()
    context["repository_label"] = repository["name"]  # type: ignore[typeddict-unknown-key]
    store, run = _store_and_run()
    prefix = layout.scan_dir(run, repository["name"])
    try:
        written = _scan(store, prefix, repository, model, scan_options(_params()))
    except BaseException as exc:
        error = {"repository": repository["uri"], "name": repository["name"], "error": f"{type(exc).__name__}: "
                 f"{exc}", "try_number": getattr(context.get("ti"), "try_number", None)}
        try:
            store.write_json(f"{prefix}/{ERROR_FILE}", error)
        except Exception:  # the store itself failing must not hide the scan's own error
            pass
        raise
    if store.exists(f"{prefix}/{ERROR_FILE}"):
        store.delete(f"{prefix}/{ERROR_FILE}")  # an earlier try of this run failed; this one did not
    return written


def _scan(store: Any, prefix: str, repository: dict[str, str], model: dict[str, Any], options: Any) -> dict[str, Any]:
    from streamguard_ml.cli import package_version
    from streamguard_ml.inference import LoadedModel
    from streamguard_ml.repositories import RepositoryError, fetch
    from streamguard_ml.scan import ScanError, save, scan, source_files

    with tempfile.TemporaryDirectory(prefix="sg-scan-") as tmp:
        try:
            root = fetch(repository["uri"], Path(tmp) / "repository")
            files = source_files(root, options.excludes)
            if not files:
                raise ScanError(f"{repository['uri']} holds no .py files outside ignored and excluded folders")
        except (RepositoryError, ScanError) as exc:
            raise AirflowFailException(str(exc)) from None
        loaded = LoadedModel.from_uri(model["artifact_uri"], Path(tmp) / "model")
        result = scan(root, loaded, model["model"], int(model["version"]), options, files=files)
    uris = save(store, prefix, result, package_version())
    print(f"{repository['uri']}: {result.summary_line()} -> {uris['sarif']}", flush=True)
    summary = result.summary()
    return {"repository": repository["uri"], "name": repository["name"], **uris,
            "files": summary["files"], "functions": summary["functions"], "findings": summary["findings"],
            "not_scanned": summary["not_scanned"], "threshold": summary["threshold"]}


@task(trigger_rule="all_done", outlets=[SCANS])
def summarize() -> dict[str, Any]:
    """Once every repository was tried: each one's outcome, written to the store and published as :data:`SCANS`."""
    context = get_current_context()
    ti = context["ti"]
    store, run = _store_and_run()
    model = ti.xcom_pull(task_ids="resolve_model")
    planned = ti.xcom_pull(task_ids="plan_repositories")
    if model is None or planned is None:
        failed = "resolve_model" if model is None else "plan_repositories"
        raise AirflowFailException(f"nothing was scanned: {failed} failed (its log says why)")
    from streamguard_ml import layout

    outcomes = []
    for index, repository in enumerate(planned):
        done = ti.xcom_pull(task_ids=SCAN_TASK, map_indexes=index)
        if done:
            outcomes.append({"status": "success", **done})
            continue
        key = f"{layout.scan_dir(run, repository['name'])}/{ERROR_FILE}"
        error = store.read_json(key).get("error") if store.exists(key) else "the task did not finish (see its log)"
        outcomes.append({"status": "failed", "repository": repository["uri"], "name": repository["name"],
                         "error": error})
    doc = {"run": run, "store": store.root, "model": model["model"], "version": model["version"],
           "repositories": outcomes,
           "succeeded": sum(o["status"] == "success" for o in outcomes),
           "failed": sum(o["status"] == "failed" for o in outcomes),
           "findings": sum(o.get("findings", 0) for o in outcomes)}
    doc["summary"] = store.uri(run_summary_key(run))
    store.write_json(run_summary_key(run), doc)
    for o in outcomes:
        line = (f"{o['findings']} findings, {o['sarif']}" if o["status"] == "success" else o["error"])
        print(f"{o['status']:>7}  {o['repository']}: {line}", flush=True)
    context["outlet_events"][SCANS].extra = {
        "run": run, "store": store.root, "summary": doc["summary"], "model": model["model"],
        "version": model["version"], "succeeded": doc["succeeded"], "failed": doc["failed"],
        "sarif": {o["name"]: o["sarif"] for o in outcomes if o["status"] == "success"}}
    return {k: doc[k] for k in ("summary", "succeeded", "failed", "findings")}


@task
def check_scans(summary: dict[str, Any]) -> None:
    """Fail the run, after every repository was tried and reported, if any of them failed."""
    if summary["failed"]:
        raise AirflowFailException(f"{summary['failed']} of {summary['failed'] + summary['succeeded']} "
                                   f"repositories could not be scanned; see {summary['summary']}")
