"""CVEfixes SQLite and OSV / GitHub advisory connectors, on fixtures the tests build themselves."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from streamguard_ml.ingest import ingest
from streamguard_ml.records import Rejected
from streamguard_ml.sources import parse_spec, read_source
from streamguard_ml.sources.advisories import AdvisoryError, commit_key, parse_advisory, read_advisories
from streamguard_ml.sources.cvefixes import CVEfixesError

# The real CVEfixes schema (Doc/DataDictionary.md); CVEfixes writes every column as TEXT.
SCHEMA = {
    "cve": ["cve_id", "published_date", "description", "severity", "cvss3_base_score", "cvss3_base_severity",
            "problemtype_json"],
    "fixes": ["cve_id", "hash", "repo_url"],
    "commits": ["hash", "repo_url", "author", "author_date", "msg", "merge", "parents"],
    "file_change": ["file_change_id", "hash", "filename", "old_path", "new_path", "change_type", "diff",
                    "diff_parsed", "num_lines_added", "num_lines_deleted", "code_after", "code_before", "nloc",
                    "complexity", "token_count", "programming_language"],
    "method_change": ["method_change_id", "file_change_id", "name", "signature", "parameters", "start_line",
                      "end_line", "code", "nloc", "complexity", "token_count", "top_nesting_level",
                      "before_change"],
    "cwe_classification": ["cve_id", "cwe_id"],
    "cwe": ["cwe_id", "cwe_name", "description"],
}

VULN = ("    def find(self, name):\n"
        "        cur = self.db.cursor()\n"
        "        cur.execute(\"SELECT * FROM users WHERE name = '%s'\" % name)\n"
        "        return cur.fetchall()\n")
FIXED = ("    def find(self, name):\n"
         "        cur = self.db.cursor()\n"
         "        cur.execute(\"SELECT * FROM users WHERE name = ?\", (name,))\n"
         "        return cur.fetchall()\n")
ADDED = "    def helper(self):\n        return self.db.total_changes\n"
SHELL = "def run(cmd):\n    import os\n    os.system('ls ' + cmd)\n"
SHELL_FIXED = "def run(cmd):\n    import subprocess\n    subprocess.run(['ls', '--', cmd])\n"


def make_cvefixes_db(path: Path) -> Path:
    """Two CVEs, three commits' files: a Python pair, an added helper, a C method, and a pair in a
    second repository whose CVE carries only NVD's placeholder CWE plus a real one."""
    con = sqlite3.connect(path)
    for table, cols in SCHEMA.items():
        con.execute(f"CREATE TABLE {table} ({', '.join(c + ' TEXT' for c in cols)})")

    def insert(table: str, **values: object) -> None:
        cols = SCHEMA[table]
        con.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})",
                    [None if values.get(c) is None else str(values.get(c)) for c in cols])

    insert("cve", cve_id="CVE-2021-1000", cvss3_base_severity="HIGH", severity="7.5")
    insert("cve", cve_id="CVE-2021-2000", cvss3_base_severity="CRITICAL")
    insert("fixes", cve_id="CVE-2021-1000", hash="aaa111", repo_url="https://github.com/acme/shop")
    insert("fixes", cve_id="CVE-2021-2000", hash="bbb222", repo_url="https://github.com/acme/tools")
    insert("commits", hash="aaa111", repo_url="https://github.com/acme/shop", msg="fix sqli")
    insert("commits", hash="bbb222", repo_url="https://github.com/acme/tools", msg="fix shell")
    insert("cwe_classification", cve_id="CVE-2021-1000", cwe_id="CWE-89")
    insert("cwe_classification", cve_id="CVE-2021-2000", cwe_id="NVD-CWE-Other")
    insert("cwe_classification", cve_id="CVE-2021-2000", cwe_id="CWE-78")
    # line 12 of db.py is line 3 of the method (which starts at line 10)
    insert("file_change", file_change_id="11", hash="aaa111", filename="db.py", programming_language="Python",
           diff_parsed=str({"added": [(12, "...")], "deleted": [(12, "..."), (40, "outside")]}))
    insert("file_change", file_change_id="12", hash="aaa111", filename="lib.c", programming_language="C",
           diff_parsed="{'added': [], 'deleted': []}")
    insert("file_change", file_change_id="21", hash="bbb222", filename="shell.py", programming_language="None",
           diff_parsed=str({"added": [(3, "...")], "deleted": [(3, "...")]}))
    insert("method_change", method_change_id="101", file_change_id="11", name="find",
           signature="find(self,name)", start_line=10, end_line=13, code=VULN, before_change="True")
    insert("method_change", method_change_id="102", file_change_id="11", name="find",
           signature="find(self,name)", start_line=10, end_line=13, code=FIXED, before_change="False")
    insert("method_change", method_change_id="103", file_change_id="11", name="helper", signature="helper(self)",
           start_line=20, end_line=21, code=ADDED, before_change="False")
    insert("method_change", method_change_id="104", file_change_id="12", name="parse", signature="parse(char*)",
           start_line=1, end_line=3, code="int parse(char *s) { return 0; }", before_change="True")
    insert("method_change", method_change_id="201", file_change_id="21", name="run", signature="run(cmd)",
           start_line=1, end_line=3, code=SHELL, before_change="True")
    insert("method_change", method_change_id="202", file_change_id="21", name="run", signature="run(cmd)",
           start_line=1, end_line=3, code=SHELL_FIXED, before_change="False")
    insert("method_change", method_change_id="203", file_change_id="21", name="gone", signature="gone()",
           start_line=5, end_line=6, code="None", before_change="True")
    con.commit()
    con.close()
    return path


