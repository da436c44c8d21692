"""Incremental ingestion: remember what was ingested, take in only what is new.

The daily ingestion keeps a *corpus* in the store (``ingestion/corpus.parquet``):
every sample accepted so far, with its code fingerprint (normalised code, see
:func:`~streamguard_ml.quality.fingerprint`) and the run that first took it in.
Each run reads its sources and validates them exactly like ``ingest``, then

* a sample whose fingerprint and label are already in the corpus is counted as
  ``already_ingested`` (not quarantined: it is not a fault, it is yesterday's data);
* a sample whose code is in the corpus with the *other* label is a label
  conflict across days: it and the corpus copy are both quarantined;
* everything else is new and joins the corpus.

The run's ingested samples are the whole updated corpus — what a training run
on the published dataset should see.  A retried run ignores the corpus rows it
wrote itself, so a retry computes the same increment instead of finding nothing
new; the corpus is replaced with a conditional write, so two concurrent
ingestions cannot lose each other's samples.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from . import layout
from .config import QualityLimits
from .ingest import collect, parquet_table, samples_parquet, write_ingested
from .quality import deduplicate, fingerprint
from .records import Reason, Rejected, Sample
from .store import Store, StoreError

log = logging.getLogger(__name__)


def read_corpus(store: Store, run: str) -> tuple[list[tuple[Sample, str, str]], str | None]:
    """(sample, fingerprint, first run) for every corpus row taken in by an *earlier* run, and the
    corpus version token for the conditional write-back."""
    got = store.read_versioned(layout.corpus())
    if got is None:
        return [], None
    data, token = got
    rows = parquet_table(data).to_pylist()
    return [(Sample.from_dict(r), r["fingerprint"], r["first_run"]) for r in rows
            if r["first_run"] != layout.run_key(run)], token


def split_known(samples: Sequence[Sample], corpus: Sequence[tuple[Sample, str, str]]
                ) -> tuple[list[Sample], int, list[Rejected], set[str]]:
    """(new samples, count already ingested, cross-day label conflicts, corpus fingerprints to drop)."""
    by_print = {fp: s for s, fp, _ in corpus}
    new, conflicts, dropped = [], [], set()
    already = 0
    for s in samples:
        fp = fingerprint(s.code)
        old = by_print.get(fp)
        if old is None:
            new.append(s)
        elif old.label == s.label:
            already += 1
        else:
            detail = f"same code labelled both ways across runs: {old.id} (ingested earlier) and {s.id}"
            conflicts += [Rejected(s.source_ref, Reason.LABEL_CONFLICT, detail, id=s.id, raw=s.code),
                          Rejected(old.source_ref, Reason.LABEL_CONFLICT, detail, id=old.id, raw=old.code)]
            dropped.add(fp)
    return new, already, conflicts, dropped


def ingest_new(store: Store, run: str, sources: Sequence[str], limits: QualityLimits | None = None) -> dict[str, Any]:
    """Ingest what the corpus does not hold yet; returns the ``ingest`` report plus ``new`` / ``already_ingested``."""
    samples, rejected, per_source, advisories = collect(sources, limits or QualityLimits())
    corpus, token = read_corpus(store, run)
    fresh, already, conflicts, dropped = split_known(samples, corpus)
    fresh, duplicates, dup_counts = deduplicate(fresh)
    key = layout.run_key(run)
    rows = [row for row in corpus if row[1] not in dropped]
    taken_ids = {s.id for s, _, _ in rows}
    added = [(s, fingerprint(s.code), key) for s in fresh]
    for s, _, _ in added:
        if s.id in taken_ids:  # a different function under an id the corpus already uses
            s.id = f"{s.id}~{key}"
    rows += added
    new = len(added)
    extra = {"new": new, "already_ingested": already, "corpus": len(rows), "advisories": advisories}
    report = write_ingested(store, run, sources, [s for s, _, _ in rows], rejected + duplicates + conflicts,
                            per_source, dup_counts, extra)
    data = samples_parquet([s for s, _, _ in rows], {"fingerprint": [fp for _, fp, _ in rows],
                                                     "first_run": [r for _, _, r in rows]})
    if not store.replace_if(layout.corpus(), data, token):
        raise StoreError(f"{store.uri(layout.corpus())} changed while run {key} was ingesting (another "
                         "ingestion ran at the same time): retry the task")
    log.info("incremental ingest %s: %d new, %d already ingested, corpus %d", key, new, already, len(rows))
    return report
