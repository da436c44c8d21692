"""Source connectors: generic JSONL (incl. seed-era fields), SVEN pairs, synthetic data."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from streamguard_ml.records import Rejected
from streamguard_ml.sources import parse_spec, read_source
from streamguard_ml.sources.synthetic import changed_lines, generate_records


def test_jsonl_accepts_interface_and_seed_era_fields(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps({"id": "a", "code": "def f(x):\n    return x\n", "label": 1}).encode(),
        json.dumps({"id": "b", "vulnerable_code": "def g():\n    pass\n"}).encode(),
        json.dumps({"id": "c", "code": "def h():\n    pass\n", "vulnerable": False}).encode(),
        b"{not json",
        b"\xff\xfe broken bytes",
        b"[1, 2]",
    ]))
    items = list(read_source(f"jsonl:{path}"))
    good = [i for i in items if isinstance(i, dict)]
    bad = [i for i in items if isinstance(i, Rejected)]
    assert [g["label"] for g in good] == [1, 1, False]
    assert {b.reason for b in bad} == {"malformed_json", "non_utf8", "not_an_object"}
    assert [b.line for b in bad] == [4, 5, 6]
    assert all(g["_source"] == str(path) for g in good)


def test_bare_jsonl_path_and_bad_spec_messages(tmp_path):
    assert parse_spec("data/x.jsonl") == ("jsonl", "data/x.jsonl")
    try:
        parse_spec("csv:foo")
    except ValueError as exc:
        assert "KIND:PATH" in str(exc) and "synthetic" in str(exc)
    else:
        raise AssertionError("unknown kind accepted")


def test_sven_lines_become_pairs_with_vulnerable_lines(tmp_path):
    rec = {"func_name": "q", "func_src_before": "def q(c, x):\n    c.execute('S %s' % x)\n",
           "func_src_after": "def q(c, x):\n    c.execute('S %s', (x,))\n",
           "commit_link": "github.com/acme/shop/commit/abc", "file_name": "db.py", "vul_type": "cwe-089",
           "line_changes": {"deleted": [{"line_no": 2, "line": "..."}], "added": [{"line_no": 2, "line": "..."}]}}
    path = tmp_path / "sven.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps({"func_name": "broken"}) + "\n")
    items = list(read_source(f"sven:{path}"))
    vul, fix, bad = items
    assert (vul["label"], fix["label"]) == (1, 0)
    assert vul["pair_id"] == fix["pair_id"]
    assert vul["vulnerable_lines"] == [2] and vul["cwe"] == "CWE-89"
    assert vul["group"] == fix["group"] == "github.com/acme/shop"
    assert isinstance(bad, Rejected) and bad.line == 2


def test_synthetic_is_deterministic_paired_and_varied():
    a, b = generate_records(400, seed=3), generate_records(400, seed=3)
    assert [r["code"] for r in a] == [r["code"] for r in b]
    assert generate_records(50, seed=4)[0]["code"] != a[0]["code"]
    assert len(a) == 400
    cwes = Counter(r["cwe"] for r in a if r["label"] == 1)
    assert set(cwes) >= {"CWE-89", "CWE-78", "CWE-22"}
    pairs = Counter(r["pair_id"] for r in a if r.get("pair_id"))
    assert all(n <= 2 for n in pairs.values()) and sum(1 for n in pairs.values() if n == 2) > 150
    vulnerable = [r for r in a if r["label"] == 1]
    assert all(r["vulnerable_lines"] for r in vulnerable)
    # varied: no single template dominates — nearly every vulnerable function is unique
    # even after stripping identifiers' spelling, and sink lines take many shapes
    sink_lines = {r["code"].splitlines()[r["vulnerable_lines"][0] - 1].strip()[:25] for r in vulnerable}
    assert len(sink_lines) > 60
    assert len({r["code"] for r in a}) == len(a)


#: Share of vulnerable functions the taint rules must flag, per class (string-built XSS that is only
#: returned reaches no sink the rules know: the learned models are there for it).
RULE_RECALL = {"CWE-79": 0.55}


@pytest.mark.parametrize("cwe", ["CWE-89", "CWE-78", "CWE-22", "CWE-79", "CWE-94", "CWE-502", "CWE-611", "CWE-918",
                                 "CWE-601", "CWE-1336"])
def test_every_vulnerability_class_is_generated_parses_and_its_fix_removes_the_flaw(cwe):
    from streamguard_ml.graphs import MARK_BIT, build_graph, first_error_line

    records = [r for r in generate_records(2000, seed=21) if r["cwe"] == cwe]
    vulnerable = [r for r in records if r["label"] == 1]
    fixed = [r for r in records if r.get("origin") == "synthetic-counterfactual"]
    assert len(vulnerable) >= 40 and len(fixed) >= 40
    assert all(first_error_line(r["code"]) is None for r in records)

    def flagged(r):
        return any(m & MARK_BIT["tainted_sink"] for m in build_graph(r["code"]).marks)

    assert sum(map(flagged, vulnerable)) / len(vulnerable) >= RULE_RECALL.get(cwe, 0.95)
    assert sum(map(flagged, fixed)) / len(fixed) <= 0.05
    # real variety: handlers for several frameworks, and several distinct vulnerable lines
    styles = {("request.GET" in r["code"] or "request.POST" in r["code"] or "def " in r["code"] and "(request" in r["code"],
               "@app.get" in r["code"] or "@router" in r["code"]) for r in vulnerable}
    assert len(styles) >= 2
    lines = {r["code"].splitlines()[r["vulnerable_lines"][0] - 1].strip()[:30] for r in vulnerable}
    assert len(lines) >= 10


def test_changed_lines_locates_the_fix():
    before = "a = 1\nq = 'x' + y\nrun(q)\n"
    after = "a = 1\nq = 'x'\nrun(q, (y,))\n"
    assert changed_lines(before, after) == [2, 3]
    guarded = "a = 1\ny = int(y)\nq = 'x' + y\nrun(q)\n"
    assert changed_lines(before, guarded) == [2]  # an inserted guard marks the statement it protects


SVEN_OK = {"func_name": "q", "func_src_before": "def q(c, x):\n    c.execute('S %s' % x)\n",
           "func_src_after": "def q(c, x):\n    c.execute('S %s', (x,))\n", "file_name": "db.py",
           "commit_link": "github.com/acme/shop/commit/abc", "line_changes": {"deleted": [{"line_no": 2}]}}


@pytest.mark.parametrize(("field", "value", "named"), [
    ("line_changes", [{"line_no": 2}], "line_changes"),
    ("line_changes", {"deleted": "2"}, "line_changes.deleted"),
    ("line_changes", {"deleted": [2]}, "line_changes.deleted"),
    ("line_changes", {"deleted": [{"line": "x"}]}, "line_no"),
    ("line_changes", {"deleted": [{"line_no": "two"}]}, "line_no"),
    ("line_changes", {"deleted": [{"line_no": True}]}, "line_no"),
    ("commit_link", 5, "commit_link"),
    ("file_name", "db\udc80.py", "file_name"),
    ("func_name", {"n": 1}, "func_name"),
    ("vul_type", ["cwe-89"], "vul_type"),
])
def test_a_malformed_sven_line_is_one_quarantine_entry_naming_the_field(tmp_path, field, value, named):
    path = tmp_path / "sven.jsonl"
    path.write_text(json.dumps({**SVEN_OK, field: value}) + "\n" + json.dumps(SVEN_OK) + "\n")
    bad, vul, fix = read_source(f"sven:{path}")
    assert isinstance(bad, Rejected) and bad.line == 1 and bad.reason in ("invalid_field", "non_utf8")
    assert f"'{named}'" in bad.detail
    assert (vul["label"], fix["label"], vul["vulnerable_lines"]) == (1, 0, [2])
