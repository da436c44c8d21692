"""Grouped, stratified, seeded train/val/test splits and the split manifest.

Leakage is what makes vulnerability benchmarks lie: a vulnerable function in
train and its own fix in test, or two functions of one commit on both sides.  So
samples are first joined into *groups* (connected by ``pair_id`` and by their
repository/commit ``group``), and whole groups are assigned to splits with the
greedy of scikit-learn's ``StratifiedGroupKFold``, stratifying on label × vulnerability type.

Three rules keep the validation and test figures about *real* code:

* when real and built-in synthetic samples are mixed, synthetic ones only ever train
  (``synthetic_train_only``): thresholds, calibration, the fusion detector and every
  reported figure come from real functions;
* ``test_fold`` picks which grouped fold is the test split, so grouped cross-validation
  is the pipeline run once per fold;
* ``holdout_cwe`` (leave one class out) makes every real sample of that CWE the test
  split; its synthetic samples are set aside (``unused``), so the class is never trained on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence, Union

from .records import Sample

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: The split of samples kept out of training and evaluation (synthetic samples of a held-out class).
UNUSED = "unused"


class SplitKey(NamedTuple):
    """What splitting needs of a sample: planning reads these columns, not whole Samples (code and all)."""

    id: str
    label: int
    cwe: str | None
    vulnerability_type: str | None
    pair_id: str | None
    group: str | None
    source: str | None = None


#: Samples or their split keys: the split functions read only SplitKey's fields.
Splittable = Union[Sample, SplitKey]


def split_keys(table: Any) -> list[SplitKey]:
    """The split keys of every row of an Arrow samples table (a sixth of the time building Samples takes).

    ``id`` and ``label`` must be columns; the others default to None when a file lacks them, as
    ``Sample.from_dict`` does (a missing ``source`` reads as unknown, i.e. real).
    """
    def column(name: str) -> list:
        if name in table.column_names or name in ("id", "label"):
            return table.column(name).to_pylist()
        return [None] * table.num_rows

    return [SplitKey(*row) for row in zip(*map(column, SplitKey._fields))]


class SplitError(ValueError):
    """The data cannot be split as asked; the message says what to add."""


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def leakage_groups(samples: Sequence[Splittable]) -> list[str]:
    """One group name per sample: samples sharing a pair, commit or repository share it."""
    uf = _UnionFind()
    for s in samples:
        uf.find(f"sample:{s.id}")
        if s.pair_id:
            uf.union(f"sample:{s.id}", f"pair:{s.pair_id}")
        if s.group:
            uf.union(f"sample:{s.id}", f"group:{s.group}")
    return [uf.find(f"sample:{s.id}") for s in samples]


def strata(samples: Sequence[Splittable]) -> list[str]:
    return [f"{s.label}|{s.cwe or s.vulnerability_type or 'unknown'}" for s in samples]


@dataclass
class SplitAssignment:
    splits: list[str]
    groups: list[str]

    def counts(self) -> dict[str, int]:
        c = Counter(self.splits)
        return {name: c.get(name, 0) for name in SPLITS} | ({UNUSED: c[UNUSED]} if c.get(UNUSED) else {})


def _fold_out(y: Sequence[str], groups: Sequence[str], fraction: float, seed: int, fold: int = 0) -> list[bool]:
    """Mark about ``fraction`` of the groups (stratified) as held out.

    The greedy of scikit-learn's ``StratifiedGroupKFold``: groups, in a seeded random
    order with the most class-skewed first, each go to the fold that keeps every
    class's share across folds most even (ties: the smaller fold); fold ``fold`` is
    held out.  A group only moves the classes it holds (one or two, for a sample or a
    pair), so each candidate fold is scored from those classes plus the unchanged
    spread of all others — scalar work per group instead of a folds × classes array
    (sklearn spent ~0.4 ms per group, 20 s at 50,000 samples; this takes ~4 µs).
    """
    import numpy as np

    n_splits = max(2, round(1 / fraction))
    _, y_idx = np.unique(np.asarray(y), return_inverse=True)
    _, g_idx = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g_idx.max()) + 1 if len(g_idx) else 0
    if n_groups < n_splits:
        raise SplitError(f"only {n_groups} independent groups; need at least {n_splits} to hold out "
                         f"{fraction:.0%}: add more samples or pairs")
    n_classes = int(y_idx.max()) + 1
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (g_idx, y_idx), 1)
    share = counts / counts.sum(axis=0)  # each group's share of every class
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order].std(axis=1), kind="stable")]
    held: list[list[tuple[int, float]]] = [[] for _ in range(n_groups)]  # (class, share) a group holds
    rows, cols = np.nonzero(share)
    for g, c, q in zip(rows.tolist(), cols.tolist(), share[rows, cols].tolist()):
        held[g].append((c, q))
    group_size = counts.sum(axis=1).tolist()
    folds = [[0.0] * n_classes for _ in range(n_splits)]
    sums, squares, sizes = [0.0] * n_classes, [0.0] * n_classes, [0.0] * n_splits
    spread = [0.0] * n_classes  # each class's standard deviation of shares across folds, as they stand
    fold_of = np.empty(n_groups, dtype=np.int64)
    for g in order.tolist():
        items = held[g]
        others = sum(spread) - sum(spread[c] for c, _ in items)
        scores = [(others + sum(_std(squares[c] + (2 * q) * fold[c] + q * q, sums[c] + q, n_splits)
                                for c, q in items)) / n_classes for fold in folds]
        best = min(scores)
        bound = best + (1e-8 + 1e-5 * abs(best))  # np.isclose(score, best)
        f = min((sizes[k], k) for k in range(n_splits) if scores[k] <= bound)[1]
        for c, q in items:
            squares[c] = squares[c] + (2 * q) * folds[f][c] + q * q
            folds[f][c] += q
            sums[c] += q
            spread[c] = _std(squares[c], sums[c], n_splits)
        sizes[f] += group_size[g]
        fold_of[g] = f
    return (fold_of[g_idx] == fold).tolist()


def _std(sum_of_squares: float, total: float, n: int) -> float:
    mean = total / n
    var = sum_of_squares / n - mean * mean
    return math.sqrt(var) if var > 0 else 0.0


def is_synthetic(sample: Splittable) -> bool:
    return getattr(sample, "source", None) == "synthetic"


def assign_splits(samples: Sequence[Splittable], val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 13, test_fold: int = 0, holdout_cwe: str = "",
                  synthetic_train_only: bool = True) -> SplitAssignment:
    """Reproducible from ``seed``; no leakage group ever straddles two splits (see the module doc).

    When the real samples mixed with synthetic ones are too few to give validation and
    test splits of their own, every sample is split as one pool (with a warning).
    """
    if len(samples) == 0:
        raise SplitError("no samples to split: check the sources and the quarantine file")
    synthetic = [is_synthetic(s) for s in samples]
    if synthetic_train_only and any(synthetic) and not all(synthetic):
        try:
            return _assign(samples, val_fraction, test_fraction, seed, test_fold, holdout_cwe, synthetic, True)
        except SplitError as exc:
            log.warning("the %d real samples cannot form validation and test splits of their own (%s): "
                        "splitting real and synthetic samples together", len(samples) - sum(synthetic), exc)
    return _assign(samples, val_fraction, test_fraction, seed, test_fold, holdout_cwe, synthetic, False)


def _assign(samples: Sequence[Splittable], val_fraction: float, test_fraction: float, seed: int, test_fold: int,
            holdout_cwe: str, synthetic: list[bool], mixed: bool) -> SplitAssignment:
    groups = leakage_groups(samples)
    y = strata(samples)
    held = [bool(holdout_cwe) and s.cwe == holdout_cwe for s in samples]
    if holdout_cwe and not any(h and not syn for h, syn in zip(held, synthetic)):
        raise SplitError(f"holdout_cwe={holdout_cwe!r}: no real sample has that CWE "
                         f"(present: {sorted({s.cwe for s in samples if s.cwe})})")
    splits = ["train"] * len(samples)
    if holdout_cwe:
        for i, (h, syn) in enumerate(zip(held, synthetic)):
            if h:
                splits[i] = UNUSED if syn else "test"
    # The pool val (and, without a held-out class, test) is cut from: real samples when real and synthetic mix.
    pool = [i for i in range(len(samples)) if not held[i] and not (mixed and synthetic[i])]
    if not holdout_cwe:
        is_test = _fold_out([y[i] for i in pool], [groups[i] for i in pool], test_fraction, seed, test_fold)
        for i, t in zip(pool, is_test):
            if t:
                splits[i] = "test"
        pool = [i for i, t in zip(pool, is_test) if not t]
        val_fraction = val_fraction / (1 - test_fraction)
    is_val = _fold_out([y[i] for i in pool], [groups[i] for i in pool], val_fraction, seed + 1)
    for i, v in zip(pool, is_val):
        if v:
            splits[i] = "val"
    assignment = SplitAssignment(splits, groups)
    _check_usable(samples, assignment)
    return assignment


def _check_usable(samples: Sequence[Splittable], a: SplitAssignment) -> None:
    for name in SPLITS:
        labels = {s.label for s, sp in zip(samples, a.splits) if sp == name}
        if labels != {0, 1}:
            raise SplitError(f"the {name} split has labels {sorted(labels) or 'none'}: the data needs more "
                             "vulnerable and safe samples (or pairs) so every split gets both")
