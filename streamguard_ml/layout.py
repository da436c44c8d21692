"""Where each artifact lives inside the store (one place, so no stage guesses a key).

::

    runs/<run>/ingest/samples.parquet        accepted samples
    runs/<run>/ingest/quarantine.jsonl       rejected inputs with reason and source line
    runs/<run>/ingest/report.json            counts (the ``ingest --json`` document)
    runs/<run>/plan/assignment.parquet       split and leakage group of every sample
    runs/<run>/plan/<split>-<i>.parquet      input of one preprocessing shard
    runs/<run>/processed/<split>/shard-<i>/  records.parquet, graphs.safetensors.zst, tokens.safetensors.zst
    runs/<run>/processed/<split>/dataset.json   what produced the split (tokenizer, vocabulary)
    runs/<run>/processed/manifest.jsonl      {id, split, pair_id, group} per sample
    runs/<run>/processed/dataset_card.{json,md}
    runs/<run>/models/<model_type>/model.tar.gz
    runs/<run>/eval/<model_type>/...         metrics, predictions, comparison with the champion
    runs/<run>/sagemaker/<model_type>/...    a SageMaker job's output, checkpoints and init model
    sagemaker/code/sourcedir-<digest>.tar.gz the packaged training code (content-addressed)
    registry/...                             see registry.py
    ingestion/corpus.parquet                 every sample the daily ingestion has accepted so far
    datasets/latest.json                     the processed dataset published last (see publication.py)
    datasets/published/<run>.json            one record per publication
    feedback/date=YYYY-MM-DD/...             see feedback.py
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_key(run_id: str) -> str:
    """A store-safe, deterministic name for a DAG run id or CLI run name."""
    key = _UNSAFE.sub("-", run_id).strip("-.")
    if not key:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return key


def run_root(run: str) -> str:
    return f"runs/{run_key(run)}"


def ingested(run: str) -> str:
    return f"{run_root(run)}/ingest/samples.parquet"


def quarantine(run: str) -> str:
    return f"{run_root(run)}/ingest/quarantine.jsonl"


def ingest_report(run: str) -> str:
    return f"{run_root(run)}/ingest/report.json"


def assignment(run: str) -> str:
    return f"{run_root(run)}/plan/assignment.parquet"


def plan(run: str) -> str:
    return f"{run_root(run)}/plan/plan.json"


def shard_input(run: str, split: str, index: int) -> str:
    return f"{run_root(run)}/plan/{split}-{index:05d}.parquet"


def processed(run: str) -> str:
    return f"{run_root(run)}/processed"


def split_dir(run: str, split: str) -> str:
    return f"{processed(run)}/{split}"


def shard_dir(run: str, split: str, index: int) -> str:
    return f"{split_dir(run, split)}/shard-{index:05d}"


def manifest(run: str) -> str:
    return f"{processed(run)}/manifest.jsonl"


def dataset_card(run: str, ext: str) -> str:
    return f"{processed(run)}/dataset_card.{ext}"


def model_dir(run: str, model_type: str) -> str:
    return f"{run_root(run)}/models/{model_type}"


def model_archive(run: str, model_type: str) -> str:
    return f"{model_dir(run, model_type)}/model.tar.gz"


def eval_dir(run: str, model_type: str) -> str:
    return f"{run_root(run)}/eval/{model_type}"


def training_summary(run: str, model_type: str) -> str:
    """``training.json``: hyperparameters, per-epoch history, validation figures (see train.write_summary)."""
    return f"{model_dir(run, model_type)}/training.json"


def eval_metrics(run: str, model_type: str, name: str = "challenger") -> str:
    return f"{eval_dir(run, model_type)}/{name}-metrics.json"


def decision(run: str, model_type: str) -> str:
    return f"{eval_dir(run, model_type)}/decision.json"


def corpus() -> str:
    return "ingestion/corpus.parquet"


def latest_dataset() -> str:
    return "datasets/latest.json"


def publication(run: str) -> str:
    return f"datasets/published/{run_key(run)}.json"


def sagemaker_dir(run: str, model_type: str) -> str:
    return f"{run_root(run)}/sagemaker/{model_type}"


def sagemaker_code(digest: str) -> str:
    return f"sagemaker/code/sourcedir-{digest}.tar.gz"


def scan_dir(run: str, repository: str) -> str:
    """Where one repository's scan of a run lies: ``results.sarif``, ``summary.json``, ``findings.jsonl``."""
    return f"scans/{run_key(run)}/{run_key(repository)}"


def scans() -> str:
    return "scans"


#: The top-level folders of a store (see the tree above): what a store-relative key starts with.
STORE_FOLDERS = ("runs", "registry", "datasets", "ingestion", "feedback", "sagemaker", "scans")


def store_relative(ref: str | None) -> str | None:
    """The store key of ``ref``, whether it is a key already or a path/URI written under any store root.

    Registry entries and run records keep keys, so a store copied elsewhere (another
    directory, S3 and back) still finds its own files; entries written before that held
    absolute paths, and the part from the last top-level store folder on is their key.
    None when ``ref`` does not point into a store (a source such as ``sven:PATH``).
    """
    if not ref or not isinstance(ref, str) or re.match(r"[A-Za-z][\w+-]*:(?!//)", ref):  # a KIND:PATH source
        return None
    parts = ref.replace("\\", "/").split("/")
    if parts[0] in STORE_FOLDERS and "://" not in ref:
        return ref
    starts = [i for i, p in enumerate(parts) if p in STORE_FOLDERS and i > 0]
    return "/".join(parts[starts[-1]:]) if starts and _is_store_path(parts[starts[-1]:]) else None


def _is_store_path(parts: list[str]) -> bool:
    """``runs/<run>/...`` or ``registry/<model>/...``-shaped: not just any path with such a folder name."""
    return len(parts) >= 3 or (len(parts) == 2 and parts[0] == "datasets")
