"""Explanations: IG completeness, line aggregation, localisation, the explain CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamguard_ml import layout
from streamguard_ml.explain import Explanation, aggregate_lines, localisation


def test_aggregate_and_localise():
    lines = aggregate_lines(np.array([1, 2, 2, 3]), np.array([0.1, 0.5, 0.4, -1.0]))
    assert lines[0] == (2, pytest.approx(0.9)) and lines[-1][0] == 3
    exps = [Explanation("a", "ig", 0.9, [(2, 1.0), (5, 0.5), (7, 0.1)]),
            Explanation("b", "ig", 0.9, [(1, 1.0), (4, 0.5), (9, 0.1)])]
    out = localisation(exps, [[5], [8]])
    assert out == {"localisation_samples": 2, "localisation_top1": 0.0, "localisation_top3": 0.5}


@pytest.fixture(scope="module")
def trained(processed_run, tmp_path_factory):
    """Both models trained briefly on the shared run (through the local backend)."""
    from streamguard_ml.backends import train_local
    from streamguard_ml.inference import LoadedModel

    store, run, cfg, dataset = processed_run
    small = cfg.__class__(**{**cfg.__dict__, "gnn_epochs": 3, "transformer_epochs": 1, "max_length": 64,
                             "window_stride": 48})
    out = {}
    for model_type in ("gnn", "transformer"):
        result = train_local(store, run, model_type, small, dataset_hash=dataset["content_hash"])
        out[model_type] = LoadedModel.from_uri(result["model_uri"], tmp_path_factory.mktemp(model_type))
    return out


@pytest.mark.parametrize("model_type", ["gnn", "transformer"])
def test_ig_completeness_and_lines(trained, processed_run, model_type):
    from streamguard_ml.dataset import load_split
    from streamguard_ml.explain import explain_split

    store, run, _, _ = processed_run
    data = load_split(store.uri(layout.split_dir(run, "test")))
    vulnerable = [i for i, y in enumerate(data.labels) if y == 1][:3]
    for e in explain_split(trained[model_type], data, vulnerable):
        assert e.completeness["holds"], e.completeness  # sum(attr) ≈ f(x) − f(baseline) within 5 %
        assert e.completeness["relative_error"] <= 0.05
        n_lines = len(str(data.records.set_index("id").loc[e.id, "code"]).splitlines())
        assert e.lines and all(1 <= ln <= n_lines for ln, _ in e.lines)
        assert e.units and {"index", "line", "text", "attribution"} <= set(e.units[0])


def test_gnn_attention_weights_are_a_distribution_over_one_graph(trained):
    from streamguard_ml.explain import explain_gnn

    data = trained["gnn"].featurize(["def f(c, x):\n    c.execute('S ' + x)\n"])
    weights, log_odds, check = explain_gnn(trained["gnn"].model, data.graph(0), "attention")
    assert check is None and np.isfinite(log_odds)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5) and (weights >= 0).all()


def test_explain_cli_prints_top_lines(trained, processed_run, tmp_path):
    from streamguard_ml.registry import Registry

    store, run, _, _ = processed_run
    mv = Registry(store).register("sql-intent-transformer", store.uri(layout.model_archive(run, "transformer")),
                                  {"accuracy": 0.5})
    src = tmp_path / "v.py"
    src.write_text("import os\n\ndef run(cmd):\n    x = 1\n    os.system('ping ' + cmd)\n")
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.cli", "explain", "--model", "transformer",
                          "--model-version", str(mv.version), "--input", str(src), "--json", "--store", store.root],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (doc,) = json.loads(out.stdout)
    assert doc["top_lines"] and {"line", "attribution", "text"} <= set(doc["top_lines"][0])
    assert doc["completeness"]["holds"]
