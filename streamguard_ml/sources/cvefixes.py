"""CVEfixes (Bhandari, Naseer & Moonen, 2021): method-level vulnerable/fixed code from a SQLite database.

The database links ``fixes`` (CVE → commit → repository) to ``file_change``
(one row per file a fix commit touched, with ``diff_parsed``) and
``method_change`` (every changed function, once as it was *before* the fix —
``before_change = 'True'``, the vulnerable version — and once *after* it).
``cwe_classification`` maps CVEs to CWEs and ``cve`` carries the severity.

Each Python method becomes a raw record: before → label 1 with the fix's
deleted lines inside the method as ``vulnerable_lines``, after → label 0; a
before/after of the same function in the same file change share a ``pair_id``.
The repository is the split group.  Methods in other languages are counted and
logged, not read (only Python is supported).  The database may be a local file
or an ``s3://`` object.

A fault in one method's data is a quarantine entry, never the end of the read:
text that is not UTF-8 is decoded with ``surrogateescape`` (so the record is
quarantined as ``non_utf8``), and ``diff_parsed`` is parsed once per file change,
bounded in size (:data:`MAX_DIFF_CHARS`) and shape, a malformed one quarantining
the vulnerable methods whose lines it should locate (``malformed_diff``).
"""

from __future__ import annotations

import ast
import logging
import sqlite3
from collections import defaultdict
from typing import Any, Iterator

from ..records import Reason, Rejected, cwe_of, describe, stable_id
from ..store import local_file
from .sven import repository_of

log = logging.getLogger(__name__)

REQUIRED_TABLES = ("method_change", "file_change", "fixes")
_PYTHON = "(lower(f.programming_language) = 'python' OR f.filename LIKE '%.py')"
_GENERIC_CWES = {"NVD-CWE-Other", "NVD-CWE-noinfo"}
#: Largest ``diff_parsed`` parsed (characters): ``ast.literal_eval`` needs memory many times its input.
MAX_DIFF_CHARS = 8_000_000


class CVEfixesError(ValueError):
    """The file is not a usable CVEfixes database; the message says why."""


class DiffError(ValueError):
    """A ``diff_parsed`` value that is not the dict of (line, text) lists CVEfixes writes."""


def _decode(data: bytes) -> str:
    """SQLite text as str; bytes that are not UTF-8 become surrogates for validation to quarantine."""
    return data.decode("utf-8", "surrogateescape")


def _open(path: str, db: Any) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise CVEfixesError(f"cvefixes:{path} is not a SQLite database ({exc}): point at CVEfixes.db") from exc
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        raise CVEfixesError(f"cvefixes:{path} lacks the tables {missing}: use the full CVEfixes database "
                            "(the trimmed variants drop method_change)")
    con.row_factory = sqlite3.Row
    con.text_factory = _decode
    return con


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}


def _text(value: Any) -> str | None:
    """CVEfixes stores missing values as the string 'None' (pandas ``astype(str)``)."""
    if value is None:
        return None
    text = str(value)
    return None if text in ("None", "nan", "") else text


