"""SVEN-style vulnerable/fixed pairs (``func_src_before`` / ``func_src_after``).

Each line yields two records sharing a ``pair_id``: the vulnerable function
(label 1, with ``vulnerable_lines`` from ``line_changes.deleted``) and its fix
(label 0).  The repository from ``commit_link`` becomes the split group, so no
repository straddles train and test.
"""

from __future__ import annotations

from typing import Iterator

from ..records import Reason, Rejected, cwe_of, stable_id
from ..store import list_uris
from .jsonl import decode_json_line, iter_lines

REQUIRED = ("func_src_before", "func_src_after")


def repository_of(commit_link: str) -> str | None:
    """'github.com/owner/repo/commit/sha' → 'github.com/owner/repo'."""
    if not commit_link:
        return None
    head = commit_link.split("/commit/")[0]
    return head.removeprefix("https://").removeprefix("http://") or None


def pair_records(obj: dict, source: str, line: int) -> list[dict]:
    """The two raw records for one SVEN line."""
    commit = obj.get("commit_link", "")
    pair_id = stable_id("sven", commit, obj.get("file_name"), obj.get("func_name"))
    cwe = cwe_of(obj.get("vul_type"))
    deleted = (obj.get("line_changes") or {}).get("deleted") or []
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
                  "vulnerable_lines": sorted({int(d["line_no"]) for d in deleted}), "origin": "cve-fix"}
    fixed = {**common, "id": f"{pair_id}-fix", "code": obj["func_src_after"], "label": 0,
             "origin": "cve-fix-after"}
    return [vulnerable, fixed]


def read_sven(path: str) -> Iterator[dict | Rejected]:
    """A SVEN file, or every ``*.jsonl`` below a folder or ``s3://`` prefix."""
    for file in list_uris(path, (".jsonl", ".jsonl.gz")):
        for number, raw in iter_lines(file):
            obj = decode_json_line(file, number, raw)
            if isinstance(obj, Rejected):
                yield obj
                continue
            missing = [k for k in REQUIRED if not obj.get(k)]
            if missing:
                yield Rejected(file, Reason.MISSING_CODE, f"SVEN record lacks {missing}", number,
                               raw=raw.decode("utf-8", "replace"))
                continue
            yield from pair_records(obj, file, number)
