"""Tasks around the published dataset: daily incremental ingestion, the Asset, training on it.

``streamguard_ingestion`` ingests what is new, preprocesses (reusing the
training DAG's mapped shard tasks) and publishes the processed dataset as the
:data:`PROCESSED_DATASET` Asset.  ``streamguard_training`` is scheduled on that
Asset; its ``dataset`` Param decides whether a run ingests its own ``sources`` or
adopts the published dataset (``auto``: adopt when the run was started by the
Asset, ingest when started by hand or by the retraining monitor).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, get_current_context, task

from . import runtime
from .training_tasks import _ctx

#: The processed dataset the daily ingestion publishes (a logical name: the data lives in the store).
PROCESSED_DATASET = Asset(name="streamguard_processed_dataset", uri="streamguard://datasets/processed")


@task
def ingest_new_samples() -> dict[str, Any]:
    """Read the configured sources; only samples the corpus does not hold yet are new."""
    from streamguard_ml.pipeline import ingest_new_step

    cfg, store, run = _ctx()
    return ingest_new_step(store, run, cfg)


@task.short_circuit
def has_new_samples(ingested: dict[str, Any]) -> bool:
    """Nothing new since the last publication: skip preprocessing and publish nothing."""
    print(f"{ingested['new']} new samples, {ingested['already_ingested']} already ingested, "
          f"corpus {ingested['corpus']}", flush=True)
    return ingested["new"] > 0


@task(outlets=[PROCESSED_DATASET])
def publish_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """Point ``datasets/latest.json`` at this run's dataset and emit an Asset event carrying it."""
    from streamguard_ml.pipeline import publish_step

    context = get_current_context()
    _, store, run = _ctx()
    record = publish_step(store, run, dataset)
    context["outlet_events"][PROCESSED_DATASET].extra = {**record, "store": store.root}
    return record


@task.branch
def choose_dataset() -> str:
    """``ingest`` (read this run's sources) or ``use_published_dataset``."""
    mode = runtime.dataset_mode(get_current_context())
    return "use_published_dataset" if mode == "published" else "ingest"


@task
def use_published_dataset() -> dict[str, Any]:
    """Adopt the published dataset that triggered this run (else the latest) instead of re-ingesting."""
    from streamguard_ml.pipeline import adopt_step

    context = get_current_context()
    _, store, run = _ctx()
    return adopt_step(store, run, runtime.triggering_publication(context))


@task(trigger_rule="none_failed_min_one_success")
def training_dataset() -> dict[str, Any]:
    """The dataset this run trains on: the output of the branch ``choose_dataset`` took.

    The same decision picks which XCom to read: the skipped branch has none, and
    asking for it makes Airflow log an alarming "XCom not found" error in every run.
    """
    context = get_current_context()
    published = runtime.dataset_mode(context) == "published"
    dataset = context["ti"].xcom_pull(task_ids="use_published_dataset" if published else "finalize_dataset")
    if dataset is None:
        raise RuntimeError("neither ingestion nor the published dataset produced data for this run")
    return dataset
