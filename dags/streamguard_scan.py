"""streamguard_scan: daily, resolve the model version once → scan each repository (one mapped task
each) → write its SARIF log, findings and summary to the store → report every repository's outcome
and publish the ``streamguard_scans`` Asset.

A repository is a local folder the worker can read or an ``s3://bucket/key.tar.gz`` tarball
(unpacked safely); with none given, the run scans this project's own code.  One repository
that cannot be scanned fails only its own mapped task: the summary runs once all were
tried, and the run fails after it (``check_scans``).  No registered model version to scan
with fails the run at once, saying to run ``streamguard_training`` first.

Declarative only: Params, wiring and schedule; nothing heavy is imported at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from streamguard_airflow import scan_tasks as s
from streamguard_airflow.params import store_param

REPOSITORIES, MODEL = "Repositories", "Model"

PARAMS = {
    "repositories": Param([], type=["null", "array"], items={"type": "string"}, section=REPOSITORIES,
                          description="Repositories to scan, one mapped task each: local directories, git "
                                      "checkouts or .py files the worker can read, or s3://bucket/key.tar.gz "
                                      "tarballs (e.g. `git archive --format=tar.gz HEAD`). Leave empty to scan "
                                      "this project's own code."),
    "exclude": Param([], type=["null", "array"], items={"type": "string"}, section=REPOSITORIES,
                     description="Paths to skip in every repository, as gitignore-style globs relative to its "
                                 "root (e.g. tests/, **/migrations/*.py); .gitignore files are honoured anyway."),
    "model": Param("taint-flow-gnn", type="string", section=MODEL,
                   description="Registry model to scan with: taint-flow-gnn, sql-intent-transformer or "
                               "taint-fusion-detector (or gnn, transformer, fusion)."),
    "model_version": Param("deployed", type="string", section=MODEL,
                           description="Which version: deployed (the champion), latest, a number or "
                                       "best:<metric>; MODEL:REF names the model too."),
    "threshold": Param(None, type=["null", "number"], minimum=0, maximum=1, section=MODEL,
                       description="Decision threshold on the calibrated score. Leave empty for the version's "
                                   "own operating point (chosen on its validation split)."),
    "store": store_param(),
}


@dag(
    dag_id="streamguard_scan",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["streamguard", "scanning"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def streamguard_scan() -> None:
    model, planned = s.resolve_model(), s.plan_repositories()
    scanned = s.scan_repository.partial(model=model).expand(repository=planned)
    summary = s.summarize()
    [model, planned, scanned] >> summary
    s.check_scans(summary)


streamguard_scan()