def test_cvefixes_methods_become_pairs_joined_to_cwe_and_severity(tmp_path):
    db = make_cvefixes_db(tmp_path / "CVEfixes.db")
    records = {r["id"]: r for r in read_source(f"cvefixes:{db}")}
    assert set(records) == {"cvefixes-101", "cvefixes-102", "cvefixes-103", "cvefixes-201", "cvefixes-202",
                            "cvefixes-203"}  # the C method is not read
    vul, fix = records["cvefixes-101"], records["cvefixes-102"]
    assert (vul["label"], fix["label"]) == (1, 0)
    assert vul["pair_id"] == fix["pair_id"] is not None
    assert vul["vulnerable_lines"] == [3]  # file line 12, relative to the method's line 10
    assert vul["cwe"] == "CWE-89" and vul["cve"] == "CVE-2021-1000" and vul["severity"] == "high"
    assert vul["group"] == fix["group"] == "github.com/acme/shop"
    assert records["cvefixes-103"]["pair_id"] is None and records["cvefixes-103"]["origin"] == "cve-fix-added"
    shell = records["cvefixes-201"]
    assert shell["cwe"] == "CWE-78" and shell["severity"] == "critical"  # NVD placeholder skipped
    assert shell["group"] != vul["group"]
    assert records["cvefixes-203"]["code"] is None  # 'None' in the database means missing


def test_cvefixes_ingest_quarantines_missing_code_and_keeps_pairs_grouped(store, tmp_path):
    db = make_cvefixes_db(tmp_path / "CVEfixes.db")
    report = ingest(store, "cvf", [f"cvefixes:{db}"])
    assert report["accepted"] == 5 and report["quarantine_reasons"] == {"missing_code": 1}
    rows = store.read_jsonl("runs/cvf/ingest/quarantine.jsonl")
    assert "method_change_id=203" in rows[0]["source"]


