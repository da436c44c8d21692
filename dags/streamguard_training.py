"""streamguard_training: ingest → preprocess (mapped over shards) → train GNN and
transformer in parallel → fit the taint-fusion detector on their validation scores →
each of the three: evaluate against its champion → register → promote.

Scheduled on the dataset ``streamguard_ingestion`` publishes (and triggered by hand
or by the retraining monitor): the ``dataset`` Param chooses between ingesting the
run's ``sources`` and adopting the published dataset without re-ingesting.

Training runs where ``training_backend`` says: ``local`` runs the entrypoint here;
``sagemaker`` stages the channels and code to S3 and runs a SageMaker training job
(``SageMakerTrainingOperator``, deferrable when configured), then fetches its
``model.tar.gz`` — both branches meet again before evaluation.

Declarative only: Params, wiring and schedule.  The work happens in the
``streamguard_ml`` library through the thin tasks in ``plugins/streamguard_airflow``;
nothing heavy (torch, transformers, torch_geometric) is imported at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task_group

from streamguard_airflow import dataset_tasks as d
from streamguard_airflow import sagemaker_training as sm
from streamguard_airflow import training_tasks as t
from streamguard_airflow.deploy_tasks import sagemaker_shipping
from streamguard_airflow.params import RUN, mlflow_tracking_uri_param, smoke_param, store_param
from streamguard_ml.config import CALIBRATION_METHODS, MODEL_TYPES, THRESHOLD_POLICIES, PipelineConfig

DEFAULTS = PipelineConfig()  # the embedded default, defined once in streamguard_ml.config

DATA, TRAINING, DECISION, SHIPPING = "Data", "Training", "Decision", "SageMaker and shipping"

PARAMS = {
    "sources": Param(list(DEFAULTS.sources), type="array", items={"type": "string"}, section=DATA,
                     description="Data sources as KIND:PATH — synthetic:COUNT, jsonl:PATH, sven:PATH (local or s3://)."),
    "jsonl_sources": Param([], type=["null", "array"], items={"type": "string"}, section=DATA,
                           description="Extra JSONL files ({id, code, label} per line), local paths or s3:// URIs."),
    "dataset": Param("auto", enum=["auto", "ingest", "published"], section=DATA,
                     description="ingest: read `sources`; published: train on the dataset streamguard_ingestion "
                                 "published; auto: published when the Asset started the run, else ingest."),
    "synthetic_train": Param(DEFAULTS.synthetic_train, type="integer", minimum=0, section=DATA,
                             description="Built-in synthetic functions (ten vulnerability classes) added to the "
                                         "training split when the sources hold real code; never validated or "
                                         "tested on."),
    "shard_size": Param(DEFAULTS.shard_size, type="integer", minimum=10, section=DATA,
                        description="Functions per preprocessing shard (one mapped task each)."),
    "feedback": Param([], type=["null", "array"], items={"type": "string"}, section=DATA,
                      description="Feedback batches (store URIs) to merge as labelled data; set by the monitor."),
    "training_backend": Param("local", enum=["local", "sagemaker"], section=TRAINING,
                              description="local: run the entrypoint here; sagemaker: a SageMaker training job."),
    "base_model": Param(DEFAULTS.base_model, type="string", section=TRAINING,
                        description="Transformer encoder: HF name (microsoft/codebert-base), local dir or s3:// URI."),
    "gnn_epochs": Param(DEFAULTS.gnn_epochs, type="integer", minimum=1, section=TRAINING,
                        description="Most GNN epochs (early stopping on validation ROC-AUC may end sooner)."),
    "transformer_epochs": Param(DEFAULTS.transformer_epochs, type="integer", minimum=1, section=TRAINING,
                                description="Transformer epochs (each is a pass over the training split)."),
    "batch_size": Param(DEFAULTS.batch_size, type="integer", minimum=1, section=TRAINING,
                        description="Functions per training batch (a vulnerable function and its fix share one)."),
    "seed": Param(DEFAULTS.seed, type="integer", section=TRAINING,
                  description="Seed of splits, sampling and initialisation: the same seed gives the same run."),
    "pair_loss_weight": Param(DEFAULTS.pair_loss_weight, type="number", minimum=0, section=TRAINING,
                              description="Weight of the margin ranking term: a vulnerable function scored above "
                                          "its own fix (0: off)."),
    "fine_tune_from_champion": Param(False, type="boolean", section=TRAINING,
                                     description="Start training from the deployed model's weights."),
    "threshold_policy": Param(DEFAULTS.threshold_policy, enum=list(THRESHOLD_POLICIES), section=DECISION,
                              description="How each version's decision threshold is chosen on validation: max_fpr "
                                          "(the highest recall within the max_fpr budget) or max_f1."),
    "max_fpr": Param(DEFAULTS.max_fpr, type="number", exclusiveMinimum=0, exclusiveMaximum=1, section=DECISION,
                     description="Validation false-positive budget of the max_fpr policy (0.05 = 5 %)."),
    "calibration": Param(DEFAULTS.calibration, enum=list(CALIBRATION_METHODS), section=DECISION,
                         description="How raw scores become calibrated probabilities (fitted on validation)."),
    "gate": Param({}, type=["null", "object"], section=DECISION,
                  description="Promotion rule overrides, e.g. {\"min_accuracy_gain\": 0.01}."),
    "sagemaker": Param({}, type=["null", "object"], section=SHIPPING,
                       description="SageMaker job settings (streamguard_ml.config.SageMakerSettings), e.g. "
                                   "{\"staging_uri\": \"s3://bucket/prefix\", \"instance_count\": 2, "
                                   "\"gnn_instance_type\": \"ml.g5.12xlarge\", \"spot\": true, \"deferrable\": true}."),
    "deploy_endpoint": Param(False, type="boolean", section=SHIPPING,
                             description="Deploy a newly promoted champion to a SageMaker real-time endpoint."),
    "export_model_registry": Param(False, type="boolean", section=SHIPPING,
                                   description="Export each registered version to SageMaker Model Registry."),
    "serving": Param({}, type=["null", "object"], section=SHIPPING,
                     description="SageMaker serving overrides: role_arn, image_uri, instance_type, instance_count, "
                                 "s3_prefix, endpoint_name, region."),
    "smoke": smoke_param("data and epochs"),
    "store": store_param(),
    "mlflow_tracking_uri": mlflow_tracking_uri_param(),
    "retrain_reasons": Param([], type=["null", "array"], items={"type": "string"}, section=RUN,
                             description="Why this run was triggered (recorded in lineage); set by the monitor."),
}


def judge_and_ship(model_type: str, trained: dict, dataset: dict) -> dict:
    """Evaluate against the champion, register, promote and (optionally) ship one trained model."""
    evaluation = t.evaluate(model_type, trained)
    registered = t.register(model_type, trained, evaluation, dataset)
    promoted = t.promote(registered, evaluation)
    sagemaker_shipping(promoted)
    return promoted


@task_group
def model_pipeline(model_type: str, dataset: dict) -> tuple:
    backend = sm.choose_backend()
    local = t.train_local(model_type, dataset)
    staged = sm.stage_sagemaker(model_type, dataset)
    job = sm.SageMakerTrainingJob(task_id="train_sagemaker", config=staged["request"], aws_conn_id=sm.AWS_CONN_ID)
    fetched = sm.fetch_sagemaker_model(model_type, staged["fine_tuned_from"], job.output)
    backend >> [local, staged]
    trained = sm.trained_model()
    [local, fetched] >> trained
    return trained, judge_and_ship(model_type, trained, dataset)


@task_group
def fusion_pipeline(dataset: dict, members: list) -> dict:
    """The taint-fusion detector: fitted on the members' validation scores, then judged like them."""
    trained = t.train_fusion(dataset, members)
    return judge_and_ship("fusion", trained, dataset)


@dag(
    dag_id="streamguard_training",
    schedule=d.PROCESSED_DATASET,  # and by hand / by the retraining monitor with a conf
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["streamguard", "training"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def streamguard_training() -> None:
    ingested, published = t.ingest(), d.use_published_dataset()
    d.choose_dataset() >> [ingested, published]
    shards = t.plan_shards(ingested)
    processed = t.preprocess_shard.expand(shard=shards)
    dataset = d.training_dataset()
    [t.finalize_dataset(processed), published] >> dataset
    pipelines = [model_pipeline.override(group_id=model_type)(model_type, dataset) for model_type in MODEL_TYPES]
    fused = fusion_pipeline.override(group_id="fusion")(dataset, [trained for trained, _ in pipelines])
    t.report([promoted for _, promoted in pipelines] + [fused])


streamguard_training()
