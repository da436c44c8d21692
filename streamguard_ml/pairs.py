"""Vulnerable/fixed pairs in training: batches that keep a pair together, and a ranking term.

A real fix changes a few tokens, so a classifier can score a vulnerable function
and its fix almost alike and still look accurate.  Pair-aware training shows the
model both members of a pair in the same batch and adds a margin ranking term,
``max(0, margin − (z_vulnerable − z_fixed))`` on the log-odds ``z``, to the
classification loss: the model is pushed to rank each vulnerable function above
its *own* fix, which is exactly what pair-wise accuracy and a useful scanner need.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _key(pair_id: Any) -> str | None:
    if pair_id is None or (isinstance(pair_id, float) and np.isnan(pair_id)) or pair_id == "":
        return None
    return str(pair_id)


def pair_units(pair_ids: Sequence[Any]) -> list[list[int]]:
    """Indices grouped by pair (a sample without a pair is a unit of its own), in first-seen order."""
    units: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, pid in enumerate(pair_ids):
        key = _key(pid)
        if key is None:
            out.append([i])
        elif key in units:
            units[key].append(i)
        else:
            units[key] = [i]
            out.append(units[key])
    return out


def pair_positions(index: Sequence[int], pair_ids: Sequence[Any], labels: Sequence[int]) -> np.ndarray:
    """``[k, 2]`` positions *within a batch* of (vulnerable, fixed) members of the same pair."""
    by_pair: dict[str, dict[int, list[int]]] = {}
    for pos, i in enumerate(index):
        key = _key(pair_ids[i])
        if key is not None:
            by_pair.setdefault(key, {0: [], 1: []})[int(labels[i])].append(pos)
    rows = [(v, f) for members in by_pair.values() for v in members[1] for f in members[0]]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def margin_ranking_term(logits: Any, pairs: Any, margin: float) -> Any:
    """Mean hinge on (vulnerable log-odds − fixed log-odds) over the batch's pairs (0 without pairs)."""
    import torch

    if pairs is None or pairs.numel() == 0:
        return logits.new_zeros(())
    z = logits[:, 1] - logits[:, 0]
    return torch.nn.functional.margin_ranking_loss(z[pairs[:, 0]], z[pairs[:, 1]], torch.ones_like(z[pairs[:, 0]]),
                                                   margin=margin)