def _fixes(con: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """commit hash → repository URL and the CVEs it fixes."""
    by_hash: dict[str, dict[str, Any]] = {}
    for r in con.execute("SELECT cve_id, hash, repo_url FROM fixes ORDER BY cve_id"):
        entry = by_hash.setdefault(r["hash"], {"repo_url": _text(r["repo_url"]), "cves": []})
        if r["cve_id"] not in entry["cves"]:
            entry["cves"].append(r["cve_id"])
    return by_hash


def _cwes(con: sqlite3.Connection, tables: set[str]) -> dict[str, list[str]]:
    """CVE → its specific CWEs (NVD's 'Other' / 'noinfo' placeholders dropped)."""
    if "cwe_classification" not in tables:
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    for r in con.execute("SELECT cve_id, cwe_id FROM cwe_classification ORDER BY cve_id, cwe_id"):
        if _text(r["cwe_id"]) and r["cwe_id"] not in _GENERIC_CWES:
            out[r["cve_id"]].append(cwe_of(r["cwe_id"]))
    return out


def _severities(con: sqlite3.Connection, tables: set[str]) -> dict[str, str]:
    """CVE → CVSS v3 base severity (lower case), where the ``cve`` table has it."""
    if "cve" not in tables or "cvss3_base_severity" not in _columns(con, "cve"):
        return {}
    return {r["cve_id"]: sev.lower() for r in con.execute("SELECT cve_id, cvss3_base_severity FROM cve")
            if (sev := _text(r["cvss3_base_severity"]))}


def parse_deleted(diff_parsed: Any) -> list[int]:
    """The file's line numbers that a fix deleted or replaced, from ``file_change.diff_parsed``.

    Missing (``None``/empty) means none are known.  Raises DiffError, saying what is wrong,
    for text over :data:`MAX_DIFF_CHARS`, text that is not a Python literal (including ones
    the parser cannot hold: deep nesting raises MemoryError or RecursionError there), or a
    literal of another shape.
    """
    text = _text(diff_parsed)
    if not text:
        return []
    if len(text) > MAX_DIFF_CHARS:
        raise DiffError(f"is {len(text):,} characters, over the {MAX_DIFF_CHARS:,} this reader parses")
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        why = str(exc)[:80] or "nested too deeply for Python's parser"
        raise DiffError(f"is not a Python literal ({type(exc).__name__}: {why})") from None
    if not isinstance(parsed, dict):
        raise DiffError(f"is {describe(parsed)}, not a dict of 'added' and 'deleted' lines")
    deleted = parsed.get("deleted") or []
    if not isinstance(deleted, (list, tuple)):
        raise DiffError(f"has 'deleted' = {describe(deleted)}, not a list of (line number, text)")
    numbers = []
    for index, entry in enumerate(deleted):
        if isinstance(entry, dict):
            number = entry.get("line_no")
        else:
            number = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        if type(number) is not int:
            raise DiffError(f"has 'deleted' item {index} = {describe(entry)}, not (line number, text)")
        numbers.append(number)
    return numbers


def deleted_lines(numbers: list[int], start: int, end: int) -> list[int]:
    """The lines among ``numbers`` inside a method (1-based, relative to its first line)."""
    return sorted({n - start + 1 for n in numbers if start <= n <= end})


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _is_before(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1")


def _pairs(rows: list[sqlite3.Row]) -> list[tuple[sqlite3.Row | None, sqlite3.Row | None]]:
    """Match before/after versions of one function name in one file change (same signature first)."""
    befores = [r for r in rows if _is_before(r["before_change"])]
    afters = [r for r in rows if not _is_before(r["before_change"])]
    pairs: list[tuple[sqlite3.Row | None, sqlite3.Row | None]] = []
    for b in list(befores):
        match = next((a for a in afters if a["signature"] == b["signature"]), None)
        if match is not None:
            pairs.append((b, match))
            befores.remove(b)
            afters.remove(match)
    pairs += list(zip(befores, afters))
    n = min(len(befores), len(afters))
    pairs += [(b, None) for b in befores[n:]] + [(None, a) for a in afters[n:]]
    return pairs


def read_cvefixes(path: str) -> Iterator[dict | Rejected]:
    """Raw records for every Python method of a CVEfixes database (local path or ``s3://``)."""
    with local_file(path) as db:
        con = _open(path, db)
        try:
            yield from _records(con, path)
        finally:
            con.close()


def _records(con: sqlite3.Connection, path: str) -> Iterator[dict | Rejected]:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    fixes, cwes, severities = _fixes(con), _cwes(con, tables), _severities(con, tables)
    join = "FROM method_change m JOIN file_change f ON m.file_change_id = f.file_change_id"
    other = con.execute(f"SELECT count(*) {join} WHERE NOT {_PYTHON}").fetchone()[0]
    if other:
        log.info("cvefixes:%s: %d methods in other languages not read (only Python is supported)", path, other)
    groups: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
    query = (f"SELECT m.method_change_id, m.file_change_id, m.name, m.signature, m.start_line, m.end_line, "
             f"m.code, m.before_change, f.filename, f.diff_parsed, f.hash {join} WHERE {_PYTHON} "
             "ORDER BY f.file_change_id, m.name, m.method_change_id")
    for row in con.execute(query):
        groups[(row["file_change_id"], row["name"])].append(row)
    diffs = _DiffCache()
    for (file_change_id, name), rows in groups.items():
        for index, (before, after) in enumerate(_pairs(rows)):
            pair_id = stable_id("cvefixes", file_change_id, name, index) if before and after else None
            for row in (before, after):
                if row is not None:
                    yield _record(row, pair_id, fixes, cwes, severities, path, diffs)


class _DiffCache:
    """Each file change's deleted lines, parsed once (every changed method of the file needs them)."""

    def __init__(self) -> None:
        self.parsed: dict[Any, list[int] | DiffError] = {}

    def __call__(self, row: sqlite3.Row) -> list[int] | DiffError:
        key = row["file_change_id"]
        if key not in self.parsed:
            try:
                self.parsed[key] = parse_deleted(row["diff_parsed"])
            except DiffError as exc:
                self.parsed[key] = exc
        return self.parsed[key]


def _record(row: sqlite3.Row, pair_id: str | None, fixes: dict, cwes: dict, severities: dict,
            path: str, diffs: _DiffCache) -> dict | Rejected:
    fix = fixes.get(row["hash"], {"repo_url": None, "cves": []})
    repo = repository_of(fix["repo_url"] or "")
    cve = fix["cves"][0] if fix["cves"] else None
    cwe = next((c for cve_id in fix["cves"] for c in cwes.get(cve_id, [])), None)
    before = _is_before(row["before_change"])
    start, end = _int(row["start_line"]), _int(row["end_line"])
    rec = {
        "id": f"cvefixes-{row['method_change_id']}",
        "code": _text(row["code"]),
        "label": 1 if before else 0,
        "cwe": cwe,
        "cve": cve,
        "severity": next((severities[c] for c in fix["cves"] if c in severities), None),
        "pair_id": pair_id,
        "source": "cvefixes",
        "group": repo or f"commit:{row['hash']}",
        "commit": f"{repo}/commit/{row['hash']}" if repo else None,
        "origin": ("cve-fix" if before else "cve-fix-after") if pair_id else
                  ("cve-fix-removed" if before else "cve-fix-added"),
        "_source": f"{path}#method_change_id={row['method_change_id']}",
    }
    if before and start is not None and end is not None:
        numbers = diffs(row)
        if isinstance(numbers, DiffError):
            return Rejected(rec["_source"], Reason.MALFORMED_DIFF,
                            f"file_change {row['file_change_id']}: diff_parsed {numbers}, so the fix's deleted "
                            "lines cannot be located in this method", id=rec["id"],
                            raw=(rec["code"] or "")[:2000])
        rec["vulnerable_lines"] = deleted_lines(numbers, start, end)
    return rec
