"""Published datasets: what the daily ingestion hands to training.

Publishing a run's processed dataset writes a small record (run, URIs, splits,
content hash) to ``datasets/published/<run>.json`` and points
``datasets/latest.json`` at it; the Airflow layer announces the same record as
an Asset event.  A training run *adopts* a published dataset by copying its
``processed/`` tree into its own run (server-side on S3), so training,
evaluation and lineage work exactly as if the run had preprocessed the data
itself — without ingesting or preprocessing again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import layout
from .store import Store

#: What a publication record and an Asset event carry (small: it travels through XCom).
RECORD_KEYS = ("run", "content_hash", "splits", "manifest", "dataset_card", "processed_uri")


class NotPublishedError(LookupError):
    """No dataset has been published in this store yet."""


def publish(store: Store, run: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """Make ``run``'s processed dataset the latest published one; idempotent for the same content."""
    record = {k: dataset[k] for k in RECORD_KEYS if k in dataset}
    record["run"] = layout.run_key(run)
    key = layout.publication(run)
    previous = store.read_json(key) if store.exists(key) else {}
    same = previous.get("content_hash") == record.get("content_hash")
    record["published_at"] = previous["published_at"] if same and previous.get("published_at") else (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    store.write_json(key, record)
    store.write_json(layout.latest_dataset(), record)
    return record


def latest(store: Store) -> dict[str, Any]:
    """The record of the dataset published last."""
    if not store.exists(layout.latest_dataset()):
        raise NotPublishedError(f"no dataset has been published in {store.root} yet: run the "
                                "streamguard_ingestion DAG first, or train with dataset='ingest'")
    return store.read_json(layout.latest_dataset())


def adopt(store: Store, run: str, record: dict[str, Any]) -> dict[str, Any]:
    """Copy a published dataset into ``run``; returns the same document ``finalize`` would have.

    Idempotent: a run that already holds this content is not copied again.
    """
    source, target = record["run"], layout.run_key(run)
    card_key = layout.dataset_card(run, "json")
    if source != target:
        held = store.read_json(card_key).get("content_hash") if store.exists(card_key) else None
        if held != record["content_hash"]:
            store.delete(layout.processed(run))
            store.copy_prefix(layout.processed(source), layout.processed(run))
    card = store.read_json(card_key)
    return {"run": target, "splits": {s: v["total"] for s, v in card["per_split"].items()},
            "manifest": store.uri(layout.manifest(run)), "content_hash": card["content_hash"],
            "dataset_card": store.uri(layout.dataset_card(run, "md")),
            "quarantined": card["quarantine"]["total"], "processed_uri": store.uri(layout.processed(run)),
            "published_from": source}
