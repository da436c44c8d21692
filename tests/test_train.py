"""The training entrypoint under SageMaker's container contract, for both models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from streamguard_ml import layout
from streamguard_ml.train import METRIC_REGEXES


def _sm_tree(tmp_path: Path, store, run: str) -> dict[str, str]:
    """An /opt/ml-like tree with the run's splits as channels, and SageMaker's variables."""
    root = tmp_path / "opt" / "ml"
    store.download_dir(layout.split_dir(run, "train"), root / "input" / "data" / "train")
    store.download_dir(layout.split_dir(run, "val"), root / "input" / "data" / "validation")
    return {**os.environ, "SM_MODEL_DIR": str(root / "model"), "SM_CHANNEL_TRAIN": str(root / "input/data/train"),
            "SM_CHANNEL_VALIDATION": str(root / "input/data/validation"),
            "SM_OUTPUT_DATA_DIR": str(root / "output")}


@pytest.mark.parametrize("model_type,extra", [
    ("gnn", ["--epochs", "3", "--hidden", "32", "--layers", "2"]),
    ("transformer", ["--epochs", "1", "--max-length", "64", "--window-stride", "48"]),
])
def test_entrypoint_honours_the_sagemaker_contract(processed_run, tmp_path, model_type, extra):
    store, run, cfg, _ = processed_run
    env = _sm_tree(tmp_path, store, run)
    cmd = [sys.executable, "-m", "streamguard_ml.train", "--model-type", model_type, "--batch-size", "16", *extra]
    if model_type == "transformer":
        cmd += ["--base-model", cfg.base_model]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    epoch_lines = [line for line in out.stdout.splitlines() if line.startswith("Epoch ")]
    assert epoch_lines
    for name, regex in METRIC_REGEXES.items():
        values = [float(m.group(1)) for line in epoch_lines if (m := re.search(regex, line))]
        assert len(values) == len(epoch_lines), name
        assert all(0 <= v for v in values)
    model_dir = Path(env["SM_MODEL_DIR"])
    assert (model_dir / "model.safetensors").exists() and (model_dir / "streamguard_model.json").exists()
    assert not list(model_dir.rglob("*.pt")) and not list(model_dir.rglob("*.bin"))
    summary = json.loads((model_dir / "training.json").read_text())
    assert summary["model_type"] == model_type and 0 <= summary["validation"]["accuracy"] <= 1


def test_checkpoint_resume(processed_run, tmp_path):
    """A restarted job resumes after the last finished epoch instead of starting over."""
    store, run, _, _ = processed_run
    env = _sm_tree(tmp_path, store, run)
    base = [sys.executable, "-m", "streamguard_ml.train", "--model-type", "gnn", "--hidden", "32", "--layers", "1",
            "--patience", "99", "--checkpoint-dir", str(tmp_path / "ckpt")]
    first = subprocess.run(base + ["--epochs", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(base + ["--epochs", "3"], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from checkpoint after epoch 2" in second.stdout
    assert [line.split(":")[0] for line in second.stdout.splitlines() if line.startswith("Epoch")] == ["Epoch 3/3"]


def test_missing_channel_is_a_clear_error(tmp_path):
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path / "m")}
    env.pop("SM_CHANNEL_TRAIN", None)
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.train", "--model-type", "gnn"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "SM_CHANNEL_TRAIN" in out.stderr


def test_local_backend_runs_the_entrypoint_and_is_idempotent(processed_run):
    from streamguard_ml.backends import train_local

    store, run, cfg, dataset = processed_run
    small = cfg.__class__(**{**cfg.__dict__, "gnn_epochs": 2})
    first = train_local(store, run, "gnn", small, dataset_hash=dataset["content_hash"])
    archive = store.uri(layout.model_archive(run, "gnn"))
    assert first["model_uri"] == archive and first["job_name"].startswith("local-")
    with tarfile.open(archive) as tar:
        assert {"model.safetensors", "streamguard_model.json", "training.json"} <= set(tar.getnames())
    mtime = Path(archive).stat().st_mtime_ns
    again = train_local(store, run, "gnn", small, dataset_hash=dataset["content_hash"])
    assert again["model_uri"] == archive and Path(archive).stat().st_mtime_ns == mtime
