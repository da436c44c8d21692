"""Analyst feedback as training data: ``feedback:PATH`` where PATH is a batch file or a folder/prefix.

The retraining monitor passes the feedback batches collected since the champion
was trained; verdicts become labels (see :mod:`streamguard_ml.feedback`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..feedback import as_raw_records, parse_file
from ..records import Rejected
from ..store import S3Store, read_uri_bytes


def batch_files(path: str) -> list[str]:
    if path.endswith(".jsonl"):
        return [path]
    if path.startswith("s3://"):
        bucket, _, prefix = path.removeprefix("s3://").partition("/")
        store = S3Store(f"s3://{bucket}")
        return [store.uri(k) for k in store.list(prefix.strip("/")) if k.endswith(".jsonl") and "/rejected/" not in k]
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"feedback source {path} is neither a .jsonl batch nor a folder of batches")
    return [str(p) for p in sorted(folder.rglob("*.jsonl")) if "rejected" not in p.parts]


def read_feedback(path: str) -> Iterator[dict | Rejected]:
    for file in batch_files(path):
        records, rejected = parse_file(read_uri_bytes(file), file)
        yield from rejected
        yield from as_raw_records(records, file)
