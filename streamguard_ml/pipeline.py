"""The stages of a training run as store-to-store steps (what DAG tasks and the CLI call).

Each step reads what the previous one wrote to the store and returns a small,
JSON-able dict (URIs and counts) — exactly what Airflow passes through XCom.
Every step is idempotent: re-running it for the same run rewrites the same
artifacts and never creates a second registry version.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from . import code_version, layout
from .config import REGISTRY_NAMES, PipelineConfig
from .store import Store

log = logging.getLogger(__name__)


def ingest_step(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    from .ingest import ingest

    return ingest(store, run, cfg.all_sources(), cfg.limits)


def plan_step(store: Store, run: str, cfg: PipelineConfig) -> list[dict[str, Any]]:
    from .preprocess import plan

    return plan(store, run, cfg)


def shard_step(store: Store, run: str, shard: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    from .preprocess import process_shard

    return process_shard(store, run, shard["split"], int(shard["index"]), cfg)


def finalize_step(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    from .preprocess import finalize

    return finalize(store, run, cfg)


def ingest_new_step(store: Store, run: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Incremental ingestion (the daily DAG): only what earlier runs have not taken in."""
    from .incremental import ingest_new

    return ingest_new(store, run, cfg.sources, cfg.limits)


def publish_step(store: Store, run: str, dataset: dict[str, Any]) -> dict[str, Any]:
    from .publication import publish

    return publish(store, run, dataset)


