"""Champion / challenger: may a newly trained model replace the deployed one?

Both are scored on the *same* test split.  The default rule is the seed's:
accuracy at least +1 point and false-positive rate at most +0.5 points, plus an
exact McNemar test on the paired predictions (the challenger must be right on
significantly more of the samples where the two disagree).  With no champion
yet, a model is promoted when it clears absolute floors.  The decision, with
every number it used, is stored with the registered version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class GateRule:
    min_accuracy_gain: float = 0.01
    max_fpr_increase: float = 0.005
    mcnemar_alpha: float | None = 0.05
    floor_accuracy: float = 0.70
    floor_f1: float = 0.60
    floor_max_fpr: float = 0.30
    #: Fewer test functions than this and no figure is trusted enough to promote on: at 24 functions
    #: the 95 % interval of an accuracy is about ±13 points, at 50 about ±9.
    min_test_samples: int = 50

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> "GateRule":
        from .config import settings_from

        rule = cls(**settings_from(cls, values))
        if (values or {}).get("mcnemar_alpha", 0) is None:  # an explicit null switches the test off
            rule = replace(rule, mcnemar_alpha=None)
        return rule


def mcnemar(y: Sequence[int], pred_challenger: Sequence[int], pred_champion: Sequence[int]) -> dict[str, Any]:
    """Exact (binomial) McNemar test, one-sided in the challenger's favour."""
    from scipy.stats import binomtest

    y, a, b = (np.asarray(v, dtype=int) for v in (y, pred_challenger, pred_champion))
    only_challenger = int(((a == y) & (b != y)).sum())
    only_champion = int(((a != y) & (b == y)).sum())
    n = only_challenger + only_champion
    p = binomtest(only_challenger, n, 0.5, alternative="greater").pvalue if n else 1.0
    return {"challenger_only_correct": only_challenger, "champion_only_correct": only_champion,
            "p_value": float(p)}


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rule: GateRule,
           y: Sequence[int] | None = None, pred_challenger: Sequence[int] | None = None,
           pred_champion: Sequence[int] | None = None, smoke: bool = False) -> dict[str, Any]:
    """``{"promote", "reasons", ...numbers}`` for the challenger's metrics against the champion's.

    Whatever the numbers, a smoke run's model and a model judged on a test split smaller
    than ``min_test_samples`` are never promoted: the decision says so first.
    """
    decision = _decide(challenger, champion, rule, y, pred_challenger, pred_champion)
    refusals = []
    if smoke:
        refusals.append("refused: a smoke run (shrunk data and epochs) is never promoted; train without smoke")
    n = challenger.get("n")
    if isinstance(n, int) and n < rule.min_test_samples:
        refusals.append(f"refused: the test split has {n} functions, fewer than min_test_samples="
                        f"{rule.min_test_samples}; its figures are too uncertain to promote on (train on more data)")
    if refusals:
        decision.update(promote=False, reasons=refusals + decision["reasons"])
    decision["smoke"] = smoke
    return decision


def _decide(challenger: dict[str, Any], champion: dict[str, Any] | None, rule: GateRule,
            y: Sequence[int] | None, pred_challenger: Sequence[int] | None,
            pred_champion: Sequence[int] | None) -> dict[str, Any]:
    reasons: list[str] = []
    out: dict[str, Any] = {"rule": asdict(rule), "challenger": _core(challenger)}
    if champion is None:
        checks = [(challenger["accuracy"] >= rule.floor_accuracy, f"accuracy {challenger['accuracy']:.3f} vs floor {rule.floor_accuracy}"),
                  (challenger["f1"] >= rule.floor_f1, f"F1 {challenger['f1']:.3f} vs floor {rule.floor_f1}"),
                  (challenger["fpr"] <= rule.floor_max_fpr, f"FPR {challenger['fpr']:.3f} vs ceiling {rule.floor_max_fpr}")]
        promote = all(ok for ok, _ in checks)
        reasons = [("ok: " if ok else "fails: ") + text for ok, text in checks]
        return {**out, "promote": promote, "kind": "first_model_floors", "reasons": reasons}
    acc_gain = challenger["accuracy"] - champion["accuracy"]
    fpr_rise = challenger["fpr"] - champion["fpr"]
    out.update(champion=_core(champion), accuracy_gain=acc_gain, fpr_increase=fpr_rise, kind="champion_challenger")
    ok = True
    if acc_gain < rule.min_accuracy_gain:
        ok = False
        reasons.append(f"accuracy gain {acc_gain * 100:+.2f} pts < required {rule.min_accuracy_gain * 100:+.2f}")
    else:
        reasons.append(f"accuracy gain {acc_gain * 100:+.2f} pts")
    if fpr_rise > rule.max_fpr_increase:
        ok = False
        reasons.append(f"FPR rise {fpr_rise * 100:+.2f} pts > allowed {rule.max_fpr_increase * 100:+.2f}")
    else:
        reasons.append(f"FPR change {fpr_rise * 100:+.2f} pts")
    if rule.mcnemar_alpha is not None and y is not None and pred_champion is not None:
        test = mcnemar(y, pred_challenger, pred_champion)
        out["mcnemar"] = test
        if test["p_value"] >= rule.mcnemar_alpha:
            ok = False
            reasons.append(f"McNemar p={test['p_value']:.4f} not below {rule.mcnemar_alpha}")
        else:
            reasons.append(f"McNemar p={test['p_value']:.4f}")
    return {**out, "promote": ok, "reasons": reasons}


def _core(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("accuracy", "precision", "recall", "f1", "fpr", "roc_auc",
                                        "pairwise_accuracy", "n")}
