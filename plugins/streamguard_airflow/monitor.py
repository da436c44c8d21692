"""Operators and tasks of ``streamguard_retraining_monitor``: criterion sensors and the decision.

Each sensor watches one retraining criterion of :mod:`streamguard_ml.drift` in
*reschedule* mode (it frees its worker slot between pokes).  A criterion that
does not hold before the sensor's timeout ends as *skipped* (soft fail), so the
decision task — which runs whatever happened upstream — sees exactly the
criteria that held.  Timeout and poke interval are Params, read when the sensor
runs, so they can be tuned from the UI without touching code.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue, get_current_context, task

from . import runtime

log = logging.getLogger(__name__)


def _thresholds(params: dict[str, Any]) -> Any:
    from streamguard_ml.drift import Thresholds

    return Thresholds.from_mapping(params)


class RetrainingCriterionSensor(BaseSensorOperator):
    """Succeeds when any of ``criteria`` holds for any monitored model."""

    ui_color = "#f4d58d"

    def __init__(self, *, criteria: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("soft_fail", True)
        super().__init__(**kwargs)
        self.criteria = list(criteria)

    def execute(self, context: Any) -> Any:
        params = context["params"]
        self.timeout = timedelta(minutes=float(params.get("sensor_timeout_minutes", 60))).total_seconds()
        self.poke_interval = timedelta(minutes=float(params.get("poke_interval_minutes", 10))).total_seconds()
        return super().execute(context)

    def poke(self, context: Any) -> PokeReturnValue:
        from streamguard_ml.drift import check

        decision = check(runtime.store(context), _thresholds(context["params"]), only=self.criteria)
        for c in decision["criteria"]:
            log.info("%s %s: %s", "HOLDS" if c["held"] else "no", c["name"], f"{c['model']}: {c['detail']}")
        held = [c for c in decision["criteria"] if c["held"]]
        return PokeReturnValue(is_done=bool(held), xcom_value={"held": held})


@task(trigger_rule="all_done")
def decide(sensor_task_ids: list[str]) -> dict[str, Any]:
    """Merge what the sensors found (plus a person's force), and claim the day's one retraining."""
    from streamguard_ml.drift import FORCED_REASON, Criterion, check, claim_daily_slot

    context = get_current_context()
    params = context["params"]
    store = runtime.store(context)
    sensed = [context["ti"].xcom_pull(task_ids=task_id) for task_id in sensor_task_ids]  # None when skipped
    full = check(store, _thresholds(params))
    reasons = [Criterion(**c).reason() for s in sensed if s for c in s["held"]]
    if params.get("force_retrain"):
        reasons.append(FORCED_REASON)
    decision = {**full, "reasons": reasons, "should_retrain": bool(reasons)}
    checked_at = datetime.fromisoformat(decision["checked_at"])
    day = checked_at.date().isoformat()
    decision["trigger_run_id"] = f"retrain__{day}"
    if decision["should_retrain"] and not claim_daily_slot(store, decision, checked_at):
        decision.update(should_retrain=False, blocked="a retraining was already triggered today "
                        f"({day}); at most one per day")
    decision["conf"] = {"retrain_reasons": reasons, "feedback": decision["feedback"],
                        "fine_tune_from_champion": True, "champions": decision["champions"]}
    store.write_json(f"monitor/decisions/{day}/{runtime.run_id(context).replace(':', '-')}.json", decision)
    return decision


@task.branch
def route(decision: dict[str, Any]) -> str:
    return "trigger_training" if decision["should_retrain"] else "no_retraining"


@task
def no_retraining(decision: dict[str, Any]) -> str:
    """End cleanly, saying why not."""
    why = decision.get("blocked") or "no criterion held: " + "; ".join(
        f"{c['model']}: {c['name']}: {c['detail']}" for c in decision["criteria"])
    log.info("not retraining — %s", why)
    return why
