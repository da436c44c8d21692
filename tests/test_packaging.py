"""The sourcedir.tar.gz SageMaker runs: deterministic, complete, runnable."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

from streamguard_ml.packaging import TRAIN_PROGRAM, source_tarball


def test_source_tarball_is_deterministic_and_complete(tmp_path):
    first, second = source_tarball(), source_tarball()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    assert {TRAIN_PROGRAM, "requirements.txt", "streamguard_ml/train.py", "streamguard_ml/data/node_types.json",
            "streamguard_ml/data/taint_rules.json"} <= names
    out = subprocess.run([sys.executable, TRAIN_PROGRAM, "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--model-type" in out.stdout


def test_the_model_archive_allow_list_follows_what_the_pipeline_writes():
    """The allow-list (packaging.py) names exactly the files kinds.py, train.py and fusion.py write."""
    from streamguard_ml import fusion, kinds, packaging

    assert packaging.MEMBER_DIRS == fusion.MEMBERS
    assert packaging.REQUIRED_FILE == kinds.CONFIG_FILE
    assert {kinds.CONFIG_FILE, kinds.MODEL_FILE, "training.json"} <= set(packaging.MODEL_FILES)
    assert {f"{m}/{kinds.MODEL_FILE}" for m in fusion.MEMBERS} <= set(packaging.ALLOWED_FILES)
    assert "sourcedir.tar.gz" not in packaging.ALLOWED_FILES and "*.py" not in packaging.ALLOWED_FILES
