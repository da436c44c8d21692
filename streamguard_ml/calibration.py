"""Calibrated scores: a model's raw log-odds → a probability that means what it says.

A classifier trained with cross-entropy on a few hundred functions is rarely
calibrated: the GNN's raw scores pile up near 0 and 1, so "0.9" said little about
how often such a function really is vulnerable.  After training, a one-dimensional
map is fitted on the *validation* split (never the test split) and shipped in the
model archive, so every consumer — ``predict``, evaluation, the endpoint, the
fusion detector — reads the same calibrated ``score``:

* ``temperature`` — ``sigmoid(z / T)``, one parameter (Guo et al., 2017); keeps the
  ranking and the 0.5 crossing, fixes over-confidence;
* ``platt`` — ``sigmoid(a·z + b)`` (scikit-learn's logistic regression on ``z``): also
  moves the crossing point when the model over- or under-flags;
* ``isotonic`` — scikit-learn's ``IsotonicRegression``: any monotone map, needs more
  validation data (it is piecewise constant, so it can tie scores);
* ``none`` — the raw softmax probability.

All are monotone, so ROC-AUC and the ranking of functions never change.  Brier
score and expected calibration error (ECE) say how well it worked; the model card
shows both before and after, with a reliability diagram.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: Bins of the expected calibration error and of the reliability diagram.
ECE_BINS = 10
#: Log-odds are clipped here before fitting: a saturated raw score carries no more information.
LOGIT_CLIP = 30.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)))


@dataclass(frozen=True)
class Calibrator:
    """A fitted monotone map from raw log-odds to a probability (JSON round-trips through :meth:`to_dict`)."""

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, logit: Sequence[float] | np.ndarray) -> np.ndarray:
        z = np.clip(np.asarray(logit, dtype=np.float64), -LOGIT_CLIP, LOGIT_CLIP)
        if self.method == "temperature":
            return sigmoid(z / self.params["temperature"])
        if self.method == "platt":
            return sigmoid(self.params["slope"] * z + self.params["intercept"])
        if self.method == "isotonic":
            return np.interp(z, self.params["x"], self.params["y"])
        if self.method == "none":
            return sigmoid(z)
        raise ValueError(f"calibration method {self.method!r}: use temperature, platt, isotonic or none")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> "Calibrator":
        """The archive's calibration, or the identity for models saved before calibration existed."""
        if not doc:
            return cls()
        return cls(str(doc["method"]), dict(doc.get("params") or {}))


def fit(method: str, y: Sequence[int], logit: Sequence[float]) -> Calibrator:
    """Fit ``method`` on validation labels and raw log-odds.

    With one class only (or no data) nothing can be learnt: the identity is
    returned, so a tiny smoke run still produces a usable model.
    """
    y = np.asarray(y, dtype=int)
    z = np.clip(np.asarray(logit, dtype=np.float64), -LOGIT_CLIP, LOGIT_CLIP)
    if method == "none" or len(set(y.tolist())) < 2:
        return Calibrator("none")
    if method == "temperature":
        return Calibrator("temperature", {"temperature": _temperature(y, z)})
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4, max_iter=1000).fit(z.reshape(-1, 1), y)
        slope = float(lr.coef_[0, 0])
        if slope <= 0:  # an anti-correlated validation split: keep the ranking, fall back to temperature
            return Calibrator("temperature", {"temperature": _temperature(y, z)})
        return Calibrator("platt", {"slope": slope, "intercept": float(lr.intercept_[0])})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, y)
        return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                       "y": [float(v) for v in iso.y_thresholds_]})
    raise ValueError(f"calibration={method!r}: use temperature, platt, isotonic or none")


def _temperature(y: np.ndarray, z: np.ndarray) -> float:
    """The temperature minimising the validation negative log-likelihood (searched on log T)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = np.clip(sigmoid(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(100.0)), method="bounded")
    return float(np.exp(result.x))


def brier(y: Sequence[int], prob: Sequence[float]) -> float:
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss(np.asarray(y, dtype=int), np.asarray(prob, dtype=float)))


def expected_calibration_error(y: Sequence[int], prob: Sequence[float], bins: int = ECE_BINS) -> float:
    """Σ over equal-width score bins of (bin share) × |observed rate − mean score|."""
    y, p = np.asarray(y, dtype=float), np.asarray(prob, dtype=float)
    if not len(y):
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def report(y: Sequence[int], raw: Sequence[float], calibrated: Sequence[float], method: str) -> dict[str, Any]:
    """Brier score and ECE before (raw softmax) and after calibration, on one split."""
    return {"method": method, "brier_before": brier(y, raw), "brier_after": brier(y, calibrated),
            "ece_before": expected_calibration_error(y, raw), "ece_after": expected_calibration_error(y, calibrated),
            "bins": ECE_BINS}
