"""Calibration and the operating point: fitted on validation, stored with the model, used everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard_ml import calibration, thresholds


def _overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and log-odds 4x too large: a classifier that ranks well and says 0.99 too often."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    true_logit = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, n)
    return y, 4 * true_logit


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_lowers_brier_and_ece_and_keeps_the_ranking(method):
    from sklearn.metrics import roc_auc_score

    y, z = _overconfident()
    fitted = calibration.fit(method, y[:200], z[:200])
    raw, cal = calibration.sigmoid(z[200:]), fitted.apply(z[200:])
    assert calibration.brier(y[200:], cal) < calibration.brier(y[200:], raw)
    assert calibration.expected_calibration_error(y[200:], cal) < calibration.expected_calibration_error(y[200:], raw)
    order = np.argsort(z[200:])
    assert np.all(np.diff(cal[order]) >= -1e-12)  # monotone
    if method != "isotonic":  # isotonic may tie scores; the smooth maps keep AUC exactly
        assert roc_auc_score(y[200:], cal) == pytest.approx(roc_auc_score(y[200:], raw))


def test_temperature_is_above_one_for_overconfident_scores_and_round_trips():
    y, z = _overconfident()
    fitted = calibration.fit("temperature", y, z)
    assert fitted.params["temperature"] > 2
    again = calibration.Calibrator.from_dict(fitted.to_dict())
    assert np.allclose(again.apply(z), fitted.apply(z))


def test_single_class_validation_and_old_models_keep_raw_scores():
    z = np.array([-2.0, 0.0, 3.0])
    assert calibration.fit("temperature", [1, 1, 1], z).method == "none"
    assert np.allclose(calibration.Calibrator.from_dict(None).apply(z), calibration.sigmoid(z))
    with pytest.raises(ValueError, match="calibration"):
        calibration.fit("magic", [0, 1, 1], z)


def test_ece_of_a_calibrated_predictor_is_small():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p).astype(int)
    assert calibration.expected_calibration_error(y, p) < 0.02
    assert calibration.expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.15


def _brute_force(y: np.ndarray, p: np.ndarray, budget: float) -> tuple[float, float]:
    """Best validation recall within the FPR budget, and the best F1, over every cut."""
    best_recall, best_f1 = 0.0, 0.0
    for t in np.unique(np.concatenate([p, [np.inf]])):
        pred = p >= t
        tp, fp = (pred & (y == 1)).sum(), (pred & (y == 0)).sum()
        recall, fpr = tp / (y == 1).sum(), fp / (y == 0).sum()
        if fpr <= budget:
            best_recall = max(best_recall, recall)
        if tp:
            best_f1 = max(best_f1, 2 * tp / (2 * tp + fp + (y == 1).sum() - tp))
    return best_recall, best_f1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_fpr_and_max_f1_pick_what_brute_force_finds(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    p = calibration.sigmoid(np.where(y == 1, 0.8, -0.8) + rng.normal(0, 1, 120))
    recall, f1 = _brute_force(y, p, 0.05)
    point = thresholds.choose(y, p, "max_fpr", 0.05)
    assert point.validation["fpr"] <= 0.05 and point.validation["recall"] == pytest.approx(recall)
    assert point.policy == "max_fpr" and point.max_fpr == 0.05
    assert thresholds.choose(y, p, "max_f1").validation["f1"] == pytest.approx(f1)


def test_the_threshold_sits_between_validation_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    point = thresholds.choose(y, p, "max_fpr", 0.0)
    assert point.threshold == pytest.approx(0.45) and point.validation["recall"] == 1.0


def test_an_unreachable_budget_flags_nothing_and_says_so():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.1])
    point = thresholds.choose(y, p, "max_fpr", 0.01)
    assert point.threshold > 0.9 and point.validation["recall"] == 0.0 and "nothing is flagged" in point.note
    assert thresholds.choose([1, 1], [0.2, 0.9]).threshold == 0.5  # one class: nothing to choose from
    with pytest.raises(ValueError, match="threshold_policy"):
        thresholds.choose(y, p, "max_accuracy")
