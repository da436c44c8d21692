"""SVEN-style vulnerable/fixed pairs (``func_src_before`` / ``func_src_after``).

Each line yields two records sharing a ``pair_id``: the vulnerable function
(label 1, with ``vulnerable_lines`` from ``line_changes.deleted``) and its fix
(label 0).  The repository from ``commit_link`` becomes the split group, so no
repository straddles train and test.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..records import MAX_LINE_NUMBER, Reason, Rejected, cwe_of, describe, excerpt, stable_id, text_fault
from ..store import list_uris
from .jsonl import json_lines

REQUIRED = ("func_src_before", "func_src_after")
#: Fields that name the pair (its id is made from them) or its class: text, when present.
TEXT = ("commit_link", "file_name", "func_name", "vul_type")


def repository_of(commit_link: str) -> str | None:
    """'github.com/owner/repo/commit/sha' → 'github.com/owner/repo'."""
    if not commit_link:
        return None
    head = commit_link.split("/commit/")[0]
    return head.removeprefix("https://").removeprefix("http://") or None


def deleted_line_numbers(line_changes: Any) -> list[int] | str:
    """``line_changes.deleted[].line_no`` as sorted line numbers, or why the field is malformed."""
    if line_changes is None:
        return []
    if not isinstance(line_changes, dict):
        return f"field 'line_changes' is {describe(line_changes)}: SVEN gives an object with 'deleted' and 'added'"
    deleted = line_changes.get("deleted") or []
    if not isinstance(deleted, list):
        return f"field 'line_changes.deleted' is {describe(deleted)}: SVEN gives a list of {{line_no, line}} objects"
    numbers = []
    for index, entry in enumerate(deleted):
        if not isinstance(entry, dict):
            return (f"field 'line_changes.deleted' item {index} is {describe(entry)}: SVEN gives "
                    "{line_no, line} objects")
        number = entry.get("line_no")
        if type(number) is not int or not 1 <= number <= MAX_LINE_NUMBER:
            return (f"field 'line_no' of line_changes.deleted item {index} is {describe(number)}: "
                    "a line number (an integer from 1)")
        numbers.append(number)
    return sorted(set(numbers))


def line_fault(obj: dict) -> tuple[str, str] | None:
    """(reason, detail) when one SVEN line cannot become a pair, else None."""
    missing = [k for k in REQUIRED if not obj.get(k)]
    if missing:
        return Reason.MISSING_CODE, f"SVEN record lacks {missing}"
    for name in (*REQUIRED, *TEXT):
        if found := text_fault(name, obj.get(name)):
            return found
    lines = deleted_line_numbers(obj.get("line_changes"))
    return (Reason.INVALID_FIELD, lines) if isinstance(lines, str) else None


def pair_records(obj: dict, source: str, line: int) -> list[dict]:
    """The two raw records for one SVEN line (that :func:`line_fault` found sound)."""
    commit = obj.get("commit_link", "")
    pair_id = stable_id("sven", commit, obj.get("file_name"), obj.get("func_name"))
    cwe = cwe_of(obj.get("vul_type"))
    deleted = deleted_line_numbers(obj.get("line_changes"))
    common = {
        "cwe": cwe,
        "pair_id": pair_id,
        "source": "sven",
        "group": repository_of(commit) or f"commit:{commit}",
        "commit": commit or None,
        "_source": source,
        "_line": line,
    }
    vulnerable = {**common, "id": f"{pair_id}-vul", "code": obj["func_src_before"], "label": 1,
                  "vulnerable_lines": deleted, "origin": "cve-fix"}
    fixed = {**common, "id": f"{pair_id}-fix", "code": obj["func_src_after"], "label": 0,
             "origin": "cve-fix-after"}
    return [vulnerable, fixed]


def read_sven(path: str) -> Iterator[dict | Rejected]:
    """A SVEN file, or every ``*.jsonl`` below a folder or ``s3://`` prefix."""
    for file in list_uris(path, (".jsonl", ".jsonl.gz")):
        for number, raw, obj in json_lines(file):
            if isinstance(obj, Rejected):
                yield obj
                continue
            fault = line_fault(obj)
            if fault:
                yield Rejected(file, *fault, number, raw=excerpt(raw.decode("utf-8", "replace")))
                continue
            yield from pair_records(obj, file, number)
