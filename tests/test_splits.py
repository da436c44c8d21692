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


def test_test_folds_partition_the_data_for_cross_validation():
    samples = _samples(repos=50)
    folds = [assign_splits(samples, 0.15, 0.2, seed=2, test_fold=k) for k in range(5)]
    tested = Counter(i for a in folds for i, split in enumerate(a.splits) if split == "test")
    assert set(tested) == set(range(len(samples))) and set(tested.values()) == {1}  # each sample tested once
    for a in folds:
        assert min(a.counts().values()) > 0


def test_leaving_one_class_out_trains_on_none_of_it():
    real = _samples(repos=40)
    synthetic = [Sample(id=f"s{i}", code="x", label=i % 2, cwe=["CWE-89", "CWE-22"][(i // 2) % 2],
                        pair_id=f"sp{i // 2}", source="synthetic") for i in range(80)]
    samples = real + synthetic
    a = assign_splits(samples, 0.15, 0.15, seed=1, holdout_cwe="CWE-22")
    for s, split in zip(samples, a.splits):
        if s.cwe == "CWE-22":
            assert split == ("unused" if s.source == "synthetic" else "test")
        else:
            assert split in ("train", "val") and (s.source != "synthetic" or split == "train")
    assert a.counts()["unused"] == sum(1 for s in synthetic if s.cwe == "CWE-22")
    with pytest.raises(SplitError, match="CWE-611"):
        assign_splits(samples, holdout_cwe="CWE-611")


def test_synthetic_samples_only_train_when_real_data_can_fill_validation_and_test():
    real = _samples(repos=40)
    synthetic = [Sample(id=f"s{i}", code="x", label=i % 2, cwe="CWE-89", pair_id=f"sp{i // 2}", source="synthetic")
                 for i in range(200)]
    a = assign_splits(real + synthetic, 0.15, 0.15, seed=4)
    assert {split for s, split in zip(real + synthetic, a.splits) if s.source == "synthetic"} == {"train"}
    assert {"val", "test"} <= {split for s, split in zip(real + synthetic, a.splits) if s.source != "synthetic"}
    few = real[:2] + synthetic  # one real pair cannot form two splits: every sample is split together, as before
    b = assign_splits(few, 0.15, 0.15, seed=4)
    assert {"val", "test"} <= {split for s, split in zip(few, b.splits) if s.source == "synthetic"}
    mixed_off = assign_splits(real + synthetic, 0.15, 0.15, seed=4, synthetic_train_only=False)
    assert "test" in {split for s, split in zip(real + synthetic, mixed_off.splits) if s.source == "synthetic"}
