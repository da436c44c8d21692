"""streamguard_retraining_monitor: daily sensors over analyst feedback and drift; when any
retraining criterion holds (or a person forces it) it triggers ``streamguard_training`` with a
conf naming the reasons, the feedback to merge and the champion to fine-tune from.

Sensors run in reschedule mode (no worker slot held while waiting); a criterion that does
not hold before ``sensor_timeout_minutes`` is skipped. At most one retraining per day.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag

from streamguard_airflow.monitor import RetrainingCriterionSensor, decide, no_retraining, route
from streamguard_airflow.params import store_param
from streamguard_ml.config import Thresholds

SENSORS = {
    "wait_for_feedback_volume": ["feedback_volume"],
    "wait_for_accuracy_drift": ["accuracy_drift"],
    "wait_for_fpr_rise": ["fpr_rise"],
    "wait_for_distribution_drift": ["score_drift", "input_drift"],
    "wait_for_schedule": ["schedule"],
}

LIMITS = Thresholds()  # the defaults live in one typed place

PARAMS = {
    "force_retrain": Param(False, type="boolean", section="Run", description="Retrain now, whatever the criteria say."),
    "feedback_count": Param(LIMITS.feedback_count, type="integer", minimum=1, section="Criteria",
                            description="New verdicts since the champion."),
    "accuracy_drop": Param(LIMITS.accuracy_drop, type="number", minimum=0, section="Criteria",
                           description="Live accuracy drop vs baseline."),
    "fpr_rise": Param(LIMITS.fpr_rise, type="number", minimum=0, section="Criteria",
                      description="Live false-positive-rate rise vs baseline."),
    "psi": Param(LIMITS.psi, type="number", minimum=0, section="Criteria",
                 description="Population stability index threshold."),
    "max_days": Param(LIMITS.max_days, type="integer", minimum=1, section="Criteria",
                      description="Retrain when the last training is this old."),
    "min_feedback_for_rates": Param(LIMITS.min_feedback_for_rates, type="integer", minimum=1, section="Criteria",
                                    description="Verdicts needed for a live rate."),
    "sensor_timeout_minutes": Param(60, type="number", minimum=0, section="Sensors",
                                    description="How long each criterion sensor waits before giving up for the day."),
    "poke_interval_minutes": Param(10, type="number", minimum=0, section="Sensors",
                                   description="How often each sensor looks again."),
    "store": store_param(),
}


@dag(
    dag_id="streamguard_retraining_monitor",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    render_template_as_native_obj=True,
    tags=["streamguard", "monitoring"],
    doc_md=__doc__,
)
def streamguard_retraining_monitor() -> None:
    sensors = [RetrainingCriterionSensor(task_id=task_id, criteria=criteria) for task_id, criteria in SENSORS.items()]
    decision = decide(list(SENSORS))
    sensors >> decision
    trigger = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id="streamguard_training",
        trigger_run_id="{{ ti.xcom_pull(task_ids='decide')['trigger_run_id'] }}",
        conf="{{ ti.xcom_pull(task_ids='decide')['conf'] }}",
        skip_when_already_exists=True,
    )
    route(decision) >> [trigger, no_retraining(decision)]


streamguard_retraining_monitor()
