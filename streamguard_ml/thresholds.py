"""The operating point: the decision threshold each version ships with.

A fixed 0.5 made a model with a decent ranking unusable: the GNN flagged over half
of the *fixed* functions.  The threshold is a property of the version, chosen on
its validation split (never the test split) by a policy from the typed config:

* ``max_fpr`` — the highest recall whose validation false-positive rate stays within
  the budget (default 5 %): what a security team that reviews every finding wants;
* ``max_f1`` — the best validation F1.

The threshold sits halfway between the last score it accepts and the next lower
validation score, so a test score equal to a validation score is judged the same
way and the boundary is not hugged.  It lives in the model archive and the registry;
``predict``, evaluation, the gate, the endpoint and the model card use it unless
``--threshold`` overrides it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

#: What models saved before operating points existed are judged at.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float = DEFAULT_THRESHOLD
    policy: str = "fixed"
    max_fpr: float | None = None
    #: What the threshold achieved on the validation split it was chosen on.
    validation: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> "OperatingPoint":
        if not doc:
            return cls()
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in doc.items() if k in known})


def choose(y: Sequence[int], prob: Sequence[float], policy: str = "max_fpr", max_fpr: float = 0.05) -> OperatingPoint:
    """The threshold ``policy`` picks on validation labels ``y`` and calibrated scores ``prob``."""
    from sklearn.metrics import roc_curve

    y, p = np.asarray(y, dtype=int), np.asarray(prob, dtype=float)
    if len(set(y.tolist())) < 2:
        return OperatingPoint(DEFAULT_THRESHOLD, "fixed", None, _at(y, p, DEFAULT_THRESHOLD),
                              "validation split has one class only: kept 0.5")
    fpr, tpr, cuts = roc_curve(y, p, drop_intermediate=False)  # cuts decreasing; flagged means p >= cut
    note = ""
    if policy == "max_fpr":
        allowed = np.flatnonzero(fpr <= max_fpr + 1e-12)
        best = allowed[np.argmax(tpr[allowed])]  # argmax takes the first: the strictest cut with that recall
        if tpr[best] == 0:
            note = f"no threshold reaches any recall within a validation FPR of {max_fpr}: nothing is flagged"
    elif policy == "max_f1":
        positives = int(y.sum())
        tp = tpr * positives
        flagged = tp + fpr * (len(y) - positives)
        f1 = np.where(flagged > 0, 2 * tp / np.maximum(flagged + positives, 1), 0.0)
        best = int(np.argmax(f1))
    else:
        raise ValueError(f"threshold_policy={policy!r}: use max_fpr or max_f1")
    threshold = _midpoint(cuts, int(best), p)
    return OperatingPoint(threshold, policy, max_fpr if policy == "max_fpr" else None, _at(y, p, threshold), note)


def _midpoint(cuts: np.ndarray, best: int, p: np.ndarray) -> float:
    """Halfway between the lowest accepted score and the next lower one (or just above the highest)."""
    if not np.isfinite(cuts[best]):  # the "flag nothing" point: above every validation score
        return float(min(1.0, np.nextafter(p.max(), np.inf)))
    lower = cuts[best + 1] if best + 1 < len(cuts) else max(0.0, cuts[best] - 1e-6)
    return float((cuts[best] + lower) / 2)


def _at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    pred = p >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    return {"n": int(len(y)), "recall": recall, "precision": precision,
            "fpr": fp / neg if neg else 0.0,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