@pytest.mark.parametrize("diff_parsed", [
    "-" * 100_000 + "1",                        # MemoryError in the parser
    "{'deleted': [5]}",                         # TypeError: an entry that is not (line, text)
    "{'deleted': [[]]}",                        # IndexError
    "{'deleted': [('twelve', 'x')]}",           # a line number that is not one
    "{'deleted': " + "[" * 300 + "]" * 300 + "}",  # nesting past the parser's limit
    "['not', 'a', 'dict']",
    "{'deleted': [(12, 'x')]" + ", 'pad': '" + "x" * 9_000_000 + "'}",  # past the size bound
])
def test_cvefixes_malformed_diff_parsed_quarantines_the_method_it_locates(store, tmp_path, diff_parsed):
    db = make_cvefixes_db(tmp_path / "CVEfixes.db")
    con = sqlite3.connect(db)
    con.execute("UPDATE file_change SET diff_parsed = ? WHERE file_change_id = '11'", [diff_parsed])
    con.commit()
    con.close()
    report = ingest(store, "cvd", [f"cvefixes:{db}"])
    rows = {r["reason"]: r for r in store.read_jsonl("runs/cvd/ingest/quarantine.jsonl")}
    assert report["accepted"] == 4 and report["quarantine_reasons"] == {"malformed_diff": 1, "missing_code": 1}
    bad = rows["malformed_diff"]
    assert "method_change_id=101" in bad["source"] and "file_change 11" in bad["detail"]
    assert "diff_parsed" in bad["detail"] and len(bad["detail"]) < 400


def test_cvefixes_text_that_is_not_utf8_is_quarantined_not_fatal(store, tmp_path):
    db = make_cvefixes_db(tmp_path / "CVEfixes.db")
    con = sqlite3.connect(db)
    con.execute("UPDATE method_change SET code = CAST(x'6465662072756e28293aff0a2020202070617373' AS TEXT) "
                "WHERE method_change_id = '201'")
    con.commit()
    con.close()
    report = ingest(store, "cvu", [f"cvefixes:{db}"])
    assert report["accepted"] == 4 and report["quarantine_reasons"] == {"missing_code": 1, "non_utf8": 1}
    bad = next(r for r in store.read_jsonl("runs/cvu/ingest/quarantine.jsonl") if r["reason"] == "non_utf8")
    assert "method_change_id=201" in bad["source"] and "'code'" in bad["detail"]


