"""The SageMaker branch of each model's task group in ``streamguard_training``.

``choose_backend`` → (``train_local``) or (``stage_sagemaker`` → ``train_sagemaker`` →
``fetch_sagemaker_model``) → ``trained_model`` → evaluate / register / promote.

* ``stage_sagemaker`` copies the channels and the packaged code to S3 and
  returns the CreateTrainingJob request built by :mod:`streamguard_ml.sagemaker`;
* ``train_sagemaker`` is :class:`SageMakerTrainingJob`, Airflow's
  ``SageMakerTrainingOperator`` taught to re-attach: a retried task finds its
  job by the deterministic name and waits for it instead of launching another;
* ``fetch_sagemaker_model`` copies the job's ``model.tar.gz`` into the run layout.

The execution role comes from the AWS connection's ``extra.sagemaker_role_arn``,
else the Variable ``streamguard_sagemaker_role_arn`` — never from code.
"""

from __future__ import annotations

import math
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.sdk import get_current_context, task

from . import runtime

AWS_CONN_ID = "aws_default"
ROLE_EXTRA = "sagemaker_role_arn"
ROLE_VARIABLE = "streamguard_sagemaker_role_arn"


def _aws_hook() -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type="s3")


def role_arn(hook: Any) -> str:
    """The SageMaker execution role: the connection's extra, else the Variable ('' when neither)."""
    from airflow.sdk import Variable

    return hook.conn_config.extra_config.get(ROLE_EXTRA) or Variable.get(ROLE_VARIABLE, default="") or ""


def _in_group(context: Any, task_id: str) -> str:
    """``task_id`` inside the task group of the running task (each model type has its own)."""
    group = context["ti"].task_id.rpartition(".")[0]
    return f"{group}.{task_id}" if group else task_id


def _uses_sagemaker(context: Any) -> bool:
    return runtime.config(context).training_backend == "sagemaker"


@task.branch
def choose_backend() -> str:
    """``train_local`` or ``stage_sagemaker`` of this task group, as the ``training_backend`` Param says."""
    context = get_current_context()
    return _in_group(context, "stage_sagemaker" if _uses_sagemaker(context) else "train_local")


