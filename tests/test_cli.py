"""The streamguard-ml CLI: JSON shapes of interfaces.md and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, store: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "streamguard_ml.cli", *args]
    if store:
        cmd += ["--store", store]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_ingest_and_preprocess_json_shapes(tmp_path, tiny_base_model):
    store = str(tmp_path / "s")
    src = tmp_path / "extra.jsonl"
    src.write_text(json.dumps({"id": "x1", "code": "def f(c, q):\n    c.execute(q)\n", "label": 1}) + "\n{oops\n")
    out = cli("ingest", "--source", "synthetic:120", "--source", f"jsonl:{src}", "--out", "r", "--json", store=store)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"run", "accepted", "quarantined", "quarantine_reasons", "quarantine_file"}
    assert doc["accepted"] == 121 and doc["quarantine_reasons"] == {"malformed_json": 1}
    out = cli("preprocess", "--run", "r", "--base-model", tiny_base_model, "--json", store=store)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc["splits"]) == {"train", "val", "test"}
    first = json.loads(Path(doc["manifest"]).read_text().splitlines()[0])
    assert set(first) >= {"id", "split", "pair_id", "group"}


def test_graph_command(tmp_path):
    f = tmp_path / "v.py"
    f.write_text("import os\n\ndef run(cmd):\n    os.system('ls ' + cmd)\n")
    out = cli("graph", str(f), "--json")
    assert out.returncode == 0, out.stderr
    g = json.loads(out.stdout)
    assert any("sink" in n["marks"] for n in g["nodes"])
    assert {e["type"] for e in g["edges"]} >= {"ast", "dfg", "call"}


@pytest.mark.parametrize("args,needle", [
    (("ingest", "--source", "jsonl:/does/not/exist.jsonl", "--out", "r"), "exist.jsonl"),
    (("ingest", "--source", "parquet:/x", "--out", "r"), "KIND:PATH"),
    (("preprocess", "--run", "never-ingested"), "streamguard-ml ingest"),
    (("registry", "show", "taint-flow-gnn", "latest"), "no versions"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, needle):
    out = cli(*args, store=str(tmp_path / "s"))
    assert out.returncode != 0
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_train_evaluate_predict_through_the_cli(processed_run, tmp_path):
    store, run, _, _ = processed_run
    out = cli("train", "--run", run, "--model-type", "gnn", "--epochs", "2", "--json", store=store.root)
    assert out.returncode == 0, out.stderr[-2000:]
    trained = json.loads(out.stdout)
    assert trained["model_uri"].endswith("model.tar.gz") and 0 <= trained["validation"]["f1"] <= 1

    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"accuracy": 0.5}))
    reg = cli("registry", "register", "--model", "taint-flow-gnn", "--artifact", trained["model_uri"],
              "--metrics", str(metrics), "--json", store=store.root)
    version = json.loads(reg.stdout)["version"]

    out = cli("evaluate", "--run", run, "--model-version", str(version), "--json", store=store.root)
    assert out.returncode == 0, out.stderr[-2000:]
    ev = json.loads(out.stdout)["metrics"]
    assert set(ev) >= {"accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy"}

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "v", "code": "def f(c, x):\n    c.execute('SELECT ' + x)\n"}) + "\n"
                   + "not json\n" + json.dumps({"id": "s", "code": "def g():\n    return 1\n"}) + "\n")
    outp = tmp_path / "out.jsonl"
    out = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--json",
              store=store.root)
    assert out.returncode == 4, out.stderr[-2000:]  # 4: written, but line 2 is an error row
    rows = [json.loads(line) for line in outp.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["v", "line-2", "s"]  # input order, one line per input line
    assert rows[1]["label"] is None and "line 2" in rows[1]["error"]
    assert all(0 <= r["score"] <= 1 and r["label"] in (0, 1) for r in (rows[0], rows[2]))
    # decisions are taken at the version's own threshold (chosen on validation) unless --threshold says
    summary = json.loads(out.stdout)
    registered = json.loads(cli("registry", "show", "taint-flow-gnn", str(version), "--json", store=store.root).stdout)
    assert summary["threshold_source"] == "version"
    assert summary["threshold"] == pytest.approx(registered["operating_point"]["threshold"])
    assert all(r["label"] == int(r["score"] >= summary["threshold"]) for r in (rows[0], rows[2]))
    assert ev["threshold"] == pytest.approx(summary["threshold"]) and set(ev["at_0.5"]) >= {"f1", "fpr"}
    low = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--threshold",
              "0", "--json", store=store.root)
    assert json.loads(low.stdout)["threshold_source"] == "--threshold"
    assert [json.loads(line)["label"] for line in outp.read_text().splitlines()] == [1, None, 1]
    bad = cli("predict", "--model-version", "latest", "--input", str(inp), "--output", str(outp), "--threshold",
              "1.5", store=store.root)
    assert bad.returncode != 0 and "--threshold 1.5" in bad.stderr
