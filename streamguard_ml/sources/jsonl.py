"""Generic JSON-lines connector (local path or ``s3://``, optionally gzipped).

Accepts the raw record of ``interfaces.md`` and the seed-era field names
(``vulnerable_code`` for ``code``, ``vulnerable: bool`` for ``label``); a line
that is not UTF-8 or not a JSON object becomes a :class:`Rejected` naming the
file and line number, keeping only an excerpt of the line
(:data:`~streamguard_ml.records.EXCERPT_CHARS` characters and its length).
A UTF-8 byte-order mark at the start of a file is not part of its first line.

A file whose first :data:`NOT_JSONL_AFTER` non-blank lines are all unparsable is
not JSON lines at all (a wrong path, ``/etc/passwd``, a binary file): reading it
stops with a :class:`~streamguard_ml.sources.SourceError` naming the file, rather
than copying it line by line into the quarantine.  Unparsable lines after a good
one are quarantined one by one, as record-level faults.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
from typing import Iterator

from ..records import Reason, Rejected, excerpt
from ..store import list_uris, read_uri_bytes

#: Unparsable lines at the start of a file after which it is refused as not JSON lines.
NOT_JSONL_AFTER = 20
_UNPARSABLE = (Reason.MALFORMED_JSON, Reason.NON_UTF8)


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) for every non-blank line; a leading UTF-8 BOM is dropped."""
    data = read_uri_bytes(path)
    if path.endswith(".gz"):
        data = gunzip_capped(path, data)
    data = data.removeprefix(codecs.BOM_UTF8)  # what reading as utf-8-sig does: spreadsheet exports add one
    for number, raw in enumerate(data.splitlines(), start=1):
        if raw.strip():
            yield number, raw


def gunzip_capped(path: str, data: bytes) -> bytes:
    """``data`` decompressed, refused (SourceError) past the deployment's size cap: a gzip bomb
    must not take the worker's memory."""
    from ..config import MAX_SOURCE_BYTES_ENV, max_source_bytes
    from . import SourceError

    cap = max_source_bytes()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            out = handle.read(cap + 1)
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path} is not a readable gzip file ({exc}): re-compress it or drop the .gz suffix") from None
    if len(out) > cap:
        raise SourceError(f"{path} decompresses to more than {cap:,} bytes ({len(data):,} compressed): split it into "
                          f"smaller files or raise {MAX_SOURCE_BYTES_ENV}")
    return out


def decode_json_line(path: str, number: int, raw: bytes) -> dict | Rejected:
    """One line to a dict, or the reason it is unusable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(path, Reason.NON_UTF8, f"byte {exc.start}: {exc.reason}", number,
                        raw=excerpt(raw.decode("utf-8", "replace")))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejected(path, Reason.MALFORMED_JSON, exc.msg + f" at column {exc.colno}", number, raw=excerpt(text))
    except (ValueError, RecursionError) as exc:  # an integer past 4,300 digits; nesting past the recursion limit
        return Rejected(path, Reason.MALFORMED_JSON, f"valid JSON that Python cannot hold: {str(exc)[:120]}",
                        number, raw=excerpt(text))
    if not isinstance(obj, dict):
        return Rejected(path, Reason.NOT_AN_OBJECT, f"got {type(obj).__name__}", number, raw=excerpt(text))
    return obj


def json_lines(path: str) -> Iterator[tuple[int, bytes, dict | Rejected]]:
    """(line number, raw bytes, object or rejection) for each line of one file that is JSON lines.

    Raises SourceError (before yielding anything) when the file's first
    :data:`NOT_JSONL_AFTER` lines are all unparsable.
    """
    from . import SourceError

    leading: list[tuple[int, bytes, dict | Rejected]] = []
    lines = iter_lines(path)
    for number, raw in lines:
        item = decode_json_line(path, number, raw)
        leading.append((number, raw, item))
        if not (isinstance(item, Rejected) and item.reason in _UNPARSABLE):
            break
        if len(leading) >= NOT_JSONL_AFTER:
            first = leading[0][2]
            raise SourceError(f"{path} is not JSON lines: its first {NOT_JSONL_AFTER} lines are not JSON "
                              f"(line {first.line}: {first.detail}): point the source at a .jsonl file with one "
                              "JSON object per line")
    yield from leading
    for number, raw in lines:
        yield number, raw, decode_json_line(path, number, raw)


def canonical(obj: dict) -> dict:
    """Map seed-era field names onto the raw-record shape (``vulnerable: true/false`` → ``label: 1/0``)."""
    rec = dict(obj)
    if "code" not in rec and "vulnerable_code" in rec:
        rec["code"] = rec.pop("vulnerable_code")
        rec.setdefault("label", 1)
    if "label" not in rec and isinstance(rec.get("vulnerable"), bool):
        rec["label"] = int(rec.pop("vulnerable"))
    return rec


def read_jsonl(path: str) -> Iterator[dict | Rejected]:
    """One JSONL file, or every ``*.jsonl`` / ``*.jsonl.gz`` below a folder or ``s3://`` prefix."""
    for file in list_uris(path, (".jsonl", ".jsonl.gz")):
        for number, _, item in json_lines(file):
            if isinstance(item, dict):
                item = canonical(item)
                item["_source"], item["_line"] = file, number
            yield item

