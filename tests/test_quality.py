"""Validation, counterfactual expansion, duplicates and label conflicts."""

from __future__ import annotations

from streamguard_ml.config import QualityLimits
from streamguard_ml.quality import deduplicate, normalise, normalised_code
from streamguard_ml.records import Rejected, Sample

LIMITS = QualityLimits(max_code_chars=500, max_lines=20)


def _one(rec):
    out = normalise({"_source": "t.jsonl", "_line": 7, **rec}, LIMITS)
    return out


def test_each_bad_record_gets_a_reason_and_source_line():
    cases = {
        "missing_code": {"id": "a", "label": 1},
        "missing_label": {"id": "b", "code": "def f():\n    return 1\n"},
        "invalid_label": {"id": "c", "code": "def f():\n    return 1\n", "label": "maybe"},
        "too_long": {"id": "d", "code": "x = 1\n" * 30, "label": 0},
        "too_short": {"id": "e", "code": "x=1", "label": 0},
        "unsupported_language": {"id": "f", "code": "int main() { return 0; }", "label": 0, "language": "c"},
    }
    for reason, rec in cases.items():
        (out,) = _one(rec)
        assert isinstance(out, Rejected), reason
        assert out.reason == reason and out.line == 7 and out.source == "t.jsonl"
        assert out.detail  # says what is wrong


def test_inline_counterfactual_becomes_a_pair():
    vul, fix = _one({"id": "v", "label": 1, "cwe": "89",
                     "code": "def f(c, x):\n    c.execute('S ' + x)\n",
                     "counterfactual": "def f(c, x):\n    c.execute('S ?', (x,))\n"})
    assert isinstance(vul, Sample) and isinstance(fix, Sample)
    assert (vul.label, fix.label) == (1, 0)
    assert vul.pair_id and vul.pair_id == fix.pair_id
    assert vul.vulnerable_lines == [2] and vul.cwe == "CWE-89"


def test_indented_methods_are_dedented():
    (s,) = _one({"id": "m", "label": 0, "code": "    def m(self):\n        return self.x\n"})
    assert s.code.startswith("def m(self):")


def test_duplicates_and_label_conflicts():
    def s(i, code, label):
        return Sample(id=i, code=code, label=label, source_ref=f"src:{i}")

    base = "def f(x):\n    return x + 1\n"
    samples = [s("1", base, 1), s("2", base, 1), s("3", "def f(x):  # comment\n    return x +   1\n", 1),
               s("4", "def g():\n    pass\n", 0), s("5", "def g():\n    pass  # same code\n", 1)]
    kept, rejected, counts = deduplicate(samples)
    assert [k.id for k in kept] == ["1"]
    reasons = {r.id: r.reason for r in rejected}
    assert reasons == {"2": "duplicate", "3": "normalised_duplicate", "4": "label_conflict", "5": "label_conflict"}
    assert counts["duplicate"] == 1 and counts["normalised_duplicate"] == 1 and counts["label_conflict"] == 2


def test_normalisation_ignores_comments_and_whitespace_only():
    assert normalised_code("a = 1  # x\n") == normalised_code("a=1\n")
    assert normalised_code("a = 1\n") != normalised_code("a = 2\n")
