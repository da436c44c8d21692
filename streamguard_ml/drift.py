"""The retraining decision: is the deployed model still right, and is its world still the same?

Criteria, each computed per registered model against its *champion*:

* ``feedback_volume`` — at least N analyst verdicts arrived since the champion was trained;
* ``accuracy_drift`` — live accuracy (from verdicts) is more than X points below the
  champion's test accuracy;
* ``fpr_rise`` — live false-positive rate is more than Y points above its test FPR;
* ``score_drift`` / ``input_drift`` — population stability index (PSI) of the live
  score distribution, and of input length and node-type histograms, against the
  reference profile recorded when the champion was evaluated;
* ``schedule`` — the last training is at least D days old (monthly by default).

Rates need a minimum number of verdicts to mean anything; below it the
criterion reports "not enough feedback" instead of firing on noise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np

from . import feedback as fb
from . import layout
from .config import Thresholds
from .store import Store, StoreError

log = logging.getLogger(__name__)

CRITERIA = ("feedback_volume", "accuracy_drift", "fpr_rise", "score_drift", "input_drift", "schedule")
SCORE_BINS = np.linspace(0.0, 1.0, 11)
MONITOR_PREFIX = "monitor"
FORCED_REASON = "forced by a person (force_retrain)"


@dataclass
class Criterion:
    name: str
    model: str
    held: bool
    detail: str
    value: float | None = None
    threshold: float | None = None

    def reason(self) -> str:
        return f"{self.model}: {self.name}: {self.detail}"


@dataclass
class ModelState:
    """What the criteria look at for one model."""

    model: str
    champion_version: int | None
    trained_at: datetime | None
    last_training_at: datetime | None
    baseline: dict[str, Any]
    reference: dict[str, Any] | None
    feedback: list[fb.Feedback] = field(default_factory=list)
    feedback_keys: list[str] = field(default_factory=list)


# -- population stability ----------------------------------------------------------
def psi(reference: Sequence[float], live: Sequence[float], eps: float = 1e-4) -> float:
    """Σ (live − ref) · ln(live / ref) over bins, on proportions smoothed by ``eps``."""
    r = np.asarray(reference, dtype=float)
    l_ = np.asarray(live, dtype=float)
    r = (r + eps) / (r + eps).sum()
    l_ = (l_ + eps) / (l_ + eps).sum()
    return float(np.sum((l_ - r) * np.log(l_ / r)))


def length_of(code: str) -> int:
    return code.count("\n") + 1


def reference_profile(codes: Iterable[str], prob: np.ndarray, node_types: np.ndarray) -> dict[str, Any]:
    """Score, length and node-type distributions of the data a model was judged on."""
    lengths = np.asarray([length_of(c) for c in codes], dtype=float)
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, 11))) if len(lengths) else np.array([0.0, 1.0])
    types, counts = np.unique(np.asarray(node_types, dtype=np.int64), return_counts=True)
    return {"n": int(len(lengths)), "score_hist": np.histogram(prob, SCORE_BINS)[0].tolist(),
            "length_edges": edges.tolist(), "length_hist": _length_hist(lengths, edges),
            "node_types": {str(int(t)): int(c) for t, c in zip(types, counts)}}


def _length_hist(lengths: np.ndarray, edges: np.ndarray) -> list[int]:
    inner = np.clip(lengths, edges[0], edges[-1]) if len(edges) > 1 else lengths
    return np.histogram(inner, edges if len(edges) > 1 else 1)[0].tolist()


def live_psi(reference: dict[str, Any], records: Sequence[fb.Feedback]) -> dict[str, float | None]:
    """PSI of live scores, lengths and node types against the reference profile."""
    from .fastgraph import graph_arrays

    out: dict[str, float | None] = {"score": psi(reference["score_hist"],
                                                 np.histogram([r.score for r in records], SCORE_BINS)[0])}
    codes = [r.code for r in records if r.code]
    if not codes:
        out.update(length=None, node_types=None)
        return out
    edges = np.asarray(reference["length_edges"], dtype=float)
    out["length"] = psi(reference["length_hist"], _length_hist(np.asarray([length_of(c) for c in codes], float), edges))
    types, counts = np.unique(graph_arrays(codes)[0]["node_type"], return_counts=True)  # failed graphs: skipped
    live_types = {str(t): int(n) for t, n in zip(types.tolist(), counts.tolist())}
    keys = sorted(set(reference["node_types"]) | set(live_types))
    out["node_types"] = psi([reference["node_types"].get(k, 0) for k in keys], [live_types.get(k, 0) for k in keys])
    return out


# -- gathering state -------------------------------------------------------------------
def model_state(store: Store, model: str) -> ModelState:
    from .registry import Registry

    reg = Registry(store)
    champ = reg.champion(model)
    versions = reg.list(model)
    last = max((fb.parse_ts(v.created_at) for v in versions), default=None)
    if champ is None:
        return ModelState(model, None, None, last, {}, None)
    trained_at = fb.parse_ts(champ.created_at)
    reference = None
    ref_key = layout.store_relative((champ.lineage or {}).get("reference_profile"))
    if ref_key:
        try:
            reference = store.read_json(ref_key)  # store-relative: found in a copied or moved store too
        except StoreError as exc:  # deleted: the PSI criteria say so
            log.warning("%s v%d: reference profile %s cannot be read (%s)", model, champ.version,
                        store.uri(ref_key), exc)
    records, keys = fb.since(store, trained_at, model)
    return ModelState(model, champ.version, trained_at, last, champ.metrics, reference, records, keys)


# -- criteria --------------------------------------------------------------------------
def _rates(records: Sequence[fb.Feedback]) -> tuple[float, float | None]:
    correct = sum(1 for r in records if r.verdict in ("true_positive", "true_negative"))
    fp = sum(1 for r in records if r.verdict == "false_positive")
    tn = sum(1 for r in records if r.verdict == "true_negative")
    return correct / len(records), (fp / (fp + tn) if fp + tn else None)


def evaluate(state: ModelState, t: Thresholds, now: datetime, only: Sequence[str] | None = None) -> list[Criterion]:
    """The criteria for one model (all, or those in ``only``), held or not, with the numbers.

    Criteria not asked for are not computed: a sensor polls often, and the drift
    criteria rebuild a program graph for every feedback sample.
    """
    m = state.model
    names = [name for name in CRITERIA if only is None or name in only]
    if state.champion_version is None:
        return [Criterion(name, m, False, "no deployed (champion) version to monitor") for name in names]
    n = len(state.feedback)
    out = [Criterion("feedback_volume", m, n >= t.feedback_count,
                     f"{n} verdicts since v{state.champion_version} was trained (threshold {t.feedback_count})",
                     n, t.feedback_count)]
    if {"accuracy_drift", "fpr_rise"} & set(names):
        out += _rate_criteria(state, t)
    if {"score_drift", "input_drift"} & set(names):
        out += _psi_criteria(state, t)
    days = (now - state.last_training_at).total_seconds() / 86400 if state.last_training_at else math.inf
    out.append(Criterion("schedule", m, days >= t.max_days,
                         f"last training {days:.1f} days ago (retrain every {t.max_days})", round(days, 2), t.max_days))
    return [c for c in out if c.name in names]


def _rate_criteria(state: ModelState, t: Thresholds) -> list[Criterion]:
    m, n = state.model, len(state.feedback)
    if n < t.min_feedback_for_rates:
        note = f"only {n} verdicts (need {t.min_feedback_for_rates} for a live rate)"
        return [Criterion("accuracy_drift", m, False, note), Criterion("fpr_rise", m, False, note)]
    accuracy, fpr = _rates(state.feedback)
    base_acc, base_fpr = float(state.baseline.get("accuracy", 0.0)), float(state.baseline.get("fpr", 0.0))
    drop = base_acc - accuracy
    out = [Criterion("accuracy_drift", m, drop > t.accuracy_drop,
                     f"live accuracy {accuracy:.3f} vs baseline {base_acc:.3f} ({-drop * 100:+.1f} pts over {n} verdicts)",
                     round(drop, 4), t.accuracy_drop)]
    if fpr is None:
        out.append(Criterion("fpr_rise", m, False, "no negatives among the verdicts"))
    else:
        rise = fpr - base_fpr
        out.append(Criterion("fpr_rise", m, rise > t.fpr_rise,
                             f"live FPR {fpr:.3f} vs baseline {base_fpr:.3f} ({rise * 100:+.1f} pts)",
                             round(rise, 4), t.fpr_rise))
    return out


def _psi_criteria(state: ModelState, t: Thresholds) -> list[Criterion]:
    m, n = state.model, len(state.feedback)
    if state.reference is None:
        note = "the champion has no reference profile (registered outside the pipeline)"
        return [Criterion("score_drift", m, False, note), Criterion("input_drift", m, False, note)]
    if n < t.min_feedback_for_rates:
        note = f"only {n} verdicts (need {t.min_feedback_for_rates} for a distribution)"
        return [Criterion("score_drift", m, False, note), Criterion("input_drift", m, False, note)]
    values = live_psi(state.reference, state.feedback)
    out = [Criterion("score_drift", m, values["score"] > t.psi, f"score PSI {values['score']:.3f} (threshold {t.psi})",
                     round(values["score"], 4), t.psi)]
    inputs = {k: v for k, v in values.items() if k != "score" and v is not None}
    if not inputs:
        out.append(Criterion("input_drift", m, False, "feedback carries no code (only hashes)"))
    else:
        worst = max(inputs, key=lambda k: inputs[k])
        out.append(Criterion("input_drift", m, inputs[worst] > t.psi,
                             ", ".join(f"{k} PSI {v:.3f}" for k, v in inputs.items()) + f" (threshold {t.psi})",
                             round(inputs[worst], 4), t.psi))
    return out


# -- the decision ----------------------------------------------------------------------
def day_key(now: datetime) -> str:
    return f"{MONITOR_PREFIX}/retrain-triggered/{now.date().isoformat()}.json"


def check(store: Store, thresholds: Thresholds | None = None, now: datetime | None = None,
          models: Sequence[str] | None = None, only: Sequence[str] | None = None, force: bool = False) -> dict[str, Any]:
    """``{"should_retrain", "reasons", "criteria", "feedback", "champions", ...}`` for all models."""
    from .config import REGISTRY_NAMES

    t = thresholds or Thresholds()
    now = now or datetime.now(timezone.utc)
    states = [model_state(store, m) for m in (models or REGISTRY_NAMES.values())]
    criteria = [c for s in states for c in evaluate(s, t, now, only)]
    reasons = [c.reason() for c in criteria if c.held] + ([FORCED_REASON] if force else [])
    feedback_keys = sorted({k for s in states for k in s.feedback_keys})
    return {
        "should_retrain": bool(reasons),
        "reasons": reasons,
        "criteria": [asdict(c) for c in criteria],
        "champions": {s.model: s.champion_version for s in states},
        "feedback": [store.uri(k) for k in feedback_keys],
        "feedback_records": {s.model: len(s.feedback) for s in states},
        "already_triggered_today": store.exists(day_key(now)),
        "thresholds": asdict(t),
        "checked_at": now.isoformat(timespec="seconds"),
    }


def claim_daily_slot(store: Store, decision: dict[str, Any], now: datetime | None = None) -> bool:
    """True for the first retraining trigger of the day; later calls that day get False."""
    from .store import json_bytes

    now = now or datetime.now(timezone.utc)
    return store.put_if_absent(day_key(now), json_bytes(decision))
