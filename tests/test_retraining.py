"""The retraining loop end to end, with real DAGs: drift triggers training, no drift does not,
a second run the same day does not trigger again, and the triggered training honours the conf."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streamguard_ml import feedback as fb
from streamguard_ml.store import LocalStore

REPO = Path(__file__).resolve().parent.parent
FAST_SENSORS = {"sensor_timeout_minutes": 0.02, "poke_interval_minutes": 0.01}


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]


def _training_runs(run_id):
    from airflow.models import DagRun

    return [r for r in DagRun.find(dag_id="streamguard_training") if r.run_id == run_id]


def _monitor(store_root, **params):
    run = _dag("streamguard_retraining_monitor").test(run_conf={"store": str(store_root), **FAST_SENSORS, **params})
    assert str(run.state).endswith("success"), run.state
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    day = datetime.now(timezone.utc).date().isoformat()
    decisions = sorted((store_root / "monitor" / "decisions" / day).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return states, json.loads(decisions[-1].read_text())


def _analyst_feedback(store_root, n=60):
    """Analysts reject most findings of the champion: false positives on safe code."""
    from streamguard_ml.sources.synthetic import generate_records

    safe = [r for r in generate_records(4 * n, seed=99) if r["label"] == 0][:n]
    now = datetime.now(timezone.utc).isoformat()
    rows = [{"id": f"f{i}", "code": r["code"], "model": model, "version": 1, "score": 0.9, "predicted": 1,
             "verdict": "false_positive", "ts": now}
            for i, r in enumerate(safe) for model in ("taint-flow-gnn", "sql-intent-transformer")]
    fb.add(LocalStore(store_root), [fb.validate(r) for r in rows])


@pytest.mark.slow
def test_retraining_loop(smoke_training, tiny_base_model):
    store_root, _ = smoke_training
    day = datetime.now(timezone.utc).date().isoformat()
    run_id = f"retrain__{day}"

    states, decision = _monitor(store_root)
    assert decision["should_retrain"] is False and states["no_retraining"].endswith("success")
    assert states["trigger_training"].endswith("skipped") and not _training_runs(run_id)
    assert all(states[s].endswith("skipped") for s in states if s.startswith("wait_for_"))

    _analyst_feedback(store_root)
    states, decision = _monitor(store_root, min_feedback_for_rates=20)
    assert decision["should_retrain"] is True
    assert any("fpr_rise" in r for r in decision["reasons"]) and any("accuracy_drift" in r for r in decision["reasons"])
    assert states["wait_for_fpr_rise"].endswith("success") and states["trigger_training"].endswith("success")
    (triggered,) = _training_runs(run_id)
    conf = triggered.conf
    assert conf["fine_tune_from_champion"] is True and conf["feedback"] and conf["retrain_reasons"]

    states, again = _monitor(store_root, min_feedback_for_rates=20)
    assert again["should_retrain"] is False and "already triggered today" in again["blocked"]
    assert states["trigger_training"].endswith("skipped") and len(_training_runs(run_id)) == 1

    # The triggered training honours the conf: feedback becomes data, training starts from the champion.
    from streamguard_ml.registry import Registry

    run = _dag("streamguard_training").test(run_conf={
        **conf, "smoke": True, "base_model": tiny_base_model, "store": str(store_root)})
    assert str(run.state).endswith("success")
    reg = Registry(LocalStore(store_root))
    new = reg.latest("taint-flow-gnn")
    assert new.version == 2
    assert new.lineage["fine_tuned_from"]["version"] == 1 and new.lineage["retrain_reasons"] == conf["retrain_reasons"]
    assert any(s.startswith("feedback:") for s in new.lineage["sources"])
    ingest_reports = [json.loads(p.read_text()) for p in (store_root / "runs").glob("*/ingest/report.json")]
    assert any(any(k.startswith("feedback:") and v >= 60 for k, v in r["inputs_per_source"].items())
               for r in ingest_reports)
    assert new.decision["kind"] == "champion_challenger" and new.decision["promote"] is False
    assert new.smoke and new.decision["reasons"][0].startswith("refused: a smoke run")  # never promoted
    assert reg.champion("taint-flow-gnn").version == 1
    assert new.decision["champion_version"] == 1  # judged against the champion on the same test split
