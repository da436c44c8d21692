"""Analyst verdicts from where analysts work, turned into :mod:`feedback` records.

Analysts do not write feedback JSONL: they dismiss alerts in GitHub code scanning or
suppress results in a SARIF viewer.  ``streamguard-ml feedback import FILE`` reads either
and matches every verdict to the function and model version that was scanned, because a
verdict is only training data together with the function's code, and only a drift signal
together with the score of the version that made the prediction.  Both live in the store's
scan records (:func:`streamguard_ml.scan.save`: ``scans/<run>/<repo>/findings.jsonl``,
complete once ``summary.json`` exists), not in the exports.

Formats (detected from the content, not the file name):

* a **SARIF 2.1.0 log** (``{"version": "2.1.0", "runs": [...]}``): a result is matched by
  ``partialFingerprints["streamguardUnitHash/v1"]`` and, when its properties name them, the
  model and version; its ``suppressions`` (SARIF §3.35) give the verdict;
* a **GitHub code-scanning alert export** (the JSON array of
  ``GET /repos/{owner}/{repo}/code-scanning/alerts``; ``gh api --paginate`` output, several
  arrays back to back, is accepted too): alerts carry no fingerprint, so an alert is matched
  by path, rule id and line (``most_recent_instance.location``) against the newest complete
  scan holding a finding of that rule whose function spans the line.

Mapping (chosen so that no verdict becomes a label it does not support):

==========================================  ==============================================
SARIF suppression ``status``                 verdict
==========================================  ==============================================
``accepted`` or no status (§3.35.3)          false_positive
``rejected`` (the dismissal was refused)     true_positive
``underReview``                              skipped: no verdict yet
no ``suppressions`` / an empty list          skipped: no verdict
==========================================  ==============================================

Of several suppressions on one result, ``rejected`` wins over ``underReview``, which wins
over ``accepted``: a refused or pending dismissal must not become a "safe" label.

==========================================  ==============================================
GitHub alert                                 verdict
==========================================  ==============================================
dismissed, ``false positive``                false_positive
dismissed, ``used in tests``                 true_positive: the flagged pattern is real; the
                                             model sees only the code, not where it lives
dismissed, ``won't fix``                     skipped: says the fix is not worth it, not
                                             whether the code is vulnerable
dismissed, no or another reason              skipped
fixed                                        true_positive (the code was changed)
open                                         skipped: "open: no verdict"
another tool's alert                         skipped
==========================================  ==============================================

``ts`` of a record is when the verdict was given: the alert's ``dismissed_at`` / ``fixed_at``
(else ``updated_at``, ``created_at``); for SARIF, which has no verdict time, the suppression's
``properties.timeUtc``, else the run's invocation end (or start) time.  Only when none is given
is it the import time — then a re-import stores a second batch (``feedback.read`` still counts
each function once).  With a time given, the same file always yields the same batch.

Nothing is dropped silently: an entry without a verdict is *skipped*, an entry whose finding
is in no stored scan or that cannot be read is *rejected*; both are listed with a reason and
written to ``feedback/rejected/<id>.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from . import feedback as fb
from .records import Rejected, stable_id
from .sarif import TOOL
from .scan import FINGERPRINT_KEY
from .store import Store

SARIF, GITHUB = "sarif", "github-alerts"
TOOL_NAME = TOOL
RULE_PREFIX = "streamguard/"

#: Why an entry was set aside.  ``skipped``: it holds no verdict; the others: a verdict that was lost.
NO_VERDICT, UNMATCHED, INVALID, DUPLICATE = "no_verdict", "unmatched", "invalid_entry", "duplicate"

#: GitHub ``dismissed_reason`` → verdict; a reason not here is skipped.
GITHUB_DISMISSED = {"false positive": "false_positive", "used in tests": "true_positive"}
#: SARIF suppression status → verdict (None: no verdict yet); a missing status means accepted (§3.35.3).
SARIF_STATUS = {"accepted": "false_positive", "rejected": "true_positive", "underreview": None}
#: Of several suppressions the first status here that occurs decides.
SARIF_PRECEDENCE = ("rejected", "underreview", "accepted")

FIX_FORMAT = ("give a SARIF 2.1.0 log (an object with \"version\": \"2.1.0\" and \"runs\") or a GitHub code-scanning "
              "alert export (the JSON array of `gh api repos/OWNER/REPO/code-scanning/alerts --paginate`); "
              "feedback JSONL goes to `feedback add`")


class VerdictError(fb.FeedbackError):
    """The file as a whole cannot be imported (unreadable, unknown format, no scans to match)."""


@dataclass(frozen=True)
class Verdict:
    """One analyst verdict as read from an export, before it is matched to a scan."""

    entry: str
    verdict: str
    ts: str | None
    fingerprint: str | None = None
    model: str | None = None
    version: int | None = None
    path: str | None = None
    rule_id: str | None = None
    line: int | None = None


@dataclass
class ScanRecord:
    """One finding of one complete stored scan (a line of ``findings.jsonl``)."""

    finding: dict[str, Any]
    started_at: str
    key: str


@dataclass
class Outcome:
    """What an import did: the records to store and every entry set aside, with its reason."""

    format: str
    records: list[fb.Feedback] = field(default_factory=list)
    set_aside: list[Rejected] = field(default_factory=list)
    entries: int = 0

    def skip(self, source: str, entry: str, reason: str, detail: str, ident: str | None = None) -> None:
        self.set_aside.append(Rejected(source, reason, detail, id=ident, raw=entry))


# -- reading the file -------------------------------------------------------------------
def load(data: bytes, source: str) -> tuple[str, Any]:
    """The format and parsed document of an export, or :class:`VerdictError` naming the file and the fix."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        docs = list(_json_values(data.decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerdictError(f"{source}: not JSON ({exc}): {FIX_FORMAT}") from None
    if len(docs) == 1 and isinstance(docs[0], dict) and "runs" in docs[0] and "version" in docs[0]:
        if docs[0]["version"] != "2.1.0" or not isinstance(docs[0]["runs"], list):
            raise VerdictError(f"{source}: SARIF version {docs[0]['version']!r} with runs of type "
                               f"{type(docs[0]['runs']).__name__}: write SARIF 2.1.0 (`streamguard-ml scan --format sarif`)")
        return SARIF, docs[0]
    if docs and all(isinstance(d, list) for d in docs):
        alerts = [a for d in docs for a in d]
        if alerts and all(isinstance(a, dict) and "number" in a and "state" in a for a in alerts):
            return GITHUB, alerts
        if not alerts:
            raise VerdictError(f"{source}: an empty list: the export holds no alerts")
    raise VerdictError(f"{source}: neither a SARIF log nor a GitHub alert export: {FIX_FORMAT}")


