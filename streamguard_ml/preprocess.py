"""Preprocessing: split plan → sharded graph + token extraction → manifest and dataset card.

Three steps, so Airflow can map the middle one over shards:

1. :func:`plan` assigns every ingested sample to a split (grouped, stratified)
   and writes one input file per shard; splitting *before* the heavy work means
   shards never straddle splits and augmentation only ever touches ``train``.
2. :func:`process_shard` builds program graphs and tokens for one shard —
   :func:`process_shards` for many with one pool of worker threads (the C graph
   builder and the Rust tokenizer release the GIL); it is resumable — a shard
   whose outputs match its input digest is skipped.
3. :func:`finalize` writes the manifest, per-split ``dataset.json`` and the
   dataset card with the content hash used as lineage.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import layout
from .augment import augment_pairs
from .config import PipelineConfig
from .dataset import TENSOR_SUFFIX, arrays_bytes, concat_graphs, pack_graphs, pack_tokens
from .fastgraph import graph_arrays
from .graphs import GRAPH_FORMAT_VERSION, taint_rules, vocabulary
from .ingest import DatasetError, check_trainable, parquet_table, read_table, samples_table, table_parquet
from .records import Rejected, Sample
from .splits import SPLITS, assign_splits, split_keys
from .store import Store
from .tokens import EncodedBatch, encode, load_tokenizer

log = logging.getLogger(__name__)


def _old_heap_frozen(step: Callable) -> Callable:
    """Run ``step`` with the garbage collector ignoring objects that already exist.

    Preprocessing allocates millions of small objects; every full collection then
    re-scanned the long-lived heap (tokenizer, pandas, pyarrow), which cost ~25% of
    the CPU time in profiles.  Freezing only skips old objects — new garbage is still
    collected — and the heap is unfrozen afterwards.
    """

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gc.freeze()
        try:
            return step(*args, **kwargs)
        finally:
            gc.unfreeze()

    return wrapper


@_old_heap_frozen
def plan(store: Store, run: str, cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Assign splits and cut shards; returns small shard descriptors for task mapping."""
    import pyarrow as pa

    table = read_table(store, layout.ingested(run))
    keys = split_keys(table)
    check_trainable(keys, f"run {run}")
    assignment = assign_splits(keys, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.test_fold, cfg.holdout_cwe,
                               cfg.synthetic_train_only)
    table = table.append_column("split", pa.array(assignment.splits, pa.string())).append_column(
        "leak_group", pa.array(assignment.groups, pa.string()))
    store.write_bytes(layout.assignment(run), table_parquet(table.select(["id", "split", "leak_group"])))
    shards: list[dict[str, Any]] = []
    for split in SPLITS:  # shards are slices of the table: no per-sample Python objects on the way
        members = [i for i, sp in enumerate(assignment.splits) if sp == split]
        for index, start in enumerate(range(0, len(members), cfg.shard_size)):
            chunk = members[start : start + cfg.shard_size]
            store.write_bytes(layout.shard_input(run, split, index), table_parquet(table.take(chunk)))
            shards.append({"run": layout.run_key(run), "split": split, "index": index, "samples": len(chunk)})
    store.write_json(layout.plan(run), {"shards": shards, "splits": assignment.counts(), "config": cfg.to_dict()})
    log.info("plan %s: splits=%s shards=%d", run, assignment.counts(), len(shards))
    return shards