def adopt_step(store: Store, run: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``run`` on a published dataset (``record``, else the latest publication)."""
    from .publication import adopt, latest

    record = record or latest(store)
    log.info("run %s trains on the dataset published by run %s (content %s)", layout.run_key(run),
             record["run"], record["content_hash"][:12])
    return adopt(store, run, record)


def champion_artifact(store: Store, model_type: str) -> dict[str, Any] | None:
    """The deployed version to fine-tune from (``{"version", "artifact_uri"}``), if any."""
    from .registry import Registry

    champ = Registry(store).champion(REGISTRY_NAMES[model_type])
    return {"version": champ.version, "artifact_uri": champ.artifact_uri} if champ else None


def train_step(store: Store, run: str, model_type: str, cfg: PipelineConfig, dataset: dict[str, Any],
               init_from: dict[str, Any] | None = None) -> dict[str, Any]:
    from .backends import train_local

    result = train_local(store, run, model_type, cfg, init_from["artifact_uri"] if init_from else None,
                         dataset.get("content_hash", ""))
    result["fine_tuned_from"] = init_from
    return result


def fusion_step(store: Store, run: str, cfg: PipelineConfig, dataset: dict[str, Any],
                trained: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fit the fusion detector on the validation split, from this run's trained members.

    It always runs on the local backend: a logistic regression over the members' scores
    is seconds of CPU work, not worth a SageMaker job.
    """
    from .backends import train_local

    members = {t["model_type"]: t["model_uri"] for t in trained if t and t.get("model_uri")}
    result = train_local(store, run, "fusion", cfg, None, dataset.get("content_hash", ""), members)
    result["fine_tuned_from"] = None
    result["members"] = members
    return result


def evaluate_step(store: Store, run: str, model_type: str, model_uri: str,
                  gate: dict[str, Any] | None = None, explain_samples: int = 0, smoke: bool = False) -> dict[str, Any]:
    """Challenger and champion on the same test split, and the promotion decision (never promote for ``smoke``)."""
    from .evaluate import evaluate_model, read_predictions
    from .promotion import GateRule, decide
    from .registry import Registry

    rule = GateRule.from_mapping(gate)
    champ = Registry(store).champion(REGISTRY_NAMES[model_type])
    with tempfile.TemporaryDirectory(prefix="sg-eval-") as tmp:
        challenger = evaluate_model(store, run, model_type, model_uri, Path(tmp), name="challenger",
                                    explain_samples=explain_samples)
        champion = None
        if champ is not None:
            champion = evaluate_model(store, run, model_type, champ.artifact_uri, Path(tmp), name="champion")
    ours = read_predictions(store, run, model_type, "challenger")
    theirs = read_predictions(store, run, model_type, "champion") if champion else None
    decision = decide(challenger, champion, rule, ours["label"], ours["pred"],
                      theirs["pred"] if theirs is not None else None, smoke=smoke)
    decision["champion_version"] = champ.version if champ else None
    store.write_json(layout.decision(run, model_type), decision)
    log.info("%s decision: promote=%s (%s)", model_type, decision["promote"], "; ".join(decision["reasons"]))
    return {"model_type": model_type, "metrics": challenger, "champion_metrics": champion, "decision": decision,
            "metrics_uri": store.uri(layout.eval_metrics(run, model_type))}


def register_step(store: Store, run: str, model_type: str, training: dict[str, Any],
                  evaluation: dict[str, Any], dataset: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    from . import tracking
    from .model_card import run_inputs, write_model_card
    from .registry import Registry

    summary = store.read_json(layout.training_summary(run, model_type))
    lineage = {  # references into the store are store-relative keys (registry.relative_lineage)
        "run": layout.run_key(run),
        "smoke": cfg.smoke,
        "data_content_hash": dataset.get("content_hash"),
        "split_manifest": layout.manifest(run),
        "dataset_card": layout.dataset_card(run, "md"),
        "code_version": code_version(),
        "base_model": cfg.base_model if model_type in ("transformer", "fusion") else None,
        "members": training.get("members"),
        "training_backend": training.get("backend", cfg.training_backend),
        "job_name": training.get("job_name"),
        "fine_tuned_from": training.get("fine_tuned_from"),
        "sources": list(cfg.all_sources()),
        "reference_profile": f"{layout.eval_dir(run, model_type)}/reference.json",
        "retrain_reasons": list(cfg.retrain_reasons),
    }
    mlflow_run = tracking.track(store, run, model_type, cfg, lineage, evaluation)  # before: entries are write-once
    if mlflow_run:
        lineage["mlflow"] = mlflow_run
    registry = Registry(store)
    mv = registry.register(
        REGISTRY_NAMES[model_type], training["model_uri"], evaluation["metrics"],
        params=summary.get("hyperparameters", {}), lineage=lineage,
        idempotency_key=f"{layout.run_key(run)}:{model_type}", decision=evaluation["decision"])
    card = write_model_card(store, registry.card_prefix(mv.model, mv.version), mv,
                            **run_inputs(store, run, model_type))
    tracking.attach_version(store, cfg, mlflow_run, mv.model, mv.version, registry.card_prefix(mv.model, mv.version))
    log.info("registered %s v%d (%s); model card %s", mv.model, mv.version, mv.artifact_uri, card["markdown"])
    return {"model": mv.model, "version": mv.version, "artifact_uri": mv.artifact_uri, "status": mv.status,
            "model_card": card["markdown"]}


def promote_step(store: Store, registered: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    from .registry import Registry

    registry = Registry(store)
    model, version = registered["model"], int(registered["version"])
    decision = evaluation["decision"]
    current = registry.champion(model)
    if current is not None and current.version == version:
        return {"model": model, "version": version, "promoted": True, "already": True}
    if not decision["promote"]:
        log.info("%s v%d stays a challenger: %s", model, version, "; ".join(decision["reasons"]))
        return {"model": model, "version": version, "promoted": False, "reasons": decision["reasons"]}
    registry.set_status(model, version, "approved", "passed the promotion gate")
    registry.promote(model, version, reason="; ".join(decision["reasons"]))
    return {"model": model, "version": version, "promoted": True, "reasons": decision["reasons"]}


def summary_lines(store: Store, run: str, results: Sequence[dict[str, Any]]) -> list[str]:
    """What a person should look at after a run (printed at the end of the DAG).

    Each model's line gives its figures at its own threshold; the last lines say which
    data the test split came from, and plainly when it was synthetic only.
    """
    lines = [f"StreamGuard run {layout.run_key(run)} finished. Artifacts: {store.uri(layout.run_root(run))}",
             f"  dataset card : {store.uri(layout.dataset_card(run, 'md'))}",
             f"  quarantine   : {store.uri(layout.quarantine(run))}"]
    statements = []
    for r in results:
        m = r.get("metrics", {})
        lines.append(f"  {r['model']} v{r['version']}: threshold={_num(m.get('threshold'))} acc={_num(m.get('accuracy'))} "
                     f"f1={_num(m.get('f1'))} fpr={_num(m.get('fpr'))} auc={_num(m.get('roc_auc'))} "
                     f"pairwise={_num(m.get('pairwise_accuracy'))} promoted={r.get('promoted')} -> {r['artifact_uri']}")
        statement = (m.get("test_data") or {}).get("statement")
        if statement and statement not in statements:
            statements.append(statement)
    lines += [f"  {s}" for s in statements]
    lines.append("  registry     : streamguard-ml registry list   (or the Airflow UI's Model registry page)")
    return lines


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"