def _json_values(text: str) -> Iterator[Any]:
    """Every JSON value in ``text``: one, or several back to back (``gh api --paginate`` prints a page each)."""
    decoder, pos = json.JSONDecoder(), 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        value, pos = decoder.raw_decode(text, pos)
        yield value


# -- SARIF -----------------------------------------------------------------------------
def sarif_verdicts(log: dict[str, Any], source: str, out: Outcome) -> list[Verdict]:
    """The verdicts of a SARIF log's suppressed results; unsuppressed and malformed results go to ``out``."""
    verdicts = []
    for r, run in enumerate(log["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("results", []), list):
            out.entries += 1
            out.skip(source, f"runs[{r}]", INVALID, "a run must be an object whose results are a list")
            continue
        when = _run_time(run)
        for k, result in enumerate(run.get("results", [])):
            out.entries += 1
            entry = f"runs[{r}].results[{k}]"
            try:
                v = sarif_verdict(result, entry, when)
            except ValueError as exc:
                out.skip(source, entry, INVALID, str(exc))
                continue
            if isinstance(v, str):
                out.skip(source, entry, NO_VERDICT, v, _fingerprint_of(result))
            else:
                verdicts.append(v)
    return verdicts


def sarif_verdict(result: Any, entry: str, when: str | None) -> Verdict | str:
    """A result's :class:`Verdict`, or why it has none (a string); ValueError when it cannot be read."""
    if not isinstance(result, dict):
        raise ValueError("a result must be a JSON object")
    suppressions = result.get("suppressions") or []
    if not isinstance(suppressions, list) or not all(isinstance(s, dict) for s in suppressions):
        raise ValueError("suppressions must be a list of objects (SARIF §3.35)")
    if not suppressions:
        return "not suppressed: no verdict"
    verdict = SARIF_STATUS[_decisive_status(suppressions)]
    if verdict is None:
        return "suppression under review: no verdict yet"
    fingerprint = _fingerprint_of(result)
    if not fingerprint:
        raise ValueError(f"no partialFingerprints[{FINGERPRINT_KEY!r}]: not a StreamGuard result, or written by "
                         "another tool version")
    props = result.get("properties") if isinstance(result.get("properties"), dict) else {}
    ts = next((s["properties"]["timeUtc"] for s in suppressions if isinstance(s.get("properties"), dict)
               and isinstance(s["properties"].get("timeUtc"), str)), when)
    return Verdict(entry, verdict, ts, fingerprint=fingerprint, model=props.get("model"),
                   version=props.get("version"))


def _decisive_status(suppressions: list[dict[str, Any]]) -> str:
    """The status that decides among several suppressions (see :data:`SARIF_PRECEDENCE`)."""
    statuses = set()
    for s in suppressions:
        status = s.get("status", "accepted")
        if not isinstance(status, str) or status.lower() not in SARIF_STATUS:
            raise ValueError(f"suppression status {status!r}: SARIF allows accepted, underReview or rejected")
        statuses.add(status.lower())
    return next(s for s in SARIF_PRECEDENCE if s in statuses)


def _fingerprint_of(result: Any) -> str | None:
    prints = result.get("partialFingerprints") if isinstance(result, dict) else None
    value = prints.get(FINGERPRINT_KEY) if isinstance(prints, dict) else None
    return value if isinstance(value, str) and value else None


def _run_time(run: dict[str, Any]) -> str | None:
    """When the run's invocation ended (else started): the verdict time of a log that has no other."""
    for inv in run.get("invocations") or []:
        if isinstance(inv, dict):
            for name in ("endTimeUtc", "startTimeUtc"):
                if isinstance(inv.get(name), str) and inv[name]:
                    return inv[name]
    return None


# -- GitHub code-scanning alerts --------------------------------------------------------
def github_verdicts(alerts: list[dict[str, Any]], source: str, out: Outcome) -> list[Verdict]:
    """The verdicts of an alert export; open, ambiguous and malformed alerts go to ``out``."""
    verdicts = []
    for alert in alerts:
        out.entries += 1
        entry = f"alert #{alert['number']}"
        try:
            v = github_verdict(alert, entry)
        except (ValueError, TypeError) as exc:
            out.skip(source, entry, INVALID, str(exc))
            continue
        if isinstance(v, str):
            out.skip(source, entry, NO_VERDICT, v)
        else:
            verdicts.append(v)
    return verdicts


def github_verdict(alert: dict[str, Any], entry: str) -> Verdict | str:
    """An alert's :class:`Verdict`, or why it has none (a string); ValueError when it cannot be read."""
    tool = _obj(alert.get("tool")).get("name")
    rule = _obj(alert.get("rule")).get("id")
    if tool not in (None, TOOL_NAME) or (isinstance(rule, str) and not rule.startswith(RULE_PREFIX)):
        return f"not a {TOOL_NAME} alert (tool {tool!r}, rule {rule!r})"
    verdict, reason = _github_state(alert)
    if verdict is None:
        return reason
    location = _obj(_obj(alert.get("most_recent_instance")).get("location"))
    path, line = location.get("path"), location.get("start_line")
    if not isinstance(rule, str) or not isinstance(path, str) or not path:
        raise ValueError("needs rule.id and most_recent_instance.location.path to be matched to a scan")
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        raise ValueError(f"most_recent_instance.location.start_line {line!r} is not a line number")
    ts = next((alert[k] for k in ("dismissed_at" if alert["state"] == "dismissed" else "fixed_at",
                                    "updated_at", "created_at") if isinstance(alert.get(k), str) and alert[k]), None)
    return Verdict(entry, verdict, ts, path=path, rule_id=rule, line=line)


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a field GitHub left null or malformed)."""
    return value if isinstance(value, dict) else {}


def _github_state(alert: dict[str, Any]) -> tuple[str | None, str]:
    """(verdict, why) of an alert's state; verdict None: skipped, for the reason given."""
    state = alert["state"]
    if state == "open":
        return None, "open: no verdict"
    if state == "fixed":
        return "true_positive", "fixed"
    if state == "dismissed":
        reason = alert.get("dismissed_reason")
        if reason in GITHUB_DISMISSED:
            return GITHUB_DISMISSED[reason], f"dismissed: {reason}"
        if reason == "won't fix":
            return None, "dismissed as won't fix: says nothing on whether the code is vulnerable"
        return None, f"dismissed with reason {reason!r}: no verdict"
    raise ValueError(f"state {state!r}: GitHub uses open, dismissed or fixed")


# -- the store's scans ------------------------------------------------------------------
def scan_records(store: Store) -> list[ScanRecord]:
    """Every finding of every complete scan in the store, newest scan first."""
    out: list[ScanRecord] = []
    for key in store.list("scans"):
        if not key.endswith("/summary.json"):
            continue
        folder = key[: -len("/summary.json")]
        findings_key = f"{folder}/findings.jsonl"
        if not store.exists(findings_key):
            continue
        started = str(store.read_json(key).get("started_at") or "")
        out += [ScanRecord(f, str(f.get("started_at") or started), findings_key) for f in store.read_jsonl(findings_key)]
    return sorted(out, key=lambda s: (s.started_at, s.key), reverse=True)


def match(v: Verdict, scans: list[ScanRecord]) -> ScanRecord | str:
    """The stored finding a verdict is about, or why there is none."""
    if v.fingerprint is not None:
        return _match_fingerprint(v, scans)
    return _match_location(v, scans)


def _match_fingerprint(v: Verdict, scans: list[ScanRecord]) -> ScanRecord | str:
    same = [s for s in scans if s.finding.get("fingerprint") == v.fingerprint]
    if not same:
        return f"fingerprint {v.fingerprint} is in no stored scan (save the scan with scan.save)"
    if v.model is None and v.version is None:
        return same[0]
    exact = [s for s in same if s.finding.get("model") == v.model and s.finding.get("version") == v.version]
    if exact:
        return exact[0]
    stored = sorted({f"{s.finding.get('model')} v{s.finding.get('version')}" for s in same})
    return f"fingerprint {v.fingerprint} was scanned by {', '.join(stored)}, not {v.model} v{v.version}"


def _match_location(v: Verdict, scans: list[ScanRecord]) -> ScanRecord | str:
    hits = [s for s in scans if s.finding.get("path") == v.path and s.finding.get("rule_id") == v.rule_id
            and _spans(s.finding, v.line)]
    if not hits:
        return f"no stored scan has a {v.rule_id} finding in {v.path} spanning line {v.line}"
    newest = [s for s in hits if s.key == hits[0].key]
    return min(newest, key=lambda s: (_region(s.finding) != v.line, s.finding["end_line"] - s.finding["start_line"]))


def _spans(finding: dict[str, Any], line: int | None) -> bool:
    start, end = finding.get("start_line"), finding.get("end_line")
    return isinstance(start, int) and isinstance(end, int) and line is not None and start <= line <= end


def _region(finding: dict[str, Any]) -> int | None:
    top = finding.get("top_lines") or []
    return top[0].get("line") if top and isinstance(top[0], dict) else finding.get("start_line")


# -- verdicts → feedback ----------------------------------------------------------------
def to_feedback(v: Verdict, record: ScanRecord, now: str) -> fb.Feedback:
    """The feedback record of a matched verdict (validated like every other feedback)."""
    f = record.finding
    return fb.validate({"id": f.get("fingerprint"), "model": f.get("model"), "version": f.get("version"),
                        "score": f.get("score"), "predicted": 1, "verdict": v.verdict, "ts": v.ts or now,
                        "code": f.get("code")})


def convert(verdicts: Iterable[Verdict], scans: list[ScanRecord], source: str, out: Outcome, now: str) -> None:
    """Match each verdict and add its record to ``out``; unmatched ones and repeats are set aside."""
    chosen: dict[tuple[str, str], tuple[Verdict, fb.Feedback]] = {}
    for v in verdicts:
        hit = match(v, scans)
        if isinstance(hit, str):
            out.skip(source, v.entry, UNMATCHED, hit, v.fingerprint)
            continue
        try:
            record = to_feedback(v, hit, now)
        except ValueError as exc:
            out.skip(source, v.entry, INVALID, f"{exc} (matched a finding of {hit.key})", v.fingerprint)
            continue
        key = (record.model, record.id)
        if key in chosen:
            older, newer = sorted([chosen[key], (v, record)], key=lambda p: p[1].timestamp)
            out.skip(source, older[0].entry, DUPLICATE, f"same function as {newer[0].entry}, whose later verdict "
                     f"({newer[1].verdict}) is kept", record.id)
            chosen[key] = newer
        else:
            chosen[key] = (v, record)
    out.records += [r for _, r in chosen.values()]


def read_verdicts(store: Store, data: bytes, source: str, now: datetime | None = None) -> Outcome:
    """Parse an export and match it to the store's scans, storing nothing."""
    fmt, doc = load(data, source)
    scans = scan_records(store)
    if not scans:
        raise VerdictError(f"{source}: the store {store.uri('scans')} holds no saved scans to match verdicts to: "
                           "use the store the scan was saved in (scan.save)")
    out = Outcome(fmt)
    verdicts = sarif_verdicts(doc, source, out) if fmt == SARIF else github_verdicts(doc, source, out)
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    convert(verdicts, scans, source, out, stamp)
    return out


def import_file(store: Store, data: bytes, source: str, now: datetime | None = None) -> dict[str, Any]:
    """Import an export: matched verdicts appended with :func:`feedback.add`, the rest written to
    ``feedback/rejected/``; returns the summary the CLI prints."""
    out = read_verdicts(store, data, source, now)
    uris = fb.add(store, out.records) if out.records else []
    rejected_file = None
    if out.set_aside:
        key = f"{fb.PREFIX}/rejected/{stable_id(source, hashlib.sha256(data).hexdigest())}.jsonl"
        store.write_jsonl(key, (r.to_dict() for r in out.set_aside))
        rejected_file = store.uri(key)
    return summary(out, source, uris, rejected_file)


def summary(out: Outcome, source: str, uris: list[str], rejected_file: str | None) -> dict[str, Any]:
    """Counts by verdict and by reason, the entries set aside and where everything went."""
    by_verdict: dict[str, int] = {}
    for r in out.records:
        by_verdict[r.verdict] = by_verdict.get(r.verdict, 0) + 1
    by_reason: dict[str, int] = {}
    for r in out.set_aside:
        by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
    skipped = by_reason.get(NO_VERDICT, 0)
    return {"source": source, "format": out.format, "entries": out.entries, "imported": len(out.records),
            "skipped": skipped, "rejected": len(out.set_aside) - skipped, "verdicts": by_verdict,
            "reasons": by_reason, "set_aside": [{"entry": r.raw, "reason": r.reason, "detail": r.detail}
                                                for r in out.set_aside],
            "partitions": uris, "rejected_file": rejected_file}


__all__ = ["GITHUB", "SARIF", "Outcome", "ScanRecord", "Verdict", "VerdictError", "convert", "github_verdict",
           "import_file", "load", "match", "read_verdicts", "sarif_verdict", "scan_records", "summary"]