class ShardWorkers:
    """Graphs and tokens of many functions, built by a pool of threads.

    The C graph builder (:mod:`.fastgraph`) and the Rust tokenizer both release the
    GIL, so threads keep every core busy with no processes to start and no results
    to pickle.  Chunks of several shards are queued at once, so the threads never
    wait while the parent writes a finished shard.
    """

    def __init__(self, workers: int, progress: Any = None):
        self.workers = max(1, workers)
        self.progress = progress
        self.pool: ThreadPoolExecutor | None = None
        self.lines: dict[str, Any] = {}  # line → token ids, shared by the workers (tokens.encode's cache)

    def __enter__(self) -> "ShardWorkers":
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="preprocess")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def submit(self, tokenizer: Any, codes: Sequence[str]
               ) -> Callable[[], tuple[dict[str, Any], list[str | None], EncodedBatch]]:
        """Queue ``codes`` in chunks; the returned callable waits for (packed graphs, graph errors, tokens)."""
        assert self.pool is not None, "use ShardWorkers as a context manager"
        size = max(16, -(-len(codes) // (self.workers * 2)))  # a few chunks per worker and shard
        futures = [self.pool.submit(self._work, tokenizer, list(codes[i : i + size]))
                   for i in range(0, len(codes), size)]
        return lambda: self._gather([f.result() for f in futures])

    def _work(self, tokenizer: Any, codes: list[str]) -> tuple[dict[str, Any], list[str | None], EncodedBatch]:
        graphs, errors = graph_arrays(codes)
        tokens = encode(tokenizer, codes, self.lines)
        if self.progress is not None:
            self.progress.update(len(codes))
        return graphs, errors, tokens

    @staticmethod
    def _gather(parts: list[tuple[dict[str, Any], list[str | None], EncodedBatch]]
                ) -> tuple[dict[str, Any], list[str | None], EncodedBatch]:
        graphs = concat_graphs([g for g, _, _ in parts]) if parts else pack_graphs([])
        errors = [e for _, errs, _ in parts for e in errs]
        tokens = EncodedBatch([i for _, _, t in parts for i in t.ids], [x for _, _, t in parts for x in t.lines])
        return graphs, errors, tokens


def _digest(data: bytes, cfg: PipelineConfig) -> str:
    h = hashlib.sha256(data)
    for part in (cfg.base_model, str(cfg.augment_copies), str(cfg.seed), GRAPH_FORMAT_VERSION,
                 vocabulary()["version"], taint_rules()["version"], TENSOR_SUFFIX):
        h.update(part.encode())
    return h.hexdigest()


#: Shards whose graphs are queued while the parent finishes one.
AHEAD = 2


@dataclass
class _ShardInput:
    """One shard read (and, for ``train``, augmented), waiting for its graphs and tokens.

    ``table`` is the shard's Arrow table (augmented rows appended): records are written
    from it directly, so samples never round-trip through Python objects.
    """

    split: str
    index: int
    digest: str
    table: Any
    codes: list[str]
    started: float


def _read_shard(store: Store, run: str, split: str, index: int, cfg: PipelineConfig) -> _ShardInput | dict:
    """The shard's input, or its stats when it was already processed for exactly this input."""
    import pyarrow as pa

    started = time.perf_counter()
    in_key = layout.shard_input(run, split, index)
    data = store.read_bytes(in_key)
    digest = _digest(data, cfg)
    done_key = f"{layout.shard_dir(run, split, index)}/_SUCCESS.json"
    if store.exists(done_key) and store.read_json(done_key).get("input_digest") == digest:
        stats = store.read_json(done_key)
        log.info("shard %s-%05d already processed (%d samples): skipped", split, index, stats["samples"])
        return {**stats, "skipped": True}
    table = parquet_table(data)
    if split == "train" and cfg.augment_copies > 0:
        samples = [Sample.from_dict(r) for r in table.to_pylist()]
        group_of = dict(zip(table.column("id").to_pylist(), table.column("leak_group").to_pylist()))
        extra = augment_pairs(samples, cfg.augment_copies, cfg.seed)
        if extra:
            groups = [group_of[s.id.split("~aug")[0]] for s in extra]
            added = samples_table(extra, {"split": [split] * len(extra), "leak_group": groups})
            table = pa.concat_tables([table, added.cast(table.schema)])
    log.info("shard %s-%05d: processing %d samples", split, index, table.num_rows)
    return _ShardInput(split, index, digest, table, table.column("code").to_pylist(), started)


@_old_heap_frozen
def process_shards(store: Store, run: str, shards: Sequence[tuple[str, int]], cfg: PipelineConfig,
                   workers: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Graphs, tokens and records for several shards with one pool of worker threads.

    Shards already processed for their current input are skipped (resumable).  Graphs
    and tokens are built by worker threads while the parent writes; the next ``AHEAD``
    shards are queued meanwhile, so the workers never idle and finished-but-unwritten
    results stay bounded.  ``progress`` shows a per-function bar (the CLI).
    """
    from tqdm.auto import tqdm

    queue = deque(shards)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    bar = tqdm(total=0, desc="graphs + tokens", unit=" fn", disable=None if progress else True, leave=False)
    with bar, ShardWorkers(workers or os.cpu_count() or 1, bar) as pool:
        pending: deque = deque()
        while queue or pending:
            while queue and len(pending) <= AHEAD:  # read the next shards while the workers build
                split, index = queue.popleft()
                shard = _read_shard(store, run, split, index, cfg)
                if isinstance(shard, dict):
                    results[(split, index)] = shard
                    continue
                bar.total += len(shard.codes)
                pending.append((shard, pool.submit(load_tokenizer(cfg.base_model), shard.codes)))
            if pending:
                shard, built = pending.popleft()
                results[(shard.split, shard.index)] = _finish_shard(store, run, shard, *built())
    return [results[(split, index)] for split, index in shards]


def process_shard(store: Store, run: str, split: str, index: int, cfg: PipelineConfig,
                  workers: int | None = None) -> dict[str, Any]:
    """Graphs, tokens and records for one shard (one mapped Airflow task); skipped when already done."""
    return process_shards(store, run, [(split, index)], cfg, workers)[0]


def _finish_shard(store: Store, run: str, shard: _ShardInput, graphs: dict[str, Any], errors: list[str | None],
                  tokens: EncodedBatch) -> dict[str, Any]:
    """Drop the functions whose graph failed (quarantined), write the shard and its ``_SUCCESS.json``."""
    failed = [i for i, err in enumerate(errors) if err]
    keep = [i for i, err in enumerate(errors) if err is None]
    table, rejected = shard.table, []
    if failed:
        rejected = [Rejected(s.source_ref, "graph_error", errors[i], id=s.id, raw=s.code)
                    for i, s in zip(failed, map(Sample.from_dict, table.take(failed).to_pylist()))]
        table = table.take(keep)
    tokens = EncodedBatch([tokens.ids[i] for i in keep], [tokens.lines[i] for i in keep])
    out = layout.shard_dir(run, shard.split, shard.index)
    stats = _write_shard(store, out, shard.split, table, [shard.codes[i] for i in keep], graphs, tokens, rejected)
    stats.update(input_digest=shard.digest, seconds=round(time.perf_counter() - shard.started, 2))
    store.write_json(f"{out}/_SUCCESS.json", stats)
    log.info("shard %s-%05d: %d samples (%d augmented), %d nodes, %d tokens, %d quarantined in %.1fs",
             shard.split, shard.index, stats["samples"], stats["augmented"], stats["nodes"], stats["tokens"],
             len(rejected), stats["seconds"])
    return stats


def _write_shard(store: Store, out: str, split: str, table: Any, codes: list[str], packed_graphs: dict[str, Any],
                 tokens: EncodedBatch, rejected: list[Rejected]) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    packed_tokens = pack_tokens(tokens)
    for name, values in (("n_lines", [c.count("\n") + 1 for c in codes]),
                         ("n_nodes", np.diff(packed_graphs["node_ptr"])),
                         ("n_edges", np.diff(packed_graphs["edge_ptr"])),
                         ("n_tokens", [len(t) for t in tokens.ids])):
        table = table.append_column(name, pa.array(values, pa.int64()))
    for name, arrays in (("graphs", packed_graphs), ("tokens", packed_tokens)):
        store.write_bytes(f"{out}/{name}{TENSOR_SUFFIX}", arrays_bytes(arrays))
    store.write_bytes(f"{out}/records.parquet", table_parquet(table))
    store.write_jsonl(f"{out}/quarantine.jsonl", (r.to_dict() for r in rejected))
    return {"split": split, "samples": table.num_rows,
            "augmented": sum(1 for i in table.column("id").to_pylist() if "~aug" in i),
            "nodes": int(packed_graphs["node_ptr"][-1]), "tokens": int(packed_tokens["tok_ptr"][-1]),
            "quarantined": len(rejected)}


@_old_heap_frozen
def finalize(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Manifest, per-split metadata and the dataset card; returns the ``preprocess --json`` document."""
    import pyarrow as pa

    shards = store.read_json(layout.plan(run))["shards"]
    tables = []
    for shard in shards:
        key = f"{layout.shard_dir(run, shard['split'], shard['index'])}/records.parquet"
        if not store.exists(key):
            raise DatasetError(f"shard {shard['split']}-{shard['index']:05d} of run {run} was not processed: "
                               "re-run the preprocess_shard task (or `streamguard-ml preprocess`)")
        tables.append(parquet_table(store.read_bytes(key)))
    records = pa.concat_tables(tables).to_pandas()  # one conversion, not one per shard
    counts = records["split"].value_counts().to_dict()
    for split in SPLITS:
        labels = set(records.loc[records["split"] == split, "label"])
        if labels != {0, 1}:
            raise DatasetError(f"after preprocessing, the {split} split has labels {sorted(labels)}: "
                               "add data so every split has vulnerable and safe samples")
    columns = {k: records[k].tolist() for k in ("id", "split", "pair_id", "leak_group", "label", "cwe")}
    store.write_jsonl(layout.manifest(run), (
        {"id": i, "split": split, "pair_id": _present(pair), "group": group, "label": int(label),
         "cwe": _present(cwe), "augmented": "~aug" in i}
        for i, split, pair, group, label, cwe in zip(*columns.values())))
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
    rows = sorted(zip(records["split"].tolist(), records["id"].tolist(), records["label"].tolist(),
                      records["code"].tolist()), key=lambda r: (r[0], r[1]))
    h = hashlib.sha256()
    for split, sample_id, label, code in rows:
        h.update(f"{split}\x1f{sample_id}\x1f{int(label)}\x1f".encode())
        h.update(hashlib.sha256(code.encode()).digest())
    return h.hexdigest()


def preprocess(store: Store, run: str, cfg: PipelineConfig, workers: int | None = None) -> dict[str, Any]:
    """All three steps in one call (the CLI; the DAG maps the middle step over shards)."""
    shards = plan(store, run, cfg)
    process_shards(store, run, [(s["split"], s["index"]) for s in shards], cfg, workers, progress=True)
    return finalize(store, run, cfg)
