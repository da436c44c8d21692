"""Generic JSON-lines connector (local path or ``s3://``, optionally gzipped).

Accepts the raw record of ``interfaces.md`` and the seed-era field names
(``vulnerable_code`` for ``code``, ``vulnerable: bool`` for ``label``); a line
that is not UTF-8 or not a JSON object becomes a :class:`Rejected` naming the
file and line number.
"""

from __future__ import annotations

import gzip
import json
from typing import Iterator

from ..records import Reason, Rejected
from ..store import list_uris, read_uri_bytes


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) for every non-blank line."""
    data = read_uri_bytes(path)
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            yield number, raw


def decode_json_line(path: str, number: int, raw: bytes) -> dict | Rejected:
    """One line to a dict, or the reason it is unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(path, Reason.NON_UTF8, f"byte {exc.start}: {exc.reason}", number,
                        raw=raw.decode("utf-8", "replace"))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejected(path, Reason.MALFORMED_JSON, exc.msg + f" at column {exc.colno}", number, raw=text)
    if not isinstance(obj, dict):
        return Rejected(path, Reason.NOT_AN_OBJECT, f"got {type(obj).__name__}", number, raw=text)
    return obj


def canonical(obj: dict) -> dict:
    """Map seed-era field names onto the raw-record shape."""
    rec = dict(obj)
    if "code" not in rec and "vulnerable_code" in rec:
        rec["code"] = rec.pop("vulnerable_code")
        rec.setdefault("label", 1)
    if "label" not in rec and "vulnerable" in rec:
        rec["label"] = rec.pop("vulnerable")
    return rec


def read_jsonl(path: str) -> Iterator[dict | Rejected]:
    """One JSONL file, or every ``*.jsonl`` / ``*.jsonl.gz`` below a folder or ``s3://`` prefix."""
    for file in list_uris(path, (".jsonl", ".jsonl.gz")):
        for number, raw in iter_lines(file):
            item = decode_json_line(file, number, raw)
            if isinstance(item, dict):
                item = canonical(item)
                item["_source"], item["_line"] = file, number
            yield item