def test_cvefixes_refuses_files_that_are_not_the_database(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(CVEfixesError, match="lacks the tables"):
        list(read_source(f"cvefixes:{other}"))
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all" * 100)
    with pytest.raises(CVEfixesError, match="not a SQLite database"):
        list(read_source(f"cvefixes:{junk}"))


OSV = {  # the shape of github/advisory-database (OSV) files
    "schema_version": "1.4.0", "id": "GHSA-aaaa-bbbb-cccc", "aliases": ["CVE-2022-3000"],
    "summary": "SQL injection in shop",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [{"package": {"ecosystem": "PyPI", "name": "shop"}}],
    "references": [{"type": "FIX", "url": "https://github.com/Acme/Shop/commit/ABCDEF1234567"},
                   {"type": "WEB", "url": "https://example.org/post"}],
    "database_specific": {"cwe_ids": ["CWE-89"], "severity": "MODERATE", "github_reviewed": True},
}
GHSA_REST = {  # the shape of GitHub's REST API (GET /advisories)
    "ghsa_id": "GHSA-dddd-eeee-ffff", "cve_id": "CVE-2022-4000", "severity": "critical",
    "cwes": [{"cwe_id": "CWE-78", "name": "OS Command Injection"}],
    "identifiers": [{"type": "GHSA", "value": "GHSA-dddd-eeee-ffff"}, {"type": "CVE", "value": "CVE-2022-4000"}],
    "references": ["https://gitlab.com/acme/tools/-/commit/0123456789abcdef"],
}


def test_advisories_parse_osv_and_github_rest_shapes():
    osv, rest = parse_advisory(OSV), parse_advisory(GHSA_REST)
    assert (osv.cve, osv.cwes, osv.severity) == ("CVE-2022-3000", ["CWE-89"], "medium")
    assert osv.commits == ["github.com/acme/shop/commit/abcdef1234567"]
    assert (rest.cve, rest.cwes, rest.severity) == ("CVE-2022-4000", ["CWE-78"], "critical")
    assert rest.commits == ["gitlab.com/acme/tools/commit/0123456789abcdef"]
    assert commit_key("github.com/acme/shop/commit/abcdef1234567") == osv.commits[0]
    with pytest.raises(AdvisoryError, match="neither"):
        parse_advisory({"summary": "no id"})


def test_advisories_join_by_cve_and_by_fix_commit_during_ingest(store, tmp_path):
    folder = tmp_path / "advisory-database" / "advisories" / "github-reviewed" / "2022"
    folder.mkdir(parents=True)
    (folder / "GHSA-aaaa-bbbb-cccc.json").write_text(json.dumps(OSV))
    (tmp_path / "rest.json").write_text(json.dumps([GHSA_REST]))
    sven = tmp_path / "sven.jsonl"
    sven.write_text(json.dumps({
        "func_name": "q", "commit_link": "github.com/acme/shop/commit/abcdef1234567", "file_name": "db.py",
        "func_src_before": "def q(c, x):\n    c.execute('S %s' % x)\n",
        "func_src_after": "def q(c, x):\n    c.execute('S %s', (x,))\n", "line_changes": {"deleted": []}}) + "\n")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "j1", "cve": "cve-2022-4000", "label": 1,
                                "code": "import os\ndef f(x):\n    os.system('ls ' + x)\n"}) + "\n" +
                    json.dumps({"id": "j2", "label": 0, "code": "def g():\n    return 42\n"}) + "\n")
    report = ingest(store, "adv", [f"osv:{tmp_path / 'advisory-database'}", f"ghsa:{tmp_path / 'rest.json'}",
                                   f"sven:{sven}", f"jsonl:{data}"])
    assert report["advisories"] == {"advisories": 2, "enriched_records": 3}
    from streamguard_ml.ingest import read_samples

    samples = {s.id: s for s in read_samples(store, "runs/adv/ingest/samples.parquet")[0]}
    sven_vul = next(s for s in samples.values() if s.source == "sven" and s.label == 1)
    assert (sven_vul.cve, sven_vul.severity, sven_vul.cwe) == ("CVE-2022-3000", "medium", "CWE-89")
    assert (samples["j1"].cwe, samples["j1"].severity) == ("CWE-78", "critical")
    assert samples["j2"].severity is None and samples["j2"].cve is None


def test_advisory_sources_alone_are_not_samples(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(OSV))
    assert parse_spec(f"osv:{tmp_path}") == ("osv", str(tmp_path))
    with pytest.raises(ValueError, match="holds advisories, not samples"):
        read_source(f"osv:{tmp_path}")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(AdvisoryError, match="bad.json is not valid JSON"):
        read_advisories(str(tmp_path))


@pytest.mark.parametrize("doc", [{"id": "GHSA-1", "database_specific": [1]}, {"id": "GHSA-2", "aliases": 5},
                                 {"id": "GHSA-3", "affected": [{"database_specific": "x"}]}])
def test_an_advisory_of_another_shape_is_a_one_line_error_naming_the_file(tmp_path, doc):
    (tmp_path / "odd.json").write_text(json.dumps(doc))
    with pytest.raises(AdvisoryError, match=r"odd\.json: advisory 'GHSA-\d' is not OSV or GitHub advisory JSON"):
        read_advisories(str(tmp_path))
    (tmp_path / "odd.json").write_text("[" * 100_000)
    with pytest.raises(AdvisoryError, match=r"odd\.json is not valid JSON"):
        read_advisories(str(tmp_path))


def test_rejected_items_from_connectors_keep_provenance(tmp_path):
    (tmp_path / "x.jsonl").write_text("{broken\n")
    (item,) = read_source(f"jsonl:{tmp_path}")  # a folder of JSONL files works like a file
    assert isinstance(item, Rejected) and item.source.endswith("x.jsonl") and item.line == 1
