"""Preprocessing: split plan → sharded graph + token extraction → manifest and dataset card.

Three steps, so Airflow can map the middle one over shards:

1. :func:`plan` assigns every ingested sample to a split (grouped, stratified)
   and writes one input file per shard; splitting *before* the heavy work means
   shards never straddle splits and augmentation only ever touches ``train``.
2. :func:`process_shard` builds program graphs (worker processes) and tokens
   (one batched call) for one shard; it is resumable — a shard whose outputs
   match its input digest is skipped.
3. :func:`finalize` writes the manifest, per-split ``dataset.json`` and the
   dataset card with the content hash used as lineage.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

from . import layout
from .augment import augment_pairs
from .config import PipelineConfig
from .dataset import pack_graphs, pack_tokens, save_arrays
from .graphs import GRAPH_FORMAT_VERSION, build_graph, taint_rules, vocabulary
from .ingest import DatasetError, check_trainable, read_samples, write_samples
from .records import Rejected, Sample
from .splits import SPLITS, assign_splits
from .store import Store
from .tokens import encode, load_tokenizer

log = logging.getLogger(__name__)


def plan(store: Store, run: str, cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Assign splits and cut shards; returns small shard descriptors for task mapping."""
    samples, _ = read_samples(store, layout.ingested(run))
    check_trainable(samples, f"run {run}")
    assignment = assign_splits(samples, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    write_samples(store, layout.assignment(run), samples,
                  {"split": assignment.splits, "leak_group": assignment.groups})
    shards: list[dict[str, Any]] = []
    for split in SPLITS:
        members = [(s, g) for s, sp, g in zip(samples, assignment.splits, assignment.groups) if sp == split]
        for index, start in enumerate(range(0, len(members), cfg.shard_size)):
            chunk = members[start : start + cfg.shard_size]
            key = layout.shard_input(run, split, index)
            write_samples(store, key, [s for s, _ in chunk], {"split": [split] * len(chunk),
                                                               "leak_group": [g for _, g in chunk]})
            shards.append({"run": layout.run_key(run), "split": split, "index": index, "samples": len(chunk)})
    store.write_json(layout.plan(run), {"shards": shards, "splits": assignment.counts(), "config": cfg.to_dict()})
    log.info("plan %s: splits=%s shards=%d", run, assignment.counts(), len(shards))
    return shards


def _graph_chunk(codes: list[str]) -> tuple[list[Any], list[str | None]]:
    """Worker body: graphs for a list of functions (errors returned, not raised)."""
    graphs, errors = [], []
    for code in codes:
        try:
            graphs.append(build_graph(code))
            errors.append(None)
        except (RecursionError, ValueError) as exc:  # pathological nesting etc.
            graphs.append(None)
            errors.append(f"{type(exc).__name__}: {exc}")
    return graphs, errors


def build_graphs(codes: Sequence[str], workers: int) -> tuple[list[Any], list[str | None]]:
    """Graphs for many functions, in ``workers`` processes when it pays off."""
    codes = list(codes)
    if workers <= 1 or len(codes) < 200:
        return _graph_chunk(codes)
    size = max(50, len(codes) // (workers * 4))
    chunks = [codes[i : i + size] for i in range(0, len(codes), size)]
    graphs: list[Any] = []
    errors: list[str | None] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for g, e in pool.map(_graph_chunk, chunks):
            graphs += g
            errors += e
    return graphs, errors


def _digest(data: bytes, cfg: PipelineConfig) -> str:
    h = hashlib.sha256(data)
    for part in (cfg.base_model, str(cfg.augment_copies), str(cfg.seed), GRAPH_FORMAT_VERSION,
                 vocabulary()["version"], taint_rules()["version"]):
        h.update(part.encode())
    return h.hexdigest()


def process_shard(store: Store, run: str, split: str, index: int, cfg: PipelineConfig,
                  workers: int | None = None) -> dict[str, Any]:
    """Graphs, tokens and records for one shard; skipped when already done for this input."""
    started = time.perf_counter()
    in_key = layout.shard_input(run, split, index)
    out = layout.shard_dir(run, split, index)
    digest = _digest(store.read_bytes(in_key), cfg)
    done_key = f"{out}/_SUCCESS.json"
    if store.exists(done_key) and store.read_json(done_key).get("input_digest") == digest:
        stats = store.read_json(done_key)
        log.info("shard %s-%05d already processed (%d samples): skipped", split, index, stats["samples"])
        return {**stats, "skipped": True}
    samples, table = read_samples(store, in_key)
    groups = table.column("leak_group").to_pylist()
    group_of = {s.id: g for s, g in zip(samples, groups)}
    if split == "train" and cfg.augment_copies > 0:
        extra = augment_pairs(samples, cfg.augment_copies, cfg.seed)
        for s in extra:
            group_of[s.id] = group_of[s.id.split("~aug")[0]]
        samples = samples + extra
    graphs, errors = build_graphs([s.code for s in samples], workers or os.cpu_count() or 1)
    rejected = [Rejected(s.source_ref, "graph_error", err, id=s.id, raw=s.code)
                for s, err in zip(samples, errors) if err]
    keep = [i for i, err in enumerate(errors) if err is None]
    samples, graphs = [samples[i] for i in keep], [graphs[i] for i in keep]
    tokens = encode(load_tokenizer(cfg.base_model), [s.code for s in samples])
    stats = _write_shard(store, out, split, samples, graphs, tokens, group_of, rejected)
    stats.update(input_digest=digest, seconds=round(time.perf_counter() - started, 2))
    store.write_json(done_key, stats)
    log.info("shard %s-%05d: %d samples (%d augmented), %d nodes, %d tokens, %d quarantined in %.1fs",
             split, index, stats["samples"], stats["augmented"], stats["nodes"], stats["tokens"],
             len(rejected), stats["seconds"])
    return stats


def _write_shard(store: Store, out: str, split: str, samples: list[Sample], graphs: list[Any],
                 tokens: Any, group_of: dict[str, str], rejected: list[Rejected]) -> dict[str, Any]:
    packed_graphs, packed_tokens = pack_graphs(graphs), pack_tokens(tokens)
    extra = {
        "split": [split] * len(samples),
        "leak_group": [group_of[s.id] for s in samples],
        "n_lines": [s.code.count("\n") + 1 for s in samples],
        "n_nodes": [g.num_nodes for g in graphs],
        "n_edges": [len(g.edges) for g in graphs],
        "n_tokens": [len(t) for t in tokens.ids],
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(Path(tmp) / "graphs.safetensors", packed_graphs)
        save_arrays(Path(tmp) / "tokens.safetensors", packed_tokens)
        for name in ("graphs.safetensors", "tokens.safetensors"):
            store.upload_file(Path(tmp) / name, f"{out}/{name}")
    write_samples(store, f"{out}/records.parquet", samples, extra)
    store.write_jsonl(f"{out}/quarantine.jsonl", (r.to_dict() for r in rejected))
    return {"split": split, "samples": len(samples),
            "augmented": sum(1 for s in samples if "~aug" in s.id),
            "nodes": int(packed_graphs["node_ptr"][-1]), "tokens": int(packed_tokens["tok_ptr"][-1]),
            "quarantined": len(rejected)}


def finalize(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Manifest, per-split metadata and the dataset card; returns the ``preprocess --json`` document."""
    import pandas as pd
    import pyarrow.parquet as pq

    shards = store.read_json(layout.plan(run))["shards"]
    frames = []
    for shard in shards:
        key = f"{layout.shard_dir(run, shard['split'], shard['index'])}/records.parquet"
        if not store.exists(key):
            raise DatasetError(f"shard {shard['split']}-{shard['index']:05d} of run {run} was not processed: "
                               "re-run the preprocess_shard task (or `streamguard-ml preprocess`)")
        frames.append(pq.read_table(io.BytesIO(store.read_bytes(key))).to_pandas())
    records = pd.concat(frames, ignore_index=True)
    counts = records["split"].value_counts().to_dict()
    for split in SPLITS:
        labels = set(records.loc[records["split"] == split, "label"])
        if labels != {0, 1}:
            raise DatasetError(f"after preprocessing, the {split} split has labels {sorted(labels)}: "
                               "add data so every split has vulnerable and safe samples")
    store.write_jsonl(layout.manifest(run), (
        {"id": r.id, "split": r.split, "pair_id": _present(r.pair_id), "group": r.leak_group,
         "label": int(r.label), "cwe": _present(r.cwe), "augmented": "~aug" in r.id}
        for r in records.itertuples()))
    content_hash = dataset_hash(records)
    meta = {"run": layout.run_key(run), "base_model": cfg.base_model, "graph_format": GRAPH_FORMAT_VERSION,
            "vocabulary": vocabulary()["version"], "vocabulary_size": vocabulary()["size"],
            "rules": taint_rules()["version"], "content_hash": content_hash,
            "tokenizer_vocab_size": len(load_tokenizer(cfg.base_model))}
    for split in SPLITS:
        store.write_json(f"{layout.split_dir(run, split)}/dataset.json", {**meta, "split": split})
    from .cards import write_dataset_card

    card = write_dataset_card(store, run, records, meta, shards)
    return {"run": layout.run_key(run), "splits": {s: int(counts.get(s, 0)) for s in SPLITS},
            "manifest": store.uri(layout.manifest(run)), "content_hash": content_hash,
            "dataset_card": store.uri(layout.dataset_card(run, "md")),
            "quarantined": card["quarantine"]["total"], "processed_uri": store.uri(layout.processed(run))}


def _present(value: Any) -> Any:
    """pandas reads missing strings as NaN; JSON wants null."""
    import pandas as pd

    return None if pd.isna(value) else value


def dataset_hash(records: Any) -> str:
    """SHA-256 over (split, id, label, code hash) in a canonical order: the data's lineage id."""
    h = hashlib.sha256()
    for r in records.sort_values(["split", "id"]).itertuples():
        h.update(f"{r.split}\x1f{r.id}\x1f{int(r.label)}\x1f".encode())
        h.update(hashlib.sha256(r.code.encode()).digest())
    return h.hexdigest()


def preprocess(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    """All three steps in one process (the CLI; the DAG maps the middle step)."""
    from tqdm.auto import tqdm

    shards = plan(store, run, cfg)
    for shard in tqdm(shards, desc="preprocessing shards", unit=" shard", disable=None):
        process_shard(store, run, shard["split"], shard["index"], cfg)
    return finalize(store, run, cfg)
