"""streamguard_ingestion: daily, pull the configured sources incrementally → preprocess (mapped over
shards) → publish the processed dataset as the ``streamguard_processed_dataset`` Asset.

Only samples the corpus does not hold yet count as new; a day with nothing new
stops after ingestion and publishes nothing.  ``streamguard_training`` is
scheduled on the Asset and trains on what was published.  Declarative only:
nothing heavy is imported at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag

from streamguard_airflow import dataset_tasks as d
from streamguard_airflow import training_tasks as t
from streamguard_airflow.params import smoke_param, store_param
from streamguard_ml.config import PipelineConfig

DEFAULTS = PipelineConfig()  # the embedded default, defined once in streamguard_ml.config

PARAMS = {
    "sources": Param(list(DEFAULTS.sources), type="array", items={"type": "string"}, section="Data",
                     description="Sources pulled every day as KIND:PATH — jsonl, sven, cvefixes (SQLite), "
                                 "osv/ghsa (advisory metadata), synthetic:COUNT; local paths or s3://."),
    "jsonl_sources": Param([], type=["null", "array"], items={"type": "string"}, section="Data",
                           description="Extra JSONL files or folders, local or s3://."),
    "base_model": Param(DEFAULTS.base_model, type="string", section="Preprocessing",
                        description="Tokenizer the published tokens are made with (the transformer's encoder)."),
    "shard_size": Param(DEFAULTS.shard_size, type="integer", minimum=10, section="Preprocessing",
                        description="Functions per preprocessing shard (one mapped task each)."),
    "seed": Param(DEFAULTS.seed, type="integer", section="Preprocessing",
                  description="Seed of the grouped split: the same seed gives the same split."),
    "smoke": smoke_param("the data"),
    "store": store_param(),
}


@dag(
    dag_id="streamguard_ingestion",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["streamguard", "data"],
    doc_md=__doc__,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
)
def streamguard_ingestion() -> None:
    ingested = d.ingest_new_samples()
    shards = t.plan_shards(ingested)
    d.has_new_samples(ingested) >> shards
    processed = t.preprocess_shard.expand(shard=shards)
    d.publish_dataset(t.finalize_dataset(processed))


streamguard_ingestion()
