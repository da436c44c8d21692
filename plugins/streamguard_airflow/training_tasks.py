"""Tasks of ``streamguard_training``: each calls one ``streamguard_ml.pipeline`` step.

They pass URIs and small dicts through XCom (never data or models) and are
idempotent, so a retry or a re-run of the same DAG run rewrites the same
artifacts and re-uses the same registry version.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import get_current_context, task

from . import runtime


def _ctx() -> tuple[Any, Any, str]:
    context = get_current_context()
    return runtime.config(context), runtime.store(context), runtime.run_id(context)


@task
def ingest() -> dict[str, Any]:
    from streamguard_ml.pipeline import ingest_step

    cfg, store, run = _ctx()
    return ingest_step(store, run, cfg)


@task
def plan_shards(ingested: dict[str, Any]) -> list[dict[str, Any]]:
    """Splits are assigned here; the returned list drives dynamic task mapping."""
    from streamguard_ml.pipeline import plan_step

    cfg, store, run = _ctx()
    return plan_step(store, run, cfg)


@task(map_index_template="{{ shard_label }}")
def preprocess_shard(shard: dict[str, Any]) -> dict[str, Any]:
    from streamguard_ml.pipeline import shard_step

    context = get_current_context()
    context["shard_label"] = f"{shard['split']}-{shard['index']:05d}"  # type: ignore[typeddict-unknown-key]
    cfg, store, run = _ctx()
    return shard_step(store, run, shard, cfg)


@task
def finalize_dataset(shards: list[dict[str, Any]]) -> dict[str, Any]:
    from streamguard_ml.pipeline import finalize_step

    cfg, store, run = _ctx()
    return finalize_step(store, run, cfg)


@task
def train_local(model_type: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """The local backend: runs ``python -m streamguard_ml.train`` with SageMaker's environment."""
    from streamguard_ml.pipeline import champion_artifact, train_step

    cfg, store, run = _ctx()
    params = get_current_context()["params"]
    init = champion_artifact(store, model_type) if params.get("fine_tune_from_champion") else None
    return train_step(store, run, model_type, cfg, dataset, init)


@task
def train_fusion(dataset: dict[str, Any], trained: list[dict[str, Any]]) -> dict[str, Any]:
    """The fusion detector, fitted on validation from the run's trained GNN and transformer."""
    from streamguard_ml.pipeline import fusion_step

    cfg, store, run = _ctx()
    return fusion_step(store, run, cfg, dataset, trained)


@task
def evaluate(model_type: str, trained: dict[str, Any]) -> dict[str, Any]:
    """Challenger and champion on the same test split → metrics and the promotion decision."""
    from streamguard_ml.pipeline import evaluate_step

    cfg, store, run = _ctx()
    gate = get_current_context()["params"].get("gate") or {}
    result = evaluate_step(store, run, model_type, trained["model_uri"], gate, cfg.explain_samples, cfg.smoke)
    return {k: result[k] for k in ("model_type", "metrics", "decision", "metrics_uri")}


@task
def register(model_type: str, trained: dict[str, Any], evaluation: dict[str, Any],
             dataset: dict[str, Any]) -> dict[str, Any]:
    from streamguard_ml.pipeline import register_step

    cfg, store, run = _ctx()
    return register_step(store, run, model_type, trained, evaluation, dataset, cfg)


@task
def promote(registered: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    from streamguard_ml.pipeline import promote_step

    _, store, _ = _ctx()
    result = promote_step(store, registered, evaluation)
    return {**result, "artifact_uri": registered["artifact_uri"], "metrics": evaluation["metrics"]}


@task
def report(results: list[dict[str, Any]]) -> list[str]:
    """Say where to look: printed at the end of `airflow dags test` and kept in the task log."""
    from streamguard_ml.pipeline import summary_lines

    _, store, run = _ctx()
    lines = summary_lines(store, run, results)
    for line in lines:
        print(line, flush=True)
    return lines
