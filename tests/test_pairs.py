"""Pair-aware training: a pair shares a batch, and the ranking term pushes vulnerable above its fix."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard_ml.pairs import margin_ranking_term, pair_positions, pair_units
from streamguard_ml.tokens import bucketed_batches


def test_pair_units_group_members_and_keep_singletons():
    assert pair_units(["a", None, "b", "a", float("nan"), "b", ""]) == [[0, 3], [1], [2, 5], [4], [6]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batches_never_split_a_pair_and_cover_every_sample_once(seed):
    rng = np.random.default_rng(seed)
    pair_ids = [f"p{i // 2}" if i < 80 else None for i in range(100)]
    lengths = rng.integers(5, 400, 100).tolist()
    batches = list(bucketed_batches(lengths, 8, seed, units=pair_units(pair_ids)))
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(100))
    where = {i: k for k, b in enumerate(batches) for i in b}
    assert all(where[2 * p] == where[2 * p + 1] for p in range(40))
    assert all(len(b) <= 8 for b in batches)


def test_singleton_units_batch_exactly_as_before():
    """Without pairs the batcher keeps its old behaviour (same seeds, same batches)."""
    lengths = list(range(50, 0, -1))
    plain = list(bucketed_batches(lengths, 7, 3))
    assert list(bucketed_batches(lengths, 7, 3, units=[[i] for i in range(50)])) == plain
    assert sorted(len(b) for b in plain) == [1] + [7] * 7


def test_pair_positions_and_the_margin_term():
    import torch

    pair_ids = ["x", "y", "x", None, None, None, None, None, None, "y"]
    labels = [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert pair_positions([4, 9, 2, 7], pair_ids, labels).shape == (0, 2)  # no pair complete in this batch
    rows = pair_positions([0, 2, 1, 9], pair_ids, labels)
    assert sorted(map(tuple, rows.tolist())) == [(1, 0), (3, 2)]  # (vulnerable, fixed) positions
    logits = torch.zeros(4, 2, requires_grad=True)
    loss = margin_ranking_term(logits, torch.from_numpy(rows), margin=1.0)
    assert float(loss.detach()) == pytest.approx(1.0)
    loss.backward()
    assert logits.grad[1, 1] < 0 and logits.grad[0, 1] > 0  # raise the vulnerable member, lower its fix
    assert float(margin_ranking_term(logits, torch.zeros(0, 2, dtype=torch.long), 1.0)) == 0.0
