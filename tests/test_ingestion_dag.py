"""Daily incremental ingestion publishes an Asset; training is scheduled on it and can adopt it.

The DAGs run for real (``dag.test()`` against the session's SQLite Airflow) on tiny data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamguard_ml import layout
from streamguard_ml.store import LocalStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_ingestion_dag_is_daily_without_catchup_and_publishes_the_asset(dags):
    from streamguard_airflow.dataset_tasks import PROCESSED_DATASET

    dag = dags["streamguard_ingestion"]
    assert dag.catchup is False and type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.schedule == "@daily" and dag.timetable.expression == "0 0 * * *"
    assert dag.get_task("publish_dataset").outlets == [PROCESSED_DATASET]
    assert dag.get_task("plan_shards").upstream_task_ids == {"ingest_new_samples", "has_new_samples"}
    assert dag.get_task("finalize_dataset").upstream_task_ids == {"preprocess_shard"}
    training = dags["streamguard_training"]
    assert type(training.timetable).__name__ == "AssetTriggeredTimetable"
    assert training.timetable.asset_condition == PROCESSED_DATASET
    assert training.get_task("choose_dataset").downstream_task_ids == {"ingest", "use_published_dataset"}
    assert training.get_task("training_dataset").upstream_task_ids == {"finalize_dataset", "use_published_dataset"}
    assert training.params["dataset"] == "auto"


def test_dataset_mode_follows_how_the_run_started():
    from streamguard_airflow.runtime import dataset_mode, triggering_publication

    def ctx(run_type: str, **params):
        return {"params": params, "dag_run": SimpleNamespace(run_type=run_type)}

    assert dataset_mode(ctx("manual")) == "ingest"
    assert dataset_mode(ctx("asset_triggered")) == "published"
    assert dataset_mode(ctx("asset_triggered", dataset="ingest")) == "ingest"
    assert dataset_mode(ctx("manual", dataset="published")) == "published"
    with pytest.raises(ValueError, match="use one of"):
        dataset_mode(ctx("manual", dataset="yesterday"))
    event = SimpleNamespace(extra={"run": "r1", "content_hash": "abc"})
    assert triggering_publication({"triggering_asset_events": {"asset": [event]}}) == event.extra
    assert triggering_publication({}) is None


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state).split(".")[-1].lower() for ti in run.get_task_instances()}


def _asset_events() -> list[dict]:
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel

    with settings.Session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == "streamguard_processed_dataset").order_by(AssetEvent.id).all())
        return [dict(r.extra) for r in rows]


def _feed(path: Path, start: int, count: int) -> None:
    with path.open("a") as fh:
        for i in range(start, start + count):
            fh.write(json.dumps({"id": f"feed-{i}", "label": i % 2,
                                 "code": f"def handler_{i}(x):\n    return x * {i}\n"}) + "\n")


@pytest.mark.slow
def test_daily_ingestion_is_incremental_and_training_adopts_the_publication(airflow_db, dags, tiny_base_model,
                                                                            tmp_path, caplog):
    store_root, feed = tmp_path / "store", tmp_path / "feed.jsonl"
    _feed(feed, 0, 6)
    conf = {"sources": ["synthetic:100"], "jsonl_sources": [str(feed)], "base_model": tiny_base_model,
            "store": str(store_root), "shard_size": 40}
    store = LocalStore(store_root)
    dag = dags["streamguard_ingestion"]
    events_before = len(_asset_events())

    with caplog.at_level(logging.INFO, logger="streamguard_ml"):
        first = dag.test(run_conf=conf)
    assert str(first.state).endswith("success"), _states(first)
    shard_lines = [r.getMessage() for r in caplog.records if r.name == "streamguard_ml.preprocess"]
    assert any(m.startswith("shard train-00000: processing") for m in shard_lines), shard_lines
    assert any(m.startswith("shard test-00000: ") and "nodes" in m for m in shard_lines), shard_lines
    published = store.read_json(layout.latest_dataset())
    assert published["run"] == layout.run_key(first.run_id)
    assert store.read_json(layout.ingest_report(first.run_id))["new"] == 106

    second = dag.test(run_conf=conf)  # nothing new: ingestion stops, nothing is published
    states = _states(second)
    assert states["has_new_samples"] == "success" and states["publish_dataset"] == "skipped", states
    assert store.read_json(layout.ingest_report(second.run_id))["already_ingested"] == 106
    assert store.read_json(layout.latest_dataset()) == published

    _feed(feed, 6, 4)
    third = dag.test(run_conf=conf)
    assert str(third.state).endswith("success"), _states(third)
    report = store.read_json(layout.ingest_report(third.run_id))
    assert (report["new"], report["already_ingested"], report["corpus"]) == (4, 106, 110)
    latest = store.read_json(layout.latest_dataset())
    assert latest["run"] == layout.run_key(third.run_id) and latest["content_hash"] != published["content_hash"]
    events = _asset_events()[events_before:]
    assert [e["run"] for e in events] == [published["run"], latest["run"]]
    assert events[-1]["content_hash"] == latest["content_hash"]

    # training, told to use the published dataset: adopts it instead of ingesting (training itself is
    # covered by test_dag_e2e, so only the data tasks run here)
    training = dags["streamguard_training"].partial_subset(task_ids=["training_dataset"], include_upstream=True)
    run = training.test(run_conf={"dataset": "published", "store": str(store_root),
                                  "base_model": tiny_base_model})
    states = _states(run)
    assert states["use_published_dataset"] == "success" and states["ingest"] == "skipped", states
    assert states["training_dataset"] == "success"
    card = store.read_json(layout.dataset_card(run.run_id, "json"))
    assert card["content_hash"] == latest["content_hash"]
    assert not store.exists(layout.ingested(run.run_id))
