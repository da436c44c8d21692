"""A minimal ``model.tar.gz`` for tests that need *an* artifact, not a loadable model.

The registry refuses anything but an archive of allow-listed model files
(``packaging.check_archive``), so tests that only exercise bookkeeping register this:
a ``streamguard_model.json`` and placeholder weights, packed deterministically.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any


def model_archive(config: dict[str, Any] | None = None, weights: bytes = b"weights") -> bytes:
    """``streamguard_model.json`` (``config``; default a bare GNN) and ``model.safetensors``, same bytes each call."""
    files = {"streamguard_model.json": json.dumps(config or {"model_type": "gnn"}, sort_keys=True).encode(),
             "model.safetensors": weights}
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: What bookkeeping tests register: deterministic, so a test can compare the stored copy with it.
FAKE_MODEL = model_archive()
