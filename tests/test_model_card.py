"""Model cards: intervals, figures, limits, and the card written for a registered version."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from streamguard_ml.evaluate import full_metrics
from streamguard_ml.model_card import bootstrap, run_inputs, wilson, write_model_card
from streamguard_ml.registry import Registry


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # Wilson 95 % for 8/10
    assert wilson(0, 0) is None


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_data():
    rng = np.random.default_rng(1)

    def sample(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(y * 0.6 + rng.normal(0.2, 0.25, n), 0, 1)

    small, large = bootstrap(*sample(60), 0.5), bootstrap(*sample(2000), 0.5)
    for name in ("f1", "roc_auc"):
        assert small[name][0] < small[name][1]
        assert large[name][1] - large[name][0] < (small[name][1] - small[name][0]) / 2


@pytest.fixture
def evaluated_run(store):
    """What evaluate/train leave in a run: predictions, metrics, training.json, dataset card, explanations."""
    rng = np.random.default_rng(0)
    n = 120
    y = np.array([1, 0] * (n // 2))
    prob = np.clip(np.where(y == 1, 0.75, 0.25) + rng.normal(0, 0.2, n), 0, 1)
    records = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "label": y, "pair_id": [f"p{i // 2}" for i in range(n)],
                            "cwe": ["CWE-89"] * 100 + ["CWE-78"] * 20})
    metrics = full_metrics(records, prob)
    preds = records.assign(prob=prob, pred=(prob >= 0.5).astype(int))
    buf = io.BytesIO()
    preds.to_parquet(buf, index=False)
    store.write_bytes("runs/r1/eval/gnn/challenger-predictions.parquet", buf.getvalue())
    history = [{"epoch": e, "loss": 1 / e, "train_acc": 0.6 + e / 20, "val_acc": 0.6 + e / 25, "val_f1": 0.55 + e / 25}
               for e in range(1, 5)]
    store.write_json("runs/r1/models/gnn/training.json", {"model_type": "gnn", "history": history,
                                                          "validation": {"accuracy": 0.8}, "train_samples": 500})
    store.write_json("runs/r1/processed/dataset_card.json", {
        "run": "r1", "content_hash": "abc123", "samples": 800, "augmented": 100, "pairs": 300,
        "per_split": {"train": {"total": 560, "vulnerable": 280}, "test": {"total": n, "vulnerable": n // 2}},
        "quarantine": {"total": 3}})
    store.write_json("runs/r1/eval/gnn/challenger-explanations.json", [
        {"id": "s0", "method": "ig", "score": 0.91, "lines": [{"line": 2, "attribution": 0.8}],
         "code": "def f(c, x):\n    c.execute('SELECT ' + x)\n", "vulnerable_lines": [2]}])
    from archive_support import FAKE_MODEL

    store.write_bytes("runs/r1/models/gnn/model.tar.gz", FAKE_MODEL)
    return metrics


def test_card_for_a_registered_version(store, evaluated_run):
    reg = Registry(store)
    mv = reg.register("taint-flow-gnn", store.uri("runs/r1/models/gnn/model.tar.gz"), evaluated_run,
                      lineage={"run": "r1", "sources": ["synthetic:1200"], "code_version": "0.1.0+abc"},
                      decision={"promote": True, "kind": "first_model_floors", "reasons": ["ok: accuracy 0.9"]})
    uris = write_model_card(store, reg.card_prefix(mv.model, mv.version), mv, **run_inputs(store, "r1", "gnn"))
    assert set(uris) == {"json", "markdown", "confusion_matrix", "roc", "pr", "reliability", "training"}
    import matplotlib.image as mpimg

    for name in ("confusion_matrix", "roc", "pr", "reliability", "training"):
        png = store.read_bytes(store.key_of(uris[name]))
        height, width = mpimg.imread(io.BytesIO(png)).shape[:2]
        assert png.startswith(b"\x89PNG") and width > 200 and height > 200
    card = json.loads(store.read_bytes(store.key_of(uris["json"])))
    acc = card["metrics_ci"]["accuracy"]
    assert acc["ci"][0] < acc["value"] < acc["ci"][1] and acc["method"] == "wilson"
    assert card["metrics_ci"]["f1"]["ci"][0] < card["metrics_ci"]["f1"]["value"] < card["metrics_ci"]["f1"]["ci"][1]
    assert card["confusion_matrix"] == {k: evaluated_run[k] for k in ("tp", "fp", "tn", "fn")}
    assert card["data"]["content_hash"] == "abc123" and card["training"]["epochs"] == 4
    limits = " ".join(card["known_limits"])
    assert "synthetic" in limits and "CWE-78: only 20 test samples" in limits and "120 samples" in limits
    md = store.read_bytes(store.key_of(uris["markdown"])).decode()
    for needle in ("# Model card — taint-flow-gnn v1", "## Metrics on the test split", "![ROC curve](roc_curve.png)",
                   "## Explanation examples", ">>   2", "## Known limits", "| CWE-89 |", "ok: accuracy 0.9"):
        assert needle in md, needle


def test_card_without_evaluation_says_what_is_missing(store, tmp_path):
    from archive_support import FAKE_MODEL

    (tmp_path / "m.tar.gz").write_bytes(FAKE_MODEL)
    mv = Registry(store).register("imported", str(tmp_path / "m.tar.gz"), {"accuracy": 0.9})
    uris = write_model_card(store, "cards/x", mv)
    assert set(uris) == {"json", "markdown"}
    assert "curves are missing" in store.read_bytes("cards/x/model_card.md").decode()


def test_card_shows_the_operating_point_calibration_and_where_the_test_data_came_from(store, evaluated_run):
    from streamguard_ml.evaluate import split_provenance

    metrics = {**evaluated_run, "threshold": 0.62, "at_0.5": {k: evaluated_run[k] for k in ("f1", "fpr", "accuracy")},
               "calibration": {"method": "temperature", "brier_before": 0.21, "brier_after": 0.17,
                               "ece_before": 0.12, "ece_after": 0.04, "bins": 10},
               "test_data": split_provenance(pd.DataFrame({"source": ["synthetic"] * 120}))}
    reg = Registry(store)
    mv = reg.register("taint-flow-gnn", store.uri("runs/r1/models/gnn/model.tar.gz"), metrics,
                      lineage={"run": "r1", "sources": ["synthetic:1200"]})
    mv.operating_point = {"threshold": 0.62, "policy": "max_fpr", "max_fpr": 0.05,
                          "validation": {"n": 84, "recall": 0.6, "precision": 0.9, "fpr": 0.048, "f1": 0.72}}
    uris = write_model_card(store, "cards/op", mv, **run_inputs(store, "r1", "gnn"))
    md = store.read_bytes("cards/op/model_card.md").decode()
    for needle in ("## Operating point", "Threshold **0.620**", "`max_fpr`", "within 0.05", "On validation (84",
                   "at threshold 0.620", "| at 0.5 |", "## Calibration (`temperature`", "| test | 0.210 | 0.170 |",
                   "do NOT measure quality on real code", "![Reliability diagram](reliability.png)"):
        assert needle in md, needle
    card = json.loads(store.read_bytes("cards/op/model_card.json"))
    assert card["operating_point"]["threshold"] == 0.62 and "reliability" in uris
    assert not any("not chosen on validation" in limit for limit in card["known_limits"])
