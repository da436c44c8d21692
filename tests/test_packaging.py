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
