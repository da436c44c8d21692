"""Metrics (pair-wise accuracy, FPR) and the champion/challenger gate."""

from __future__ import annotations

import pytest

from streamguard_ml.evaluate import classification_metrics, pairwise_accuracy
from streamguard_ml.promotion import GateRule, decide, mcnemar


def test_classification_metrics_match_hand_counts():
    m = classification_metrics([1, 1, 0, 0, 0], [0.9, 0.2, 0.8, 0.1, 0.3])
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(0.6) and m["fpr"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(4 / 6)  # 4 of 6 positive/negative pairs ranked right


def test_pairwise_accuracy_needs_both_members_right():
    pairs = ["a", "a", "b", "b", "c", "c", None]
    labels = [1, 0, 1, 0, 1, 0, 1]
    pred = [1, 0, 1, 1, 0, 0, 1]
    out = pairwise_accuracy(pairs, labels, pred)
    assert out == {"pairwise_accuracy": pytest.approx(1 / 3), "pairs": 3, "pairs_correct": 1}


def test_first_model_needs_floors():
    good = {"accuracy": 0.9, "f1": 0.88, "fpr": 0.05}
    assert decide(good, None, GateRule())["promote"] is True
    assert decide({**good, "fpr": 0.5}, None, GateRule())["promote"] is False


def test_challenger_rule_and_mcnemar():
    y = [1] * 50 + [0] * 50
    champion_pred = [1] * 40 + [0] * 10 + [0] * 40 + [1] * 10     # 80 % right
    challenger_pred = [1] * 50 + [0] * 48 + [1] * 2                 # 98 % right
    champ = {"accuracy": 0.80, "f1": 0.8, "fpr": 0.20}
    chal = {"accuracy": 0.98, "f1": 0.98, "fpr": 0.04}
    d = decide(chal, champ, GateRule(), y, challenger_pred, champion_pred)
    assert d["promote"] is True and d["mcnemar"]["p_value"] < 0.001
    small = decide({**chal, "accuracy": 0.805}, champ, GateRule(), y, challenger_pred, champion_pred)
    assert small["promote"] is False and "accuracy gain" in small["reasons"][0]
    worse_fpr = decide({**chal, "fpr": 0.21}, champ, GateRule())
    assert worse_fpr["promote"] is False
    same = mcnemar(y, champion_pred, champion_pred)
    assert same["p_value"] == 1.0


def test_gate_rule_from_params():
    assert GateRule.from_mapping({"min_accuracy_gain": 0.02, "unrelated": 1}).min_accuracy_gain == 0.02
    assert GateRule.from_mapping({"mcnemar_alpha": None}).mcnemar_alpha is None
    assert GateRule.from_mapping(None) == GateRule()


def test_pair_ranking_counts_vulnerable_above_its_own_fix():
    from streamguard_ml.evaluate import pair_ranking

    pairs = ["a", "a", "b", "b", "c", "c", None]
    labels = [1, 0, 1, 0, 1, 0, 1]
    assert pair_ranking(pairs, labels, [0.9, 0.8, 0.3, 0.1, 0.2, 0.2, 0.0]) == pytest.approx((1 + 1 + 0.5) / 3)
    assert pair_ranking([None, None], [1, 0], [0.9, 0.1]) is None


def _records(sources):
    import pandas as pd

    n = len(sources)
    return pd.DataFrame({"label": [i % 2 for i in range(n)], "pair_id": [f"p{i // 2}" for i in range(n)],
                         "cwe": ["CWE-89"] * n, "source": sources})


def test_metrics_are_taken_at_the_versions_threshold_and_repeated_at_one_half():
    import numpy as np

    from streamguard_ml.calibration import Calibrator
    from streamguard_ml.evaluate import score_metrics
    from streamguard_ml.inference import Scores
    from streamguard_ml.thresholds import OperatingPoint

    class Model:  # what score_metrics reads of a LoadedModel
        threshold, calibrator = 0.3, Calibrator("temperature", {"temperature": 2.0})
        operating_point = OperatingPoint(0.3, "max_fpr", 0.05, {"n": 10})

    raw = np.array([0.2, 0.4, 0.1, 0.6, 0.35, 0.9])
    scores = Scores(raw, None, np.log(raw / (1 - raw)), raw)
    m = score_metrics(_records(["sven"] * 6), scores, Model())
    assert m["threshold"] == 0.3 and (m["tp"], m["fp"]) == (3, 1)
    assert (m["at_0.5"]["tp"], m["at_0.5"]["fp"]) == (2, 0)
    assert m["operating_point"]["policy"] == "max_fpr" and not m["operating_point"]["overridden"]
    assert set(m["calibration"]) >= {"brier_before", "brier_after", "ece_before", "ece_after"}
    identity = m["test_data"].pop("content_hash")
    assert len(identity) == 64 and identity == score_metrics(_records(["sven"] * 6), scores, Model())[
        "test_data"]["content_hash"]
    assert m["test_data"] == {"samples": 6, "sources": {"sven": 6}, "synthetic": 0, "real": 6,
                              "synthetic_only": False, "statement": "Test split: 6 real functions (6 sven)."}
    assert score_metrics(_records(["sven"] * 6), scores, Model(), threshold=0.5)["operating_point"]["overridden"]


def test_synthetic_only_test_splits_say_they_do_not_measure_real_code():
    from streamguard_ml.evaluate import split_provenance

    synthetic = split_provenance(_records(["synthetic"] * 4))
    assert synthetic["synthetic_only"] and "do NOT measure quality on real code" in synthetic["statement"]
    assert "sources=" in synthetic["statement"]  # ...and says how to train on real data
    mixed = split_provenance(_records(["synthetic", "sven", "sven", "jsonl"]))
    assert not mixed["synthetic_only"] and "1 are synthetic" in mixed["statement"]
