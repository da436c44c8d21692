"""``feedback import``: SARIF suppressions and GitHub code-scanning alerts become feedback (issue 20 item 4).

The store's scans are saved through ``scan.save`` from hand-built findings: no model is needed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streamguard_ml import feedback as fb
from streamguard_ml import layout
from streamguard_ml import scan as sc
from streamguard_ml.verdicts import VerdictError, import_file

MODEL = "taint-flow-gnn"
NOW = datetime(2026, 11, 25, 9, tzinfo=timezone.utc)
QUERY = "def query(c, x):\n    q = 'SELECT ' + x\n    c.execute(q)\n    return c\n"
LOOKUP = "def lookup(c, name):\n    c.execute('SELECT * FROM t WHERE n=' + name)\n"
RUN = "def run(cmd):\n    import os\n    os.system(cmd)\n"


def finding(path: str, name: str, code: str, start: int, top: int, cwe: str, score: float) -> sc.Finding:
    end = start + len(code.splitlines()) - 1
    return sc.Finding(path, name, "function", start, end, score, cwe,
                      [{"line": top, "attribution": 0.5, "text": code.splitlines()[top - start].strip()}],
                      sc.fingerprint(path, name, code), code)


A = finding("app/db.py", "query", QUERY, 10, 12, "CWE-89", 0.91)
B = finding("app/db.py", "lookup", LOOKUP, 20, 21, "CWE-89", 0.77)
C = finding("app/shell.py", "run", RUN, 3, 5, "CWE-78", 0.66)


def save_scan(store, tmp_path: Path, version: int, started: str, findings: list[sc.Finding], run: str) -> dict:
    result = sc.ScanResult(str(tmp_path), MODEL, version, "gnn", 0.5, findings=findings, files=2, functions=5,
                           started_at=started)
    return sc.save(store, layout.scan_dir(run, "acme/app"), result, "1.0.0")


@pytest.fixture
def scanned(store, tmp_path):
    """Two scans of one repository: v1 (older, A only, a lower score) and v2 (A, B, C)."""
    old = dataclasses.replace(A, score=0.6)
    save_scan(store, tmp_path, 1, "2026-11-10T08:00:00+00:00", [old], "scan-v1")
    uris = save_scan(store, tmp_path, 2, "2026-11-20T10:00:00+00:00", [A, B, C], "scan-v2")
    return store, store.read_json(store.key_of(uris["sarif"]))


def write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def suppressed_log(sarif: dict) -> dict:
    log = copy.deepcopy(sarif)
    run = log["runs"][0]
    run["invocations"][0]["endTimeUtc"] = "2026-11-21T09:30:00Z"
    by_fp = {r["partialFingerprints"][sc.FINGERPRINT_KEY]: r for r in run["results"]}
    by_fp[A.fingerprint]["suppressions"] = [{"kind": "external", "justification": "x is a constant"}]  # no status
    by_fp[B.fingerprint]["suppressions"] = [{"kind": "external", "status": "accepted"},
                                            {"kind": "inSource", "status": "rejected", "justification": "real"}]
    by_fp[C.fingerprint]["suppressions"] = [{"kind": "external", "status": "underReview"}]
    unknown = copy.deepcopy(by_fp[A.fingerprint])
    unknown["partialFingerprints"] = {sc.FINGERPRINT_KEY: "0" * 32}
    bad = copy.deepcopy(by_fp[B.fingerprint])
    bad["suppressions"] = [{"kind": "external", "status": "maybe"}]
    other_version = copy.deepcopy(by_fp[C.fingerprint])
    other_version["properties"]["version"] = 7
    other_version["suppressions"] = [{"kind": "external", "status": "accepted",
                                      "properties": {"timeUtc": "2026-11-22T10:00:00Z"}}]
    run["results"] += [unknown, bad, other_version]
    return log


def rejected_rows(result: dict) -> list[dict]:
    return [json.loads(line) for line in Path(result["rejected_file"].removeprefix("file://")).read_text().splitlines()]


def test_sarif_suppressions_become_feedback_matched_by_fingerprint_and_version(scanned, tmp_path):
    store, sarif = scanned
    data = json.dumps(suppressed_log(sarif)).encode()
    result = import_file(store, data, "alerts.sarif", now=NOW)
    assert result["format"] == "sarif" and result["entries"] == 6
    assert (result["imported"], result["skipped"], result["rejected"]) == (2, 1, 3)
    records = {r.id: r for r in fb.read(store, fb.partitions(store))}
    assert set(records) == {A.fingerprint, B.fingerprint}
    a, b = records[A.fingerprint], records[B.fingerprint]
    assert (a.verdict, a.version, a.score, a.predicted, a.code) == ("false_positive", 2, 0.91, 1, QUERY)
    assert b.verdict == "true_positive" and b.code == LOOKUP  # a rejected suppression outranks an accepted one
    assert a.ts == "2026-11-21T09:30:00+00:00"  # the invocation's end: SARIF has no verdict time
    reasons = {(r["entry"], r["reason"]) for r in result["set_aside"]}
    assert reasons == {("runs[0].results[2]", "no_verdict"), ("runs[0].results[3]", "unmatched"),
                       ("runs[0].results[4]", "invalid_entry"), ("runs[0].results[5]", "unmatched")}
    details = {r["entry"]: r["detail"] for r in result["set_aside"]}
    assert "under review" in details["runs[0].results[2]"] and "in no stored scan" in details["runs[0].results[3]"]
    assert "'maybe'" in details["runs[0].results[4]"]
    assert "taint-flow-gnn v2, not taint-flow-gnn v7" in details["runs[0].results[5]"]
    stored = rejected_rows(result)
    assert [(r["raw"], r["reason"]) for r in stored] == [(r["entry"], r["reason"]) for r in result["set_aside"]]
    assert all(r["detail"] and r["source"] == "alerts.sarif" for r in stored)

    again = import_file(store, data, "alerts.sarif", now=NOW)  # idempotent: the same batch, the same set-aside file
    assert again["partitions"] == result["partitions"] and again["rejected_file"] == result["rejected_file"]
    assert len(fb.partitions(store)) == 1

    seen, keys = fb.since(store, datetime(2026, 11, 20, tzinfo=timezone.utc), MODEL)  # what drift reads
    assert {r.id for r in seen} == {A.fingerprint, B.fingerprint} and keys == fb.partitions(store)
    raw = list(fb.as_raw_records(seen, "feedback"))
    assert sorted((r["code"], r["label"]) for r in raw) == sorted([(QUERY, 0), (LOOKUP, 1)])


def alert(number: int, state: str, path: str, line: int, rule: str = "streamguard/sql-injection", **extra) -> dict:
    return {"number": number, "state": state, "created_at": "2026-11-20T11:00:00Z", "updated_at": "2026-11-23T12:00:00Z",
            "dismissed_reason": None, "dismissed_comment": None, "dismissed_at": None, "fixed_at": None,
            "rule": {"id": rule, "severity": "warning", "security_severity_level": "high"},
            "tool": {"name": "StreamGuard ML", "guid": None, "version": "1.0.0"},
            "most_recent_instance": {"ref": "refs/heads/main", "state": state, "commit_sha": "abc",
                                     "location": {"path": path, "start_line": line, "end_line": line,
                                                  "start_column": 1, "end_column": 10}}, **extra}


def github_export() -> list[dict]:
    return [
        alert(1, "dismissed", "app/db.py", 12, dismissed_reason="false positive", dismissed_at="2026-11-22T08:00:00Z",
              dismissed_comment="constant"),
        alert(2, "fixed", "app/shell.py", 5, rule="streamguard/command-injection", fixed_at="2026-11-23T07:00:00Z"),
        alert(3, "open", "app/db.py", 21),
        alert(4, "dismissed", "app/missing.py", 3, dismissed_reason="false positive", dismissed_at="2026-11-22T08:00:00Z"),
        alert(5, "dismissed", "app/db.py", 21, dismissed_reason="won't fix", dismissed_at="2026-11-22T08:00:00Z"),
        alert(6, "dismissed", "app/db.py", 21, dismissed_reason="used in tests", dismissed_at="2026-11-22T09:00:00Z"),
        {**alert(7, "dismissed", "app/db.py", 12, dismissed_reason="false positive"),
         "tool": {"name": "CodeQL", "version": "2.15"}, "rule": {"id": "py/sql-injection"}},
        alert(8, "dismissed", "app/db.py", 40, dismissed_reason="false positive", dismissed_at="2026-11-22T08:00:00Z"),
        {**alert(9, "fixed", "app/db.py", 12), "most_recent_instance": {}},
    ]


def test_github_alerts_match_the_newest_scan_by_path_rule_and_line(scanned, tmp_path):
    store, _ = scanned
    data = json.dumps(github_export()).encode()
    result = import_file(store, data, "alerts.json", now=NOW)
    assert result["format"] == "github-alerts" and result["entries"] == 9
    assert result["verdicts"] == {"false_positive": 1, "true_positive": 2}
    records = {r.id: r for r in fb.read(store, fb.partitions(store))}
    a, b, c = records[A.fingerprint], records[B.fingerprint], records[C.fingerprint]
    assert (a.verdict, a.version, a.score, a.ts) == ("false_positive", 2, 0.91, "2026-11-22T08:00:00+00:00")
    assert (b.verdict, b.code) == ("true_positive", LOOKUP)  # used in tests: the pattern is real
    assert (c.verdict, c.ts, c.code) == ("true_positive", "2026-11-23T07:00:00+00:00", RUN)  # fixed
    reasons = {r["entry"]: (r["reason"], r["detail"]) for r in result["set_aside"]}
    assert reasons["alert #3"] == ("no_verdict", "open: no verdict")
    assert reasons["alert #4"][0] == "unmatched" and "app/missing.py" in reasons["alert #4"][1]
    assert reasons["alert #5"][0] == "no_verdict" and "won't fix" in reasons["alert #5"][1]
    assert reasons["alert #7"][0] == "no_verdict" and "CodeQL" in reasons["alert #7"][1]
    assert reasons["alert #8"][0] == "unmatched" and "line 40" in reasons["alert #8"][1]
    assert reasons["alert #9"][0] == "invalid_entry"
    assert set(reasons) == {"alert #3", "alert #4", "alert #5", "alert #7", "alert #8", "alert #9"}
    assert (result["skipped"], result["rejected"]) == (3, 3) and len(rejected_rows(result)) == 6

    before = sorted(store.list("feedback"))
    assert import_file(store, data, "alerts.json", now=NOW)["partitions"] == result["partitions"]
    assert sorted(store.list("feedback")) == before

    seen, _ = fb.since(store, datetime(2026, 11, 21, tzinfo=timezone.utc), MODEL)
    assert {r.id for r in seen} == {A.fingerprint, B.fingerprint, C.fingerprint}


def test_gh_paginate_output_and_duplicate_alerts(scanned):
    store, _ = scanned
    first = alert(1, "dismissed", "app/db.py", 12, dismissed_reason="false positive", dismissed_at="2026-11-22T08:00:00Z")
    later = alert(2, "fixed", "app/db.py", 11, fixed_at="2026-11-24T08:00:00Z")  # the same function, a later verdict
    data = (json.dumps([first]) + "\n" + json.dumps([later])).encode()  # two pages back to back
    result = import_file(store, data, "pages.json", now=NOW)
    assert result["imported"] == 1 and result["verdicts"] == {"true_positive": 1}
    assert [(r["entry"], r["reason"]) for r in result["set_aside"]] == [("alert #1", "duplicate")]


def test_malformed_files_are_refused_with_the_fix(scanned, tmp_path):
    store, sarif = scanned
    cases = {b"{not json": "not JSON", b'{"version": "2.0.0", "runs": []}': "SARIF 2.1.0",
             b'{"results": []}': "neither a SARIF log", b"[]": "holds no alerts",
             b'{"id": "1", "verdict": "tp"}\n{"id": "2", "verdict": "fp"}\n': "feedback add",
             b'[{"number": 1}]': "neither a SARIF log", b"\xff\xfe": "not JSON"}
    for data, needle in cases.items():
        with pytest.raises(VerdictError, match="bad.json: .*" + needle):
            import_file(store, data, "bad.json")
    assert fb.partitions(store) == []
    from streamguard_ml.store import LocalStore

    with pytest.raises(VerdictError, match="no saved scans"):
        import_file(LocalStore(tmp_path / "empty"), json.dumps(sarif).encode(), "x.sarif")


def test_cli_imports_prints_reasons_and_exits_2_when_nothing_matched(scanned, tmp_path, capsys):
    from streamguard_ml.cli import main

    store, sarif = scanned
    root = str(store.path)
    path = write(tmp_path, "alerts.sarif", suppressed_log(sarif))
    assert main(["feedback", "import", str(path), "--store", root, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["imported"] == 2 and doc["rejected"] == 3 and doc["rejected_file"]

    assert main(["feedback", "import", str(path), "--store", root]) == 0
    out = capsys.readouterr().out
    assert "2 of 6 entries imported from sarif (1 false_positive, 1 true_positive)" in out
    assert "unmatched: runs[0].results[3]: fingerprint 000" in out and "skipped: runs[0].results[2]" in out

    nothing = write(tmp_path, "unmatched.json", [github_export()[3]])
    assert main(["feedback", "import", str(nothing), "--store", root]) == 2
    captured = capsys.readouterr()
    assert "unmatched: alert #4" in captured.out and "none of its 1 verdict(s) could be imported" in captured.err

    only_open = write(tmp_path, "open.json", [github_export()[2]])
    assert main(["feedback", "import", str(only_open), "--store", root]) == 0  # nothing to do is not an error
    assert "0 of 1 entries imported" in capsys.readouterr().out

    bad = write(tmp_path, "bad.json", "{oops")
    assert main(["feedback", "import", str(bad), "--store", root]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"streamguard-ml feedback: {bad}: not JSON") and "\n" not in err
    assert main(["feedback", "import", str(tmp_path / "absent.json"), "--store", root]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_malformed_alerts_are_listed_not_dropped(scanned):
    store, _ = scanned
    alerts = [{**alert(1, "dismissed", "app/db.py", 12, dismissed_reason="false positive"), "tool": "oops",
               "rule": None},
              alert(2, "dismissed", "app/db.py", 20, dismissed_reason="false positive", dismissed_at="yesterday"),
              alert(3, "reopened", "app/db.py", 12)]
    result = import_file(store, json.dumps(alerts).encode(), "odd.json", now=NOW)
    assert result["imported"] == 0 and result["rejected"] == 3 and fb.partitions(store) == []
    details = {r["entry"]: r["detail"] for r in result["set_aside"]}
    assert "rule.id" in details["alert #1"] and "yesterday" in details["alert #2"]
    assert "reopened" in details["alert #3"] and len(rejected_rows(result)) == 3
