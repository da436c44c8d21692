"""A scan as a SARIF 2.1.0 log: what GitHub code scanning, IDEs and SARIF viewers read.

Choices GitHub's ingestion depends on (docs.github.com, "SARIF support for code scanning"):

* one rule per vulnerability class, its CWE in ``properties.cwe`` and in the tags
  (``external/cwe/cwe-89``, the form code scanning links), with ``security-severity``
  (a number 0-10: GitHub shows ≥ 9 critical, ≥ 7 high, ≥ 4 medium) — the highest of that
  rule's results, since GitHub reads severity from the rule;
* each result's ``level`` (``error`` for a score ≥ 0.9, else ``warning``) and its own
  ``security-severity`` in its properties: the threshold maps to 4.0, a certain finding
  to 10.0;
* the region is the explanation's top line (the other top lines are related locations),
  not the whole function, so the alert points at the line to fix;
* ``partialFingerprints`` carry :func:`streamguard_ml.scan.fingerprint`, stable while the
  function is unchanged, so a re-scan updates alerts instead of opening new ones;
* files and functions that were not scanned are ``toolExecutionNotifications`` of the
  run's invocation, so a report never looks cleaner than the scan was.
"""

from __future__ import annotations

from typing import Any

from .records import CWE_NAMES
from .scan import FINGERPRINT_KEY, Finding, ScanResult

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL = "StreamGuard ML"
#: A score at or above this is an ``error``; below it (but flagged) a ``warning``.
ERROR_SCORE = 0.9


def severity(score: float, threshold: float) -> float:
    """``security-severity`` of a flagged score: 4.0 (medium) at the threshold, rising to 10.0 at 1."""
    span = max(1.0 - threshold, 1e-9)
    return round(min(10.0, max(4.0, 4.0 + 6.0 * (score - threshold) / span)), 1)


def _title(cwe: str | None) -> str:
    return CWE_NAMES.get(cwe or "", "vulnerable_code").replace("_", " ")


def rule(cwe: str | None, results: list[dict[str, Any]]) -> dict[str, Any]:
    from .scan import rule_id

    title = _title(cwe)
    what = f"{title[0].upper()}{title[1:]}" + (f" ({cwe})" if cwe else "")
    tags = ["security", "machine-learning"] + ([f"external/cwe/{cwe.lower()}"] if cwe else [])
    top = max((r["properties"]["security-severity"] for r in results), default=4.0)
    return {"id": rule_id(cwe), "name": "".join(w.capitalize() for w in title.split()),
            "shortDescription": {"text": what},
            "fullDescription": {"text": f"{what}: a learned detector scored this code as likely vulnerable. "
                                        "The region is the line that contributed most to the score."},
            "help": {"text": "Review the flagged lines for untrusted input reaching the sink without validation. "
                             "If the code is safe, dismiss the alert as a false positive: "
                             "`streamguard-ml feedback import` feeds dismissals back into training."},
            "defaultConfiguration": {"level": "warning"},
            "properties": {"cwe": cwe, "tags": tags, "precision": "medium", "problem.severity": "warning",
                           "security-severity": f"{top:.1f}"}}


def _location(path: str, line: int, text: str | None = None, message: str | None = None,
              ident: int | None = None) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": line}
    if text:
        region["snippet"] = {"text": text}
    loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": path, "uriBaseId": "%SRCROOT%"},
                                                "region": region}}
    if ident is not None:
        loc["id"] = ident
    if message:
        loc["message"] = {"text": message}
    return loc


def result(finding: Finding, scan: ScanResult) -> dict[str, Any]:
    top = finding.top_lines
    first = top[0] if top else {"line": finding.start_line, "text": None}
    where = f"{finding.function} (lines {finding.start_line}-{finding.end_line})"
    message = (f"{_title(finding.cwe).capitalize()} likely in {where}: score {finding.score:.3f} at threshold "
               f"{scan.threshold:.3f} ({scan.model} v{scan.version}).")
    related = [_location(finding.path, t["line"], t["text"], f"also contributes (attribution {t['attribution']:+.3f})",
                         ident=k) for k, t in enumerate(top[1:], start=1)]
    out: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "level": "error" if finding.score >= ERROR_SCORE else "warning",
        "message": {"text": message},
        "locations": [_location(finding.path, first["line"], first.get("text"))],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": {"score": finding.score, "threshold": scan.threshold,
                       "security-severity": severity(finding.score, scan.threshold),
                       "model": scan.model, "version": scan.version, "function": finding.function,
                       "kind": finding.kind, "startLine": finding.start_line, "endLine": finding.end_line},
    }
    if related:
        out["relatedLocations"] = related
    return out


def notification(note: Any) -> dict[str, Any]:
    text = f"{note.path}" + (f":{note.function}" if note.function else "") + f" not scanned ({note.reason}): {note.detail}"
    out: dict[str, Any] = {"level": "warning", "message": {"text": text},
                           "descriptor": {"id": f"streamguard/not-scanned/{note.reason}"},
                           "properties": note.to_dict()}
    out["locations"] = [_location(note.path, note.line or 1)]
    return out


def to_sarif(scan: ScanResult, tool_version: str) -> dict[str, Any]:
    """The SARIF log of one scan: one run, its rules, results and notifications."""
    results = [result(f, scan) for f in scan.findings]
    by_rule: dict[str, tuple[str | None, list[dict[str, Any]]]] = {}
    for f, r in zip(scan.findings, results):
        by_rule.setdefault(f.rule_id, (f.cwe, []))[1].append(r)
    rules = [rule(cwe, rs) for _, (cwe, rs) in sorted(by_rule.items())]
    index = {r["id"]: k for k, r in enumerate(rules)}
    for r in results:
        r["ruleIndex"] = index[r["ruleId"]]
    driver = {"name": TOOL, "version": tool_version, "semanticVersion": tool_version,
              "rules": rules,
              "properties": {"model": scan.model, "modelVersion": scan.version, "modelType": scan.model_type,
                             "threshold": scan.threshold}}
    invocation = {"executionSuccessful": True, "startTimeUtc": scan.started_at.replace("+00:00", "Z"),
                  "toolExecutionNotifications": [notification(n) for n in scan.notifications],
                  "properties": scan.summary()}
    run = {"tool": {"driver": driver}, "automationDetails": {"id": f"streamguard/{scan.model}/"},
           "originalUriBaseIds": {"%SRCROOT%": {"uri": _root_uri(scan.root)}},
           "invocations": [invocation], "results": results, "columnKind": "unicodeCodePoints"}
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def _root_uri(root: str) -> str:
    from pathlib import Path

    path = Path(root).resolve()
    return (path if path.is_dir() else path.parent).as_uri() + "/"


__all__ = ["ERROR_SCORE", "SCHEMA", "TOOL", "notification", "result", "rule", "severity", "to_sarif"]
