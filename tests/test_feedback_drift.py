"""Feedback store and the drift criteria (unit level; the DAG loop is in test_retraining.py)."""

from __future__ import annotations

import json
from pathlib import Path
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from streamguard_ml import feedback as fb
from streamguard_ml.drift import ModelState, Thresholds, evaluate, psi, reference_profile

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
CODE = "def f(c, x):\n    c.execute('SELECT ' + x)\n"


def record(i, verdict="true_positive", score=0.9, ts=NOW, **extra):
    predicted = 1 if verdict in ("true_positive", "false_positive") else 0
    return {"id": str(i), "code": CODE, "model": "taint-flow-gnn", "version": 1, "score": score,
            "predicted": predicted, "verdict": verdict, "ts": ts.isoformat(), **extra}


def test_validation_names_the_problem():
    assert fb.validate(record(1)).true_label == 1
    assert fb.validate({**record(2, "false_positive"), "verdict": "fp"}).true_label == 0  # short alias
    cases = {"missing": {k: v for k, v in record(3).items() if k != "verdict"},
             "verdict": record(4, verdict="maybe"),
             "contradicts": {**record(5), "predicted": 0},
             "probability": record(6, score=1.5),
             "ISO-8601": {**record(7), "ts": "yesterday"},
             "code_hash": {k: v for k, v in record(8).items() if k != "code"}}
    for needle, rec in cases.items():
        with pytest.raises(ValueError, match=needle):
            fb.validate(rec)


def test_validation_checks_types_instead_of_coercing_them(store):
    """Issue 17 item 7: these crashed (code 5) or were silently changed (null id, version 1.9)."""
    cases = {"code must be a string": record(1, code=5),
             "id None": record(2, id=None), "model None": {**record(3), "model": None},
             "id ' '": record(4, id=" "), "id True": record(5, id=True),
             "version 1.9": record(6, version=1.9), "version True": record(7, version=True),
             "version 0": record(8, version=0), "score '0.9'": record(9, score="0.9"),
             "score True": record(10, score=True), "predicted 1.0": record(11, predicted=1.0),
             "ts 5": {**record(12), "ts": 5}, "verdict 1": record(13, verdict=1),
             "lone surrogate": record(14, code="def f():\n    return '\ud800'\n")}
    for needle, rec in cases.items():
        with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
            fb.validate(rec)
    assert fb.validate(record(15, version="3")).version == 3 and fb.validate(record(16, id=7)).id == "7"
    data = "".join(json.dumps(r) + "\n" for r in [record(20), record(21, code=5), record(22, id=None),
                                                   record(23, id=None), record(24, version=1.9)]).encode()
    result = fb.add_file(store, b"\xef\xbb\xbf" + data, "typed.jsonl", skip_invalid=True)
    assert (result["accepted"], result["rejected"]) == (1, 4)
    rejected = [json.loads(line) for line in Path(result["rejected_file"].removeprefix("file://")).read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 3, 4, 5] and all(r["detail"] for r in rejected)


def test_add_is_partitioned_idempotent_and_all_or_nothing(store):
    rows = [record(i, ts=NOW - timedelta(days=i % 2)) for i in range(6)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    first = fb.add_file(store, data, "f.jsonl")
    again = fb.add_file(store, data, "f.jsonl")
    assert first["accepted"] == 6 and len(first["partitions"]) == 2 and first["partitions"] == again["partitions"]
    assert len(fb.partitions(store)) == 2
    bad = data + b"{nope\n"
    with pytest.raises(fb.FeedbackError, match="line 7.*--skip-invalid"):
        fb.add_file(store, bad, "g.jsonl")
    partial = fb.add_file(store, bad, "g.jsonl", skip_invalid=True)
    assert partial["rejected"] == 1 and partial["rejected_file"]
    recent, keys = fb.since(store, NOW - timedelta(hours=1))
    assert {r.id for r in recent} == {"0", "2", "4"} and keys


def test_feedback_becomes_labelled_training_data(store):
    from streamguard_ml.sources import read_source

    fb.add(store, [fb.validate(record(1, "false_positive", 0.8)), fb.validate(record(2, "false_negative", 0.1)),
                   fb.validate({**{k: v for k, v in record(3).items() if k != "code"}, "code_hash": "ab"})])
    items = list(read_source(f"feedback:{store.uri('feedback')}"))
    labels = {i["id"]: i["label"] for i in items if isinstance(i, dict)}
    assert labels == {"fb-taint-flow-gnn-1": 0, "fb-taint-flow-gnn-2": 1}
    assert [i.reason for i in items if not isinstance(i, dict)] == ["missing_code"]


def test_psi():
    ref = [100, 200, 300, 400]
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-9)
    assert psi(ref, [400, 300, 200, 100]) > 0.2
    assert 0 < psi(ref, [110, 190, 310, 390]) < 0.02


def _state(records, baseline=None, trained_days_ago=1, reference=None):
    trained = NOW - timedelta(days=trained_days_ago)
    return ModelState("taint-flow-gnn", 1, trained, trained, baseline or {"accuracy": 0.95, "fpr": 0.02},
                      reference, [fb.validate(r) for r in records])


def _held(state, **t):
    return {c.name for c in evaluate(state, Thresholds(**{"min_feedback_for_rates": 20, **t}), NOW) if c.held}


def test_criteria_fire_on_their_own_evidence():
    healthy = [record(i, "true_positive" if i % 2 else "true_negative", 0.9 if i % 2 else 0.1) for i in range(40)]
    assert _held(_state(healthy)) == set()
    noisy = [record(i, "false_positive", 0.8) if i % 2 == 0 else record(i, "true_negative", 0.2) for i in range(40)]
    assert {"accuracy_drift", "fpr_rise"} <= _held(_state(noisy))
    assert "feedback_volume" in _held(_state(healthy), feedback_count=30)
    assert _held(_state(healthy, trained_days_ago=31)) == {"schedule"}
    few = noisy[:10]
    assert _held(_state(few)) == set()  # 10 verdicts are not enough for a rate


def test_distribution_drift_against_the_reference_profile():
    rng = np.random.default_rng(0)
    reference = reference_profile([CODE] * 200, rng.uniform(0, 0.3, 200), np.array([1, 2, 3] * 100))
    same = [record(i, "true_negative", float(s)) for i, s in enumerate(rng.uniform(0, 0.3, 60))]
    shifted = [record(i, "false_positive", float(s)) for i, s in enumerate(rng.uniform(0.7, 1.0, 60))]
    assert "score_drift" not in _held(_state(same, reference=reference), accuracy_drop=1, fpr_rise=1)
    assert "score_drift" in _held(_state(shifted, reference=reference), accuracy_drop=1, fpr_rise=1)
    assert "input_drift" in _held(_state(same, reference=reference), accuracy_drop=1, fpr_rise=1)  # other node types


def test_no_champion_means_nothing_to_monitor():
    state = ModelState("m", None, None, None, {}, None)
    assert all(not c.held and "no deployed" in c.detail for c in evaluate(state, Thresholds(), NOW))
