"""Scoring refuses what it cannot afford or read, one row at a time (issue 17 items 4, 6, 12).

A function over the size limits, with NUL bytes, or without a program graph becomes an
error row naming its input line (CLI) or instance (endpoint); every other function is
still scored and the output file is written.  A request over the request limits is
refused whole by the endpoint, with a 413.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = "def f(c, x):\n    c.execute('SELECT ' + x)\n"
SAFE = "def g():\n    return 1\n"
#: 45,000 characters: over the default 40,000 per function (1 MB once took 4 GB to score).
OVERSIZED = "def big(x):\n" + "    y = x + 1\n" * 3214
WITH_NUL = "def f(x):\n    return x\x00\n"
#: Valid Python that tree-sitter parses but no builder can make a graph of (graphs.py: RecursionError).
NO_GRAPH = "def deep(a):\n    return a" + ".b" * 5000 + "\n"


@pytest.fixture(scope="module")
def gnn_dir(tmp_path_factory) -> Path:
    """A real (untrained, tiny) GNN saved as safetensors + config."""
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.kinds import GNNKind

    out = tmp_path_factory.mktemp("gnn")
    kind = GNNKind()
    hp, cfg = {"hidden": 16, "layers": 1, "heads": 2}, {"vocabulary_size": vocabulary()["size"]}
    kind.save(kind.build(cfg, hp), out, cfg, hp)
    return out


@pytest.fixture(scope="module")
def registered_store(gnn_dir, tmp_path_factory) -> str:
    """A store whose taint-flow-gnn v1 is that model."""
    from streamguard_ml.inference import pack_archive
    from streamguard_ml.registry import Registry
    from streamguard_ml.store import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("store"))
    store.write_bytes("runs/r/models/gnn/model.tar.gz", pack_archive(gnn_dir))
    Registry(store).register("taint-flow-gnn", store.uri("runs/r/models/gnn/model.tar.gz"), {"accuracy": 0.5},
                             lineage={"data_content_hash": "abc", "code_version": "t"})
    return str(store.root)


def predict(store: str, inp: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamguard_ml.cli", "predict", "--store", store, "--model-version", "latest",
           "--input", str(inp), "--output", str(out), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def test_bad_functions_become_error_rows_naming_their_lines_and_the_rest_is_scored(registered_store, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "good", "code": GOOD},           # line 1
        {"id": "big", "code": OVERSIZED},       # line 2
        {"id": "nul", "code": WITH_NUL},        # line 3
        {"id": "deep", "code": NO_GRAPH},       # line 4
        "",                                     # line 5: blank, skipped
        {"id": "safe", "code": SAFE},           # line 6
        "not json",                             # line 7
    ])
    out = tmp_path / "out.jsonl"
    run = predict(registered_store, inp, out, "--json")
    assert run.returncode == 4, run.stderr[-2000:]  # 4: written, but some inputs were not scored
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["good", "big", "nul", "deep", "safe", "line-7"]
    by_id = {r["id"]: r for r in rows}
    for sample_id in ("good", "safe"):
        assert 0 <= by_id[sample_id]["score"] <= 1 and by_id[sample_id]["label"] in (0, 1)
        assert "error" not in by_id[sample_id]
    expected = {"big": (2, "too_long", "45"), "nul": (3, "non_utf8", "NUL"), "deep": (4, "no_graph", "graph"),
                "line-7": (7, "malformed_json", "line 7")}
    for sample_id, (line, reason, needle) in expected.items():
        row = by_id[sample_id]
        assert row["line"] == line and row["reason"] == reason and row["score"] is None and row["label"] is None
        assert row["error"].startswith(f"line {line}: ") and needle in row["error"]
    summary = json.loads(run.stdout)
    assert summary["predictions"] == 2 and summary["errors"] == 4 and summary["error_lines"] == [2, 3, 4, 7]
    assert "lines 2, 3, 4, 7" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def predict_here(capsys, store: str, inp: Path, out: Path, *flags: str) -> tuple[int, str]:
    """The same command in this process (the flags are under test here, not process start-up)."""
    from streamguard_ml.cli import main

    code = main(["predict", "--store", store, "--model-version", "latest", "--input", str(inp), "--output", str(out),
                 *flags])
    return code, capsys.readouterr().err


def test_limits_are_flags_and_all_scored_exits_zero(registered_store, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "code": GOOD}, {"id": "b", "code": SAFE}])
    out = tmp_path / "out.jsonl"
    code, err = predict_here(capsys, registered_store, inp, out)
    assert code == 0 and not err
    assert [json.loads(line)["label"] in (0, 1) for line in out.read_text().splitlines()] == [True, True]
    code, err = predict_here(capsys, registered_store, inp, out, "--max-function-chars", "30")
    assert code == 4 and "line 1" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["reason"] == "too_long" and "--max-function-chars" in rows[0]["error"]
    assert rows[1]["score"] is not None  # 24 characters: under the limit
    code, _ = predict_here(capsys, registered_store, inp, out, "--max-function-lines", "1")
    assert code == 4 and [json.loads(line)["reason"] for line in out.read_text().splitlines()] == [
        "too_long", "too_long"]
    code, err = predict_here(capsys, registered_store, inp, tmp_path / "never.jsonl", "--max-function-chars", "0")
    assert code == 2 and "--max-function-chars 0" in err and not (tmp_path / "never.jsonl").exists()


def test_a_failed_run_leaves_no_output_file(registered_store, tmp_path, capsys, monkeypatch):
    """The output appears only when complete: a crash mid-way leaves neither it nor a partial file."""
    from streamguard_ml import inference

    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "code": GOOD}, {"id": "b", "code": SAFE}])
    monkeypatch.setattr(inference, "_predict_batch", lambda *a: (_ for _ in ()).throw(RuntimeError("scoring died")))
    code, err = predict_here(capsys, registered_store, inp, tmp_path / "out.jsonl", "--max-request-functions", "1")
    assert code == 2 and "scoring died" in err and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_scoring_in_batches_gives_the_rows_of_one_batch(gnn_dir):
    """predict reads its file in request-sized batches: memory is bounded by the limits, not the file."""
    from streamguard_ml.config import InferenceLimits
    from streamguard_ml.inference import Item, LoadedModel, predict_items

    model = LoadedModel(gnn_dir)
    items = [Item(str(k), code, "line", k + 1) for k, code in enumerate([GOOD, SAFE, WITH_NUL, GOOD, NO_GRAPH, SAFE])]
    whole = predict_items(model, items, 0.5, InferenceLimits())
    batched = predict_items(model, items, 0.5, InferenceLimits(max_request_functions=2, max_request_bytes=60))
    assert batched == whole and [r.get("reason") for r in whole] == [None, None, "non_utf8", None, "no_graph", None]


# -- the endpoint handler -------------------------------------------------------------------------------


def test_the_endpoint_answers_per_instance_errors_and_scores_the_rest(gnn_dir, monkeypatch):
    from streamguard_ml.serving import input_fn, model_fn, output_fn, predict_fn

    monkeypatch.delenv("STREAMGUARD_THRESHOLD", raising=False)
    body = json.dumps({"instances": [{"id": "a", "code": GOOD}, {"id": "big", "code": OVERSIZED},
                                     {"id": "nul", "code": WITH_NUL}, {"id": "deep", "code": NO_GRAPH},
                                     {"id": "empty", "code": ""}, {"id": "b", "code": SAFE}]})
    doc = json.loads(output_fn(predict_fn(input_fn(body.encode(), "application/json"), model_fn(str(gnn_dir))))[0])
    rows = doc["predictions"]
    assert [r["id"] for r in rows] == ["a", "big", "nul", "deep", "empty", "b"] and doc["errors"] == 4
    assert [r.get("reason") for r in rows] == [None, "too_long", "non_utf8", "no_graph", "missing_code", None]
    assert all(0 <= rows[k]["score"] <= 1 for k in (0, 5))
    for k in (1, 2, 3, 4):
        assert rows[k]["instance"] == k and rows[k]["score"] is None and rows[k]["error"].startswith(f"instance {k}: ")


@pytest.mark.parametrize("env, body, needle", [
    ({"STREAMGUARD_MAX_REQUEST_BYTES": "1000"}, {"instances": [{"id": "a", "code": OVERSIZED}]},
     "STREAMGUARD_MAX_REQUEST_BYTES"),
    ({"STREAMGUARD_MAX_REQUEST_FUNCTIONS": "2"}, {"instances": [{"code": GOOD}] * 3},
     "STREAMGUARD_MAX_REQUEST_FUNCTIONS"),
])
def test_an_oversized_request_is_refused_whole_with_413(monkeypatch, env, body, needle):
    from streamguard_ml.serving import ServingError, input_fn

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ServingError, match=needle) as caught:
        input_fn(json.dumps(body).encode(), "application/json")
    assert caught.value.status_code == 413 and "split" in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_the_endpoint_default_refuses_a_request_of_many_megabytes_before_parsing_it():
    from streamguard_ml.serving import ServingError, input_fn

    huge = b'{"instances": [{"code": "' + b"x" * 8_000_000 + b'"}]}'
    with pytest.raises(ServingError, match="bytes") as caught:
        input_fn(huge, "application/json")
    assert caught.value.status_code == 413


def test_a_bad_limit_setting_is_a_clear_error(monkeypatch):
    from streamguard_ml.serving import ServingError, input_fn

    monkeypatch.setenv("STREAMGUARD_MAX_FUNCTION_CHARS", "lots")
    with pytest.raises(ServingError, match="STREAMGUARD_MAX_FUNCTION_CHARS='lots'") as caught:
        input_fn(json.dumps({"code": GOOD}), "application/json")
    assert caught.value.status_code == 500  # the endpoint's configuration, not the caller's request


@pytest.mark.parametrize("code", [WITH_NUL, "def f():\n    return '\ud800'\n", "   \n"], ids=["nul", "surrogate", "blank"])
def test_predict_refuses_exactly_what_ingest_quarantines(code):
    """One rule (records.code_fault) for both: predict used to score code with NUL bytes that ingest rejects."""
    from streamguard_ml.config import InferenceLimits, QualityLimits
    from streamguard_ml.inference import function_fault
    from streamguard_ml.quality import normalise

    rejected = normalise({"code": code, "label": 1, "_source": "t", "_line": 1}, QualityLimits())
    assert function_fault(code, InferenceLimits()) == (rejected[0].reason, rejected[0].detail)


def test_explain_names_the_lines_it_cannot_explain_and_explains_the_rest(registered_store, tmp_path, capsys):
    """explain used to drop unreadable or oversized lines without a word."""
    from streamguard_ml.cli import main

    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "good", "code": GOOD}, {"id": "big", "code": OVERSIZED},
                                              {"id": "nul", "code": WITH_NUL}, "not json"])
    code = main(["explain", "--store", registered_store, "--model-version", "latest", "--input", str(inp),
                 "--method", "attention", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and [d["id"] for d in json.loads(captured.out)] == ["good"]
    for line, reason in ((2, "too_long"), (3, "non_utf8"), (4, "malformed_json")):
        assert f"line {line} skipped ({reason})" in captured.err
    big = tmp_path / "big.py"
    big.write_text(OVERSIZED)
    assert main(["explain", "--store", registered_store, "--model-version", "latest", "--input", str(big)]) == 2
    assert "too_long" in capsys.readouterr().err
