"""Incremental ingestion (the corpus remembers what was taken in) and dataset publication."""

from __future__ import annotations

import json

import pytest

from streamguard_ml import layout
from streamguard_ml.incremental import ingest_new
from streamguard_ml.ingest import read_samples
from streamguard_ml.publication import NotPublishedError, adopt, latest, publish


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(i: int, label: int | None = None) -> dict:
    return {"id": f"f{i}", "label": i % 2 if label is None else label,
            "code": f"def handler_{i}(x):\n    return x + {i}\n"}


def test_only_new_samples_join_the_corpus_and_retries_repeat_the_same_increment(store, tmp_path):
    feed = tmp_path / "feed.jsonl"
    _write(feed, [_row(i) for i in range(6)])
    first = ingest_new(store, "day1", [f"jsonl:{feed}"])
    assert (first["new"], first["already_ingested"], first["corpus"]) == (6, 0, 6)
    _write(feed, [_row(i) for i in range(9)])
    second = ingest_new(store, "day2", [f"jsonl:{feed}"])
    assert (second["new"], second["already_ingested"], second["corpus"]) == (3, 6, 9)
    retried = ingest_new(store, "day2", [f"jsonl:{feed}"])  # a task retry of day 2
    assert (retried["new"], retried["already_ingested"], retried["corpus"]) == (3, 6, 9)
    samples, _ = read_samples(store, layout.ingested("day2"))
    assert len(samples) == 9  # the run's samples are the whole corpus: what training should see
    runs = read_samples(store, layout.corpus())[1].column("first_run").to_pylist()
    assert runs.count("day1") == 6 and runs.count("day2") == 3


def test_same_code_with_the_other_label_on_a_later_day_is_a_label_conflict(store, tmp_path):
    feed = tmp_path / "feed.jsonl"
    _write(feed, [_row(i) for i in range(6)])
    ingest_new(store, "d1", [f"jsonl:{feed}"])
    flipped = {**_row(2, label=1), "id": "again"}  # f2 was safe; now vulnerable, and a comment differs
    flipped["code"] = flipped["code"].replace("\n", "  # reviewed\n", 1)
    _write(feed, [_row(i) for i in range(6)] + [flipped])
    report = ingest_new(store, "d2", [f"jsonl:{feed}"])
    assert report["quarantine_reasons"] == {"label_conflict": 2} and report["corpus"] == 5
    conflicted = {r["id"] for r in store.read_jsonl(layout.quarantine("d2"))}
    assert conflicted == {"again", "f2"}


def test_publish_latest_and_adopt(store, processed_run):
    source_store, run, _, dataset = processed_run
    with pytest.raises(NotPublishedError, match="run the streamguard_ingestion DAG"):
        latest(store)
    record = publish(source_store, run, dataset)
    assert latest(source_store) == record and record["content_hash"] == dataset["content_hash"]
    assert publish(source_store, run, dataset)["published_at"] == record["published_at"]  # idempotent
    adopted = adopt(source_store, "trainer", record)
    assert adopted["content_hash"] == dataset["content_hash"] and adopted["published_from"] == layout.run_key(run)
    assert adopted["manifest"] == source_store.uri(layout.manifest("trainer"))
    assert source_store.list(layout.processed("trainer")) == [
        k.replace(layout.processed(run), layout.processed("trainer")) for k in source_store.list(layout.processed(run))]
    assert adopt(source_store, "trainer", record) == adopted  # nothing copied twice