@task(multiple_outputs=True)
def stage_sagemaker(model_type: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """Stage inputs on S3; returns ``{"request", "fine_tuned_from"}`` (the request is the operator's config)."""
    from streamguard_ml.pipeline import champion_artifact
    from streamguard_ml.sagemaker import prepare_training_job, staging_root
    from streamguard_ml.store import S3Store

    context = get_current_context()
    cfg, store, run = runtime.config(context), runtime.store(context), runtime.run_id(context)
    hook = _aws_hook()
    init = champion_artifact(store, model_type) if context["params"].get("fine_tune_from_champion") else None
    staging = S3Store(staging_root(store, cfg), client=hook.get_conn())
    request = prepare_training_job(store, run, model_type, cfg, dataset.get("content_hash", ""), role_arn(hook),
                                   cfg.sagemaker.region or hook.conn_region_name, staging,
                                   init["artifact_uri"] if init else None)
    return {"request": request, "fine_tuned_from": init}


class SageMakerTrainingJob(SageMakerTrainingOperator):
    """``SageMakerTrainingOperator`` that re-attaches to its job when the task is retried.

    The request's name is deterministic, so before creating anything the
    operator describes that name (and its ``-r2``... successors): a job that is
    running or completed is waited for (deferred when configured) and returned;
    only after a failed or stopped job does it launch the next attempt, under
    the next deterministic name.  Never a timestamped duplicate.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(check_if_job_exists=False, **kwargs)

    def execute(self, context: Any) -> dict:
        from streamguard_ml.sagemaker import attempt_name

        self._apply_settings(context)
        base = self.config["TrainingJobName"]
        attempt, description = self._latest_attempt(base)
        if description is None:
            name = base
        elif description["TrainingJobStatus"] in self.hook.training_failed_states:
            name = attempt_name(base, attempt + 1)
            self.log.info("Training job %s ended %s (%s): launching %s.", description["TrainingJobName"],
                          description["TrainingJobStatus"], description.get("FailureReason", "no reason given"), name)
        else:
            self.log.info("Re-attaching to training job %s (%s) instead of launching another.",
                          description["TrainingJobName"], description["TrainingJobStatus"])
            return self._attach(description)
        self.config["TrainingJobName"] = name
        return super().execute(context)

    def _apply_settings(self, context: Any) -> None:
        """Deferral and polling from the run's ``sagemaker`` settings (a Param, so not known at parse time)."""
        from streamguard_ml.config import SageMakerSettings

        sm = SageMakerSettings.from_mapping((context.get("params") or {}).get("sagemaker") or {})
        if sm.deferrable is not None:
            self.deferrable = sm.deferrable
        self.check_interval = sm.check_interval_s
        budget = sm.max_wait_s if sm.spot else sm.max_runtime_s
        self.max_attempts = math.ceil(budget / self.check_interval) + 10

    def _latest_attempt(self, base: str) -> tuple[int, dict | None]:
        """(n, description) of the newest attempt that exists, or (0, None)."""
        from botocore.exceptions import ClientError

        from streamguard_ml.sagemaker import MAX_ATTEMPTS, attempt_name

        found: tuple[int, dict | None] = (0, None)
        for n in range(1, MAX_ATTEMPTS + 1):
            try:
                found = (n, self.hook.describe_training_job(attempt_name(base, n)))
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ValidationException":  # "could not find"
                    raise
                break
        return found

    def _attach(self, description: dict) -> dict:
        """Wait for a running job (in the triggerer when deferrable) and return it as the parent does."""
        name = description["TrainingJobName"]
        if description["TrainingJobStatus"] in self.hook.non_terminal_states and self.deferrable:
            self.defer(trigger=SageMakerTrigger(job_name=name, job_type="Training", waiter_delay=self.check_interval,
                                                waiter_max_attempts=self.max_attempts, aws_conn_id=self.aws_conn_id,
                                                region_name=self.region_name, verify=self.verify,
                                                botocore_config=self.botocore_config),
                       method_name="execute_complete")
        if description["TrainingJobStatus"] in self.hook.non_terminal_states:
            self.hook.check_training_status_with_log(name, self.hook.non_terminal_states,
                                                     self.hook.training_failed_states, True, self.check_interval,
                                                     self.max_ingestion_time)
        return self.serialize_result(name)


@task
def fetch_sagemaker_model(model_type: str, fine_tuned_from: dict[str, Any] | None,
                          training: dict[str, Any]) -> dict[str, Any]:
    """The finished job's ``model.tar.gz`` into ``runs/<run>/models/<type>/``; the local path's result shape."""
    from streamguard_ml.sagemaker import adopt_model
    from streamguard_ml.store import S3Store

    context = get_current_context()
    store, run = runtime.store(context), runtime.run_id(context)
    client = _aws_hook().get_conn()

    def read(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return S3Store(f"s3://{bucket}", client=client).read_bytes(key)

    result = adopt_model(store, run, model_type, training["Training"], read)
    result["fine_tuned_from"] = fine_tuned_from
    return result


@task(trigger_rule="none_failed_min_one_success")
def trained_model() -> dict[str, Any]:
    """Whichever backend ran: what evaluation and registration read.

    Only that backend's XCom is read (the same decision as ``choose_backend``): the
    skipped branch has none, and asking for it makes Airflow log an "XCom not found" error.
    """
    context = get_current_context()
    source = "fetch_sagemaker_model" if _uses_sagemaker(context) else "train_local"
    result = context["ti"].xcom_pull(task_ids=_in_group(context, source))
    if result is None:
        raise RuntimeError("neither training backend produced a model: check the train_* tasks of this group")
    return result
