"""Ingestion: sources → validated, de-duplicated samples plus a quarantine with reasons."""

from __future__ import annotations

import io
import logging
from collections import Counter
from typing import Iterable, Sequence

from . import layout
from .config import QualityLimits
from .graphs import first_error_line
from .quality import deduplicate, normalise
from .records import Reason, Rejected, Sample, record_fault, reject_record
from .sources import load_advisories, read_source, split_specs
from .sources.advisories import AdvisoryIndex
from .splits import Splittable
from .store import Store

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The data cannot train a classifier; the message says what to fix."""


def read_all(sources: Sequence[str], limits: QualityLimits, advisories: AdvisoryIndex | None = None,
             roots: Sequence[str] | None = None) -> tuple[list[Sample], list[Rejected], Counter]:
    """Read and validate every sample source, joining advisory metadata onto each record.

    Every item a connector yields becomes samples or quarantine entries, never an
    exception: the per-source count is the number of inputs both account for.
    ``roots``: the source path policy (default: the deployment's ``STREAMGUARD_SOURCE_ROOTS``).
    Returns (samples, rejected, per-source input counts).
    """
    samples: list[Sample] = []
    rejected: list[Rejected] = []
    per_source: Counter = Counter()
    for spec in sources:
        for item in _progress(read_source(spec, roots), f"reading {spec}"):
            per_source[spec] += 1
            for out in validate(item, limits, advisories):
                (rejected if isinstance(out, Rejected) else samples).append(out)
    return samples, rejected, per_source


def validate(item: dict | Rejected, limits: QualityLimits,
             advisories: AdvisoryIndex | None = None) -> list[Sample | Rejected]:
    """One connector item → samples or quarantine entries.

    Field types are judged first (:func:`~streamguard_ml.records.record_fault`), so that
    neither the advisory join nor ``normalise`` nor the Parquet write sees a malformed value.
    """
    if isinstance(item, Rejected):
        return [item]
    fault = record_fault(item)
    if fault is not None:
        return [reject_record(item, *fault)]
    if advisories is not None:
        item = advisories.enrich(item)
    return normalise(item, limits)


def collect(sources: Sequence[str], limits: QualityLimits,
            roots: Sequence[str] | None = None) -> tuple[list[Sample], list[Rejected], Counter, dict]:
    """Every source read, validated and parse-checked (not yet de-duplicated).

    Every source is checked against the source path policy (``roots``, default the
    deployment's ``STREAMGUARD_SOURCE_ROOTS``) before any is read.
    Returns (samples, rejected, per-source input counts, advisory summary).
    """
    sample_specs, metadata_specs = split_specs(sources, roots)
    advisories = load_advisories(metadata_specs, roots)
    samples, rejected, per_source = read_all(sample_specs, limits, advisories, roots)
    samples, unparseable = drop_unparseable(samples)
    return samples, rejected + unparseable, per_source, advisories.summary()


def drop_unparseable(samples: Iterable[Sample]) -> tuple[list[Sample], list[Rejected]]:
    """tree-sitter recovers from errors, so we ask it where the first one is."""
    kept, rejected = [], []
    for s in samples:
        line = first_error_line(s.code)
        if line is None:
            kept.append(s)
        else:
            rejected.append(Rejected(s.source_ref, Reason.PARSE_ERROR,
                                     f"Python syntax error near line {line}", id=s.id, raw=s.code))
    return kept, rejected


def check_trainable(samples: Sequence[Splittable], where: str) -> None:
    labels = Counter(s.label for s in samples)
    if not samples:
        raise DatasetError(f"{where}: no usable samples. Check the sources exist and read the quarantine "
                           "file for why inputs were rejected")
    if len(labels) < 2:
        only = "vulnerable" if 1 in labels else "safe"
        raise DatasetError(f"{where}: all {len(samples)} samples are {only}; a classifier needs both. Add "
                           f"{'safe' if only == 'vulnerable' else 'vulnerable'} samples (e.g. the fixed "
                           "versions as 'counterfactual') or another source such as synthetic:1000")


def ingest(store: Store, run: str, sources: Sequence[str], limits: QualityLimits | None = None,
           roots: Sequence[str] | None = None) -> dict:
    """Read sources into ``runs/<run>/ingest/``; returns the ``ingest --json`` report.

    ``roots``: where sources may be read from (default: the deployment's ``STREAMGUARD_SOURCE_ROOTS``).
    """
    samples, rejected, per_source, advisories = collect(sources, limits or QualityLimits(), roots)
    samples, duplicates, dup_counts = deduplicate(samples)
    return write_ingested(store, run, sources, samples, rejected + duplicates, per_source, dup_counts,
                          {"advisories": advisories})


def write_ingested(store: Store, run: str, sources: Sequence[str], samples: Sequence[Sample],
                   rejected: Sequence[Rejected], per_source: Counter, dup_counts: Counter,
                   extra: dict | None = None) -> dict:
    """Accepted samples, quarantine and report of a run; stops when the data cannot train a classifier."""
    write_samples(store, layout.ingested(run), samples)
    store.write_jsonl(layout.quarantine(run), (r.to_dict() for r in rejected))
    reasons = Counter(r.reason for r in rejected)
    report = {
        "run": layout.run_key(run),
        "sources": list(sources),
        "inputs_per_source": dict(per_source),
        "accepted": len(samples),
        "quarantined": len(rejected),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "quarantine_file": store.uri(layout.quarantine(run)),
        "duplicates_removed": dup_counts.get(Reason.DUPLICATE, 0) + dup_counts.get(Reason.NEAR_DUPLICATE, 0),
        "labels": {str(k): v for k, v in sorted(Counter(s.label for s in samples).items())},
        "samples_uri": store.uri(layout.ingested(run)),
        **(extra or {}),
    }
    store.write_json(layout.ingest_report(run), report)
    log.info("ingest %s: accepted=%d quarantined=%d reasons=%s", report["run"], len(samples),
             len(rejected), report["quarantine_reasons"])
    check_trainable(samples, f"ingest of {', '.join(sources)}")
    return report


def write_samples(store: Store, key: str, samples: Sequence[Sample], extra: dict[str, list] | None = None) -> str:
    store.write_bytes(key, samples_parquet(samples, extra))
    return store.uri(key)


def samples_parquet(samples: Sequence[Sample], extra: dict[str, list] | None = None) -> bytes:
    """Samples (plus extra columns) as zstd-compressed Parquet bytes."""
    return table_parquet(samples_table(samples, extra))


def samples_table(samples: Sequence[Sample], extra: dict[str, list] | None = None) -> "object":
    """Samples (plus extra columns) as an Arrow table with the samples file's schema."""
    import pyarrow as pa

    columns = {name: [getattr(s, name) for s in samples] for name in Sample.__dataclass_fields__}
    columns["vulnerable_lines"] = [list(map(int, s.vulnerable_lines)) for s in samples]
    columns.update(extra or {})
    return pa.table(columns, schema=_schema(columns))


def table_parquet(table: "object") -> bytes:
    """An Arrow table as zstd-compressed Parquet bytes (the format of every samples file)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _schema(columns: dict[str, list]) -> "object":
    import pyarrow as pa

    types = {"label": pa.int8(), "vulnerable_lines": pa.list_(pa.int32())}
    sample_fields = set(Sample.__dataclass_fields__)
    return pa.schema([(name, types.get(name) or (pa.string() if name in sample_fields or not values
                                                 else pa.array(values).type))
                      for name, values in columns.items()])


def parquet_table(data: bytes) -> "object":
    """Parquet bytes as an Arrow table, read on the calling thread.

    With pyarrow's thread pool, reading from an in-memory file left work behind that
    sometimes aborted the interpreter at exit ("terminate called without an active
    exception": 1 to 6 of every 12-16 runs of a three-line script; apache/arrow#34314,
    #50482); without it, 0 of 20 — and the files here are small enough not to need threads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), use_threads=False)


def read_table(store: Store, key: str) -> "object":
    """A samples file as an Arrow table (with any extra columns, such as ``split``)."""
    return parquet_table(store.read_bytes(key))


def read_samples(store: Store, key: str) -> tuple[list[Sample], "object"]:
    """Samples and the full table (which may carry extra columns such as ``split``)."""
    table = read_table(store, key)
    return [Sample.from_dict(r) for r in table.to_pylist()], table


def _progress(items: Iterable, desc: str) -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=" rec", disable=None, leave=False)
