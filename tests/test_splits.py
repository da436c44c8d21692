"""Grouped, stratified, reproducible splits: nothing leaks between train, val and test."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from streamguard_ml.records import Sample
from streamguard_ml.splits import SplitError, assign_splits, split_keys


def _samples(n_pairs=120, repos=0):
    out = []
    for i in range(n_pairs):
        cwe = ["CWE-89", "CWE-78", "CWE-22"][i % 3]
        group = f"repo-{i % repos}" if repos else None
        out.append(Sample(id=f"{i}v", code="x", label=1, cwe=cwe, pair_id=f"p{i}", group=group))
        out.append(Sample(id=f"{i}f", code="x", label=0, cwe=cwe, pair_id=f"p{i}", group=group))
    return out


def test_pairs_and_repositories_stay_in_one_split():
    samples = _samples(repos=40)
    a = assign_splits(samples, 0.15, 0.15, seed=1)
    by_pair, by_repo = defaultdict(set), defaultdict(set)
    for s, split in zip(samples, a.splits):
        by_pair[s.pair_id].add(split)
        by_repo[s.group].add(split)
    assert all(len(v) == 1 for v in by_pair.values())
    assert all(len(v) == 1 for v in by_repo.values())
    assert set(a.counts()) == {"train", "val", "test"} and min(a.counts().values()) > 0


def test_split_keys_read_from_the_table_split_like_samples():
    from streamguard_ml.ingest import samples_table

    samples = _samples(repos=25)
    samples[3].vulnerability_type, samples[4].cwe = "sqli", None  # the stratum falls back to the type
    keys = split_keys(samples_table(samples))
    assert [k.id for k in keys] == [s.id for s in samples] and keys[4].vulnerability_type is None
    a, b = assign_splits(samples, 0.15, 0.15, seed=3), assign_splits(keys, 0.15, 0.15, seed=3)
    assert a.splits == b.splits and a.groups == b.groups
    older = split_keys(samples_table(samples).drop_columns(["group", "vulnerability_type"]))
    assert older[0] == keys[0]._replace(group=None) and older[3].vulnerability_type is None


def test_reproducible_stratified_and_seeded():
    samples = _samples()
    a, b, c = (assign_splits(samples, 0.15, 0.15, seed=s) for s in (7, 7, 8))
    assert a.splits == b.splits and a.splits != c.splits
    test_cwes = Counter(s.cwe for s, sp in zip(samples, a.splits) if sp == "test")
    assert len(test_cwes) == 3 and max(test_cwes.values()) - min(test_cwes.values()) <= 6
    share = a.counts()["test"] / len(samples)
    assert 0.10 <= share <= 0.20


def test_group_of_every_sample_is_reported():
    samples = _samples(30)
    a = assign_splits(samples, 0.2, 0.2, seed=1)
    assert len(a.groups) == len(samples)
    assert a.groups[0] == a.groups[1]  # the two members of pair 0


def test_too_little_data_says_what_to_add():
    with pytest.raises(SplitError, match="add more samples"):
        assign_splits(_samples(2), 0.15, 0.15, seed=1)
    with pytest.raises(SplitError, match="no samples"):
        assign_splits([], 0.15, 0.15)
