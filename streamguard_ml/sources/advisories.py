"""OSV and GitHub Security Advisory JSON: CVE → CWE / severity metadata joined onto samples.

Advisories are not samples: an ``osv:PATH`` (or ``ghsa:PATH``) source is read
into an :class:`AdvisoryIndex` first, and every raw record of the other sources
is then enriched from it — matched by CVE / GHSA id (the record's ``cve``) or by
its fix commit (the record's ``commit``, e.g. from SVEN's ``commit_link`` or
CVEfixes' ``fixes``).  A match fills a missing ``cwe`` and ``cve`` and sets
``severity``; nothing the sample already states is overwritten.

Both shapes are understood:

* OSV (``github/advisory-database``, osv.dev): ``id``, ``aliases``,
  ``database_specific.cwe_ids`` / ``.severity``, ``references[].url``;
* GitHub's REST API: ``ghsa_id``, ``cve_id``, ``severity``, ``cwes[].cwe_id``,
  ``references`` (URLs), ``identifiers[]``.

PATH is a ``.json`` file (one advisory or a list), a ``.jsonl`` file, or a folder
/ ``s3://`` prefix holding them (the advisory-database layout works as is).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..records import cwe_of
from ..store import list_uris, read_uri_bytes

_COMMIT_URL = re.compile(r"(?:https?://)?(?P<repo>(?:github\.com|gitlab\.com|bitbucket\.org)/[^/\s]+/[^/\s#?]+)"
                         r"/-?/?commits?/(?P<sha>[0-9a-fA-F]{7,40})")
_SEVERITY = {"moderate": "medium", "critical": "critical", "high": "high", "medium": "medium", "low": "low"}


class AdvisoryError(ValueError):
    """An advisory file cannot be read; the message names it."""


def commit_key(url: str | None) -> str | None:
    """'https://github.com/o/r/commit/ABC…' → 'github.com/o/r/commit/abc…' (the join key for fix commits)."""
    match = _COMMIT_URL.search(url or "")
    if not match:
        return None
    repo = match["repo"].removesuffix(".git").lower()
    return f"{repo}/commit/{match['sha'].lower()}"


@dataclass
class Advisory:
    """What one advisory says about a vulnerability."""

    id: str
    aliases: list[str] = field(default_factory=list)
    cwes: list[str] = field(default_factory=list)
    severity: str | None = None
    commits: list[str] = field(default_factory=list)

    @property
    def cve(self) -> str | None:
        return next((a for a in [self.id, *self.aliases] if a.upper().startswith("CVE-")), None)


def parse_advisory(doc: dict[str, Any]) -> Advisory:
    """One OSV or GitHub REST advisory document → :class:`Advisory`."""
    specific = doc.get("database_specific") or {}
    ident = doc.get("id") or doc.get("ghsa_id")
    if not ident:
        raise AdvisoryError("advisory has neither 'id' (OSV) nor 'ghsa_id' (GitHub)")
    aliases = list(doc.get("aliases") or [])
    aliases += [doc["cve_id"]] if doc.get("cve_id") else []
    aliases += [i["value"] for i in doc.get("identifiers") or [] if isinstance(i, dict) and i.get("value")]
    cwes = list(specific.get("cwe_ids") or [])
    cwes += [c.get("cwe_id") for c in doc.get("cwes") or [] if isinstance(c, dict)]
    for affected in doc.get("affected") or []:
        cwes += (affected.get("database_specific") or {}).get("cwe_ids") or []
    severity = specific.get("severity") or (doc["severity"] if isinstance(doc.get("severity"), str) else None)
    urls = [r.get("url") if isinstance(r, dict) else r for r in doc.get("references") or []]
    return Advisory(
        id=str(ident),
        aliases=sorted({str(a) for a in aliases if a and a != ident}),
        cwes=list(dict.fromkeys(c for c in (cwe_of(x) for x in cwes) if c)),
        severity=_SEVERITY.get(str(severity).lower()) if severity else None,
        commits=sorted({k for k in (commit_key(u) for u in urls) if k}),
    )


def _documents(uri: str) -> Iterable[dict[str, Any]]:
    data = read_uri_bytes(uri)
    try:
        if uri.endswith(".jsonl"):
            docs: Any = [json.loads(line) for line in data.splitlines() if line.strip()]
        else:
            docs = json.loads(data)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, digits past Python's limit
        raise AdvisoryError(f"{uri} is not valid JSON ({str(exc)[:160]}): advisories must be OSV or GitHub "
                            "JSON") from exc
    for doc in docs if isinstance(docs, list) else [docs]:
        if not isinstance(doc, dict):
            raise AdvisoryError(f"{uri}: expected advisory objects, got {type(doc).__name__}")
        yield doc


class AdvisoryIndex:
    """Advisories by id / alias and by fix commit, and the join onto raw records."""

    def __init__(self) -> None:
        self.by_id: dict[str, Advisory] = {}
        self.by_commit: dict[str, Advisory] = {}
        self.count = 0
        self.enriched = 0

    def add(self, adv: Advisory) -> None:
        self.count += 1
        for key in [adv.id, *adv.aliases]:
            self.by_id.setdefault(key.upper(), adv)
        for commit in adv.commits:
            self.by_commit.setdefault(commit, adv)

    def lookup(self, rec: dict[str, Any]) -> Advisory | None:
        cve = rec.get("cve")
        if cve and str(cve).upper() in self.by_id:
            return self.by_id[str(cve).upper()]
        key = commit_key(rec.get("commit"))
        return self.by_commit.get(key) if key else None

    def enrich(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Fill ``cwe`` / ``cve`` where missing and set ``severity`` from the matching advisory."""
        adv = self.lookup(rec)
        if adv is None:
            return rec
        self.enriched += 1
        if not rec.get("cwe") and adv.cwes:
            rec["cwe"] = adv.cwes[0]
        rec["cve"] = rec.get("cve") or adv.cve
        rec["severity"] = rec.get("severity") or adv.severity
        rec["advisory"] = adv.id
        return rec

    def summary(self) -> dict[str, int]:
        return {"advisories": self.count, "enriched_records": self.enriched}


def read_advisories(path: str, index: AdvisoryIndex | None = None) -> AdvisoryIndex:
    """Load every advisory under ``path`` (file, folder or ``s3://`` prefix) into ``index``."""
    index = index if index is not None else AdvisoryIndex()
    for uri in list_uris(path, (".json", ".jsonl")):
        for doc in _documents(uri):
            try:
                index.add(parse_advisory(doc))
            except AdvisoryError as exc:
                raise AdvisoryError(f"{uri}: {exc}") from None
            except (TypeError, AttributeError, ValueError) as exc:  # a field of another shape than OSV / GitHub's
                raise AdvisoryError(f"{uri}: advisory {str(doc.get('id') or doc.get('ghsa_id'))[:80]!r} is not "
                                    f"OSV or GitHub advisory JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    return index
