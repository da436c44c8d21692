"""Repository scans (issue 20): which files, which units, SARIF that validates, fingerprints that hold.

The model is a real (untrained, tiny) GNN: a threshold of 0 makes it flag everything, so the
report's shape is exercised without needing a model that is any good.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from streamguard_ml.config import InferenceLimits
from streamguard_ml.scan import FINGERPRINT_KEY, ScanOptions, file_units, fingerprint, scan, source_files

SQLI = textwrap.dedent('''\
    from flask import request


    def lookup(cursor):
        name = request.args.get("name")
        query = "SELECT * FROM users WHERE name = '" + name + "'"
        cursor.execute(query)
        return cursor.fetchall()
    ''')

SAFE = textwrap.dedent('''\
    def add(a, b):
        """Adds."""
        return a + b


    class Box:
        def get(self):
            return self.value
    ''')


@pytest.fixture(scope="module")
def gnn(tmp_path_factory):
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.inference import LoadedModel, pack_archive
    from streamguard_ml.kinds import GNNKind

    out = tmp_path_factory.mktemp("gnn")
    kind = GNNKind()
    hp, cfg = {"hidden": 16, "layers": 1, "heads": 2}, {"vocabulary_size": vocabulary()["size"]}
    (out / "model").mkdir()
    kind.save(kind.build(cfg, hp), out / "model", cfg, hp)
    (out / "model.tar.gz").write_bytes(pack_archive(out / "model"))
    return out / "model.tar.gz", LoadedModel.from_uri(str(out / "model.tar.gz"), out / "loaded")


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return root


@pytest.fixture
def repo(tmp_path) -> Path:
    return _tree(tmp_path / "repo", {
        "app/views.py": SQLI, "app/util.py": SAFE, "broken.py": "def f(:\n    pass\n",
        "latin1.py": "x = 'caf\xe9'\n".encode("latin-1"),
        ".gitignore": "generated/\n*_pb2.py\n", "generated/out.py": SAFE, "app/api_pb2.py": SAFE,
        "app/.gitignore": "local_*.py\n", "app/local_settings.py": SAFE,
        ".venv/lib/x.py": SAFE, "env2/pyvenv.cfg": "home = /usr\n", "env2/lib/y.py": SAFE,
        "build/lib/z.py": SAFE, "pkg.egg-info/w.py": SAFE, ".hidden/h.py": SAFE, "tests/test_a.py": SAFE,
        "README.md": "# not python\n", ".git/info/exclude": "secret.py\n", "secret.py": SAFE,
    })


def _rel(root: Path, files: list[Path]) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def test_files_are_the_ones_git_would_track(repo):
    assert _rel(repo, source_files(repo)) == ["app/util.py", "app/views.py", "broken.py", "latin1.py",
                                              "tests/test_a.py"]
    assert _rel(repo, source_files(repo, ("tests/", "app/util.py"))) == ["app/views.py", "broken.py", "latin1.py"]
    assert source_files(repo / "app" / "views.py") == [repo / "app" / "views.py"]
    with pytest.raises(ValueError, match="does not exist"):
        source_files(repo / "nope")


def test_fingerprints_survive_unrelated_edits_and_change_with_the_function(tmp_path):
    def units(text: str) -> dict[str, str]:
        (tmp_path / "m.py").write_text(text)
        kept, _ = file_units(tmp_path / "m.py", "m.py", ScanOptions())
        return {u.name: fingerprint(u.path, u.name, u.code) for u in kept}

    before = units(SQLI + "\n\n" + SAFE)
    moved = units('"""A docstring added on top."""\nimport os\n\n\ndef new():\n    return os.sep\n\n\n'
                  + SQLI + "\n\n" + SAFE.replace("return a + b", "return b + a"))
    assert moved["lookup"] == before["lookup"]  # moved down, untouched: the same finding
    assert moved["Box.get"] == before["Box.get"]
    assert moved["add"] != before["add"]  # edited: a new finding
    edited = units(SQLI.replace("fetchall()", "fetchone()") + "\n\n" + SAFE)
    assert edited["lookup"] != before["lookup"]
    assert fingerprint("a.py", "f", "def f():\n    pass\n") != fingerprint("b.py", "f", "def f():\n    pass\n")


def test_nothing_is_skipped_silently(repo, gnn, tmp_path):
    _, model = gnn
    _tree(repo, {"app/huge.py": "x = 1\n" * 2000, "app/long.py": "def long():\n" + "    y = 1\n" * 400})
    options = ScanOptions(threshold=1.0, max_file_bytes=10_000, limits=InferenceLimits(max_function_lines=300))
    result = scan(repo, model, "taint-flow-gnn", 1, options)
    notes = {(n.path, n.reason) for n in result.notifications}
    assert notes == {("broken.py", "parse_error"), ("latin1.py", "non_utf8"), ("app/huge.py", "too_large"),
                     ("app/long.py", "too_long")}
    long = next(n for n in result.notifications if n.reason == "too_long")
    assert long.function == "long" and long.line == 1
    assert result.files == 7 and result.functions == 5 and result.findings == []  # lookup; add, Box.get twice
    assert "4 not scanned" in result.summary_line()


def test_batches_stay_within_the_limits(repo, gnn, monkeypatch):
    import streamguard_ml.scan as scan_module

    _, model = gnn
    sizes = []
    real = scan_module._score_batch
    monkeypatch.setattr(scan_module, "_score_batch", lambda m, b, *a: (sizes.append(len(b)), real(m, b, *a)))
    result = scan(repo, model, "m", 1, ScanOptions(threshold=1.0, limits=InferenceLimits(max_request_functions=2)))
    assert sizes and max(sizes) <= 2 and sum(sizes) == result.functions


def _schema_validator():
    import jsonschema

    default = Path(__file__).parents[1] / ".venv/sarif-sdk/node_modules/@microsoft/sarif-multitool-linux/sarif-2.1.0.json"
    path = os.environ.get("STREAMGUARD_SARIF_SCHEMA") or str(default)
    assert Path(path).is_file(), (
        f"the SARIF 2.1.0 schema is not at STREAMGUARD_SARIF_SCHEMA={path!r}: run the tests with `make test` "
        "(it installs Microsoft's SARIF SDK from npm, which ships the official schema)")
    schema = json.loads(Path(path).read_text())
    assert "SARIF" in schema["title"] and "2.1.0" in schema["title"]
    return jsonschema.Draft202012Validator(schema)


def test_sarif_validates_against_the_official_schema_and_names_the_class(repo, gnn):
    from streamguard_ml.sarif import to_sarif

    _, model = gnn
    result = scan(repo, model, "taint-flow-gnn", 3, ScanOptions(threshold=0.0))
    doc = to_sarif(result, "1.2.3")
    validator = _schema_validator()
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    bad = json.loads(json.dumps(doc))
    bad["runs"][0]["results"][0]["level"] = "severe"
    assert any("severe" in e.message for e in validator.iter_errors(bad))  # the check can fail

    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "StreamGuard ML" and driver["version"] == "1.2.3"
    assert driver["properties"]["model"] == "taint-flow-gnn" and driver["properties"]["modelVersion"] == 3
    rules = {r["id"]: r for r in driver["rules"]}
    sqli = rules["streamguard/sql-injection"]
    assert sqli["properties"]["cwe"] == "CWE-89" and "external/cwe/cwe-89" in sqli["properties"]["tags"]
    assert 4.0 <= float(sqli["properties"]["security-severity"]) <= 10.0
    lookup = next(r for r in run["results"] if r["properties"]["function"] == "lookup")
    assert lookup["ruleId"] == "streamguard/sql-injection" and driver["rules"][lookup["ruleIndex"]] is sqli
    region = lookup["locations"][0]["physicalLocation"]["region"]
    assert lookup["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "app/views.py"
    assert region["startLine"] in range(4, 9) and "endLine" not in region  # one line, not the whole function
    assert region["snippet"]["text"] == SQLI.splitlines()[region["startLine"] - 1].strip()
    assert lookup["level"] in ("warning", "error") and len(lookup["partialFingerprints"][FINGERPRINT_KEY]) == 32
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert sorted(n["properties"]["reason"] for n in notes) == ["non_utf8", "parse_error"]
    assert run["invocations"][0]["properties"]["findings"] == len(run["results"]) == result.functions


def test_a_rescan_after_unrelated_edits_keeps_the_fingerprints(repo, gnn):
    _, model = gnn
    first = scan(repo, model, "m", 1, ScanOptions(threshold=0.0))
    views = repo / "app" / "views.py"
    views.write_text("import os\n\n\ndef helper():\n    return os.getcwd()\n\n\n" + views.read_text())
    second = scan(repo, model, "m", 1, ScanOptions(threshold=0.0))
    prints = lambda r: {(f.path, f.function): f.fingerprint for f in r.findings}  # noqa: E731
    a, b = prints(first), prints(second)
    assert b[("app/views.py", "lookup")] == a[("app/views.py", "lookup")]
    assert b[("app/util.py", "add")] == a[("app/util.py", "add")]
    moved = next(f for f in second.findings if f.function == "lookup")
    assert moved.start_line == first_lookup_line(first) + 7  # the line numbers did move


def first_lookup_line(result) -> int:
    return next(f for f in result.findings if f.function == "lookup").start_line


def test_cli_scan_formats_exit_codes_and_summary(repo, gnn, tmp_path, capsys):
    from streamguard_ml.cli import main
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    archive, _ = gnn
    store = LocalStore(tmp_path / "store")
    Registry(store).register("taint-flow-gnn", str(archive), {"f1": 0.5})
    Registry(store).promote("taint-flow-gnn", 1)
    base = ["--store", store.root, "scan", str(repo)]

    assert main([*base, "--threshold", "0", "--format", "sarif", "--output", str(tmp_path / "r.sarif")]) == 0
    err = capsys.readouterr().err
    assert "scanned 5 files" in err and "findings (taint-flow-gnn v1, threshold 0.000)" in err
    assert "2 not scanned" in err and str(tmp_path / "r.sarif") in err
    assert json.loads((tmp_path / "r.sarif").read_text())["version"] == "2.1.0"
    assert not list(tmp_path.glob(".r.sarif.*"))  # no partial file left

    assert main([*base, "--threshold", "0", "--fail-on-findings", "--json", "--exclude", "tests/"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["files"] == 4 and doc["summary"]["findings"] > 0
    assert {f["rule_id"] for f in doc["findings"]} >= {"streamguard/sql-injection"}

    assert main([*base, "--threshold", "1", "--fail-on-findings", "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "0 findings" in out and "not scanned: broken.py line 1 (parse_error)" in out
    assert main([*base, "--model", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    assert main(["--store", store.root, "scan", str(tmp_path / "missing")]) == 2


def test_batched_attention_equals_one_graph_at_a_time(gnn):
    from streamguard_ml.explain import explain_gnn, gnn_attention

    _, model = gnn
    data = model.featurize([SQLI, SAFE, "def f(x):\n    return eval(x)\n"])
    batched = gnn_attention(model.model, data)
    for i, weights in enumerate(batched):
        alone, _, _ = explain_gnn(model.model, data.graph(i), "attention")
        assert weights.shape == alone.shape and abs(weights.sum() - 1) < 1e-5
        assert max(abs(weights - alone)) < 1e-5
