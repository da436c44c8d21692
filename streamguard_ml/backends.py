"""Training backends.  Both run the same entrypoint (``streamguard_ml.train``).

* ``local`` — builds an ``/opt/ml``-like tree in a temporary directory, sets
  SageMaker's environment variables and runs ``python -m streamguard_ml.train``
  in a subprocess, streaming its log; then packs ``model.tar.gz`` exactly where
  a SageMaker job's output would be found.
* ``sagemaker`` — the Airflow layer hands the request built by
  :mod:`streamguard_ml.sagemaker` to ``SageMakerTrainingOperator``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import layout
from .config import PipelineConfig
from .inference import pack_archive
from .store import Store

log = logging.getLogger(__name__)


def hyperparameters_for(cfg: PipelineConfig, model_type: str, fine_tune: bool = False) -> dict[str, str]:
    """CLI hyperparameters of the entrypoint, as strings (SageMaker's HyperParameters format)."""
    hp = cfg.hyperparameters(model_type)
    if fine_tune and "learning-rate" in hp:
        hp["learning-rate"] = hp["learning-rate"] / 5  # start from the champion: smaller steps keep what it learned
    return {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in hp.items()}


def cli_args(hp: dict[str, str]) -> list[str]:
    return [part for k, v in sorted(hp.items()) for part in (f"--{k}", str(v))]


def params_digest(hp: dict[str, str], dataset_hash: str, init_uri: str | None,
                  members: dict[str, str] | None = None) -> str:
    """What makes a trained model: hyperparameters, data, starting point, members and graph features.

    The data's content hash covers the code and labels, not how graphs are built from them, so
    the graph format and rule versions are part of it for the models that read graphs.
    """
    body: dict[str, Any] = {"hp": hp, "data": dataset_hash, "init": init_uri}
    if hp.get("model-type") in ("gnn", "fusion"):
        from .graphs import GRAPH_FORMAT_VERSION, taint_rules, vocabulary

        body["graphs"] = [GRAPH_FORMAT_VERSION, taint_rules()["version"], vocabulary()["version"]]
    if members:
        body["members"] = members
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def member_digests(store: Store, run: str, members: dict[str, str]) -> dict[str, str]:
    """What identifies each member of the run: its own parameter digest (its URI when it has none)."""
    out = {}
    for name, uri in members.items():
        key = layout.training_summary(run, name)
        summary = store.read_json(key) if store.exists(key) else {}
        out[name] = summary.get("params_digest") or summary.get("job_name") or uri
    return out


def train_local(store: Store, run: str, model_type: str, cfg: PipelineConfig, init_uri: str | None = None,
                dataset_hash: str = "", members: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the entrypoint locally; returns ``{"model_uri", "job_name", "validation", ...}``.

    Idempotent: when this run already holds a model trained with the same
    hyperparameters, data and starting point (and, for the fusion detector, the same
    members), it is reused instead of retrained.
    """
    hp = hyperparameters_for(cfg, model_type, fine_tune=bool(init_uri))
    digest = params_digest(hp, dataset_hash, init_uri, member_digests(store, run, members) if members else None)
    archive_key = layout.model_archive(run, model_type)
    summary_key = layout.training_summary(run, model_type)
    if store.exists(archive_key) and store.exists(summary_key):
        summary = store.read_json(summary_key)
        if summary.get("params_digest") == digest:
            log.info("%s model of run %s already trained with these parameters: reusing %s",
                     model_type, run, store.uri(archive_key))
            return _result(store, run, model_type, summary)
    with tempfile.TemporaryDirectory(prefix="sg-opt-ml-") as tmp:
        root = Path(tmp)
        channels = {"validation": "val"} if model_type == "fusion" else {"train": "train", "validation": "val"}
        for channel, split in channels.items():
            store.download_dir(layout.split_dir(run, split), root / "input" / "data" / channel)
        models = {**({"init": init_uri} if init_uri else {}), **(members or {})}
        for channel, uri in models.items():
            from .store import read_uri_bytes

            (root / "input" / "data" / channel).mkdir(parents=True)
            (root / "input" / "data" / channel / "model.tar.gz").write_bytes(read_uri_bytes(uri))
        env = sagemaker_environment(root, hp, list(channels), list(models))
        checkpoint, synced = _checkpoint_dir(store, f"{layout.model_dir(run, model_type)}/checkpoints/{digest}", root)
        cmd = [sys.executable, "-m", "streamguard_ml.train", *cli_args(hp), "--checkpoint-dir", str(checkpoint)]
        _run_streaming(cmd, env)
        model_dir = root / "model"
        summary = json.loads((model_dir / "training.json").read_text())
        summary.update(params_digest=digest, backend="local", job_name=f"local-{layout.run_key(run)}-{model_type}")
        if synced:
            store.upload_dir(checkpoint, f"{layout.model_dir(run, model_type)}/checkpoints/{digest}")
        return store_trained_model(store, run, model_type, pack_archive(model_dir), summary)


def store_trained_model(store: Store, run: str, model_type: str, archive: bytes,
                        summary: dict[str, Any]) -> dict[str, Any]:
    """Put a trained ``model.tar.gz`` and its ``training.json`` into the run layout (any backend)."""
    store.write_bytes(layout.model_archive(run, model_type), archive)
    store.write_json(layout.training_summary(run, model_type), summary)
    return _result(store, run, model_type, summary)


def _result(store: Store, run: str, model_type: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {"model_type": model_type, "model_uri": store.uri(layout.model_archive(run, model_type)),
            "job_name": summary.get("job_name"), "backend": summary.get("backend", "local"),
            "validation": {k: summary["validation"][k] for k in ("accuracy", "f1", "fpr")},
            "epochs_run": len(summary.get("history", []))}


def _checkpoint_dir(store: Store, prefix: str, root: Path) -> tuple[Path, bool]:
    """Checkpoints that survive a task retry: (directory, whether it must be synced back to the store).

    Keyed by the parameter digest so a run retrained with other settings never
    resumes from a checkpoint of different hyperparameters.
    """
    from .store import LocalStore

    if isinstance(store, LocalStore):
        return Path(store.uri(prefix)), False
    target = root / "checkpoints"
    store.download_dir(prefix, target)
    return target, True


def sagemaker_environment(root: Path, hp: dict[str, str], data_channels: list[str] | None = None,
                          model_channels: list[str] | None = None) -> dict[str, str]:
    """The environment a SageMaker training container sees, pointing into ``root``."""
    env = dict(os.environ)
    channels = list(data_channels or ["train", "validation"]) + list(model_channels or [])
    env.update({
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_INPUT_DIR": str(root / "input"),
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hp),
        "SM_NUM_GPUS": "0",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_CURRENT_HOST": "algo-1",
    })
    for ch in channels:
        env[f"SM_CHANNEL_{ch.upper()}"] = str(root / "input" / "data" / ch)
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "output" / "data").mkdir(parents=True, exist_ok=True)
    return env


def _run_streaming(cmd: list[str], env: dict[str, str]) -> None:
    """Run the entrypoint, streaming its log; the child never outlives this process.

    On SIGKILL the child notices its parent is gone (``train.exit_with_parent``); on
    anything this process can see (SIGTERM from Airflow, a timeout, Ctrl-C) the
    ``finally`` stops it before the exception goes on.
    """
    from .train import PARENT_PID_ENV

    log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env={**env, PARENT_PID_ENV: str(os.getpid())}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if "Loading weights" in line:
                continue
            log.info("[train] %s", line)
            tail = (tail + [line])[-20:]
        returncode = proc.wait()
    finally:
        _stop(proc)
    if returncode != 0:
        raise RuntimeError(f"training failed with exit code {returncode}; last lines:\n" + "\n".join(tail))


def _stop(proc: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    log.warning("stopping the training subprocess (pid %d)", proc.pid)
    proc.terminate()
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
