"""The taint-fusion detector: fitted on validation from the members, self-contained, scored and explained."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from streamguard_ml import layout


@pytest.fixture(scope="module")
def fused(processed_run):
    """The run's GNN and transformer (small, quick) and the fusion detector fitted from them."""
    from streamguard_ml.pipeline import fusion_step, train_step

    store, run, cfg, dataset = processed_run
    small = cfg.__class__(**{**cfg.__dict__, "gnn_epochs": 3, "gnn_hidden": 32, "gnn_layers": 2,
                              "transformer_epochs": 1, "max_length": 64, "window_stride": 48})
    members = [train_step(store, run, m, small, dataset) for m in ("gnn", "transformer")]
    return store, run, small, dataset, members, fusion_step(store, run, small, dataset, members)


def test_taint_evidence_counts_marked_nodes_per_function():
    from streamguard_ml.fastgraph import graph_arrays
    from streamguard_ml.fusion import TAINT_FEATURES, taint_evidence

    graphs, _ = graph_arrays(["def f(c):\n    c.execute('S ' + request.args['q'])\n",
                              "def g():\n    return 1\n"])
    counts = dict(zip(TAINT_FEATURES, taint_evidence(graphs)[0]))
    assert counts["tainted_sinks"] == 1 and counts["sinks"] >= 1 and counts["sources"] >= 1
    assert taint_evidence(graphs)[1].sum() == 0


def test_the_archive_holds_both_members_and_its_operating_point(fused):
    store, run, _, _, members, result = fused
    assert result["model_uri"] == store.uri(layout.model_archive(run, "fusion"))
    assert set(result["members"]) == {"gnn", "transformer"}
    with tarfile.open(result["model_uri"]) as tar:
        names = set(tar.getnames())
        config = json.loads(tar.extractfile("streamguard_model.json").read())
    assert {"gnn/model.safetensors", "transformer/model.safetensors", "transformer/tokenizer/tokenizer.json",
            "training.json"} <= names
    assert config["model_type"] == "fusion" and config["members"] == ["gnn", "transformer"]
    assert config["weights"]["features"][:2] == ["gnn", "transformer"]
    point = config["operating_point"]
    assert point["policy"] == "max_fpr" and 0 < point["threshold"] <= 1 and point["validation"]["n"] > 0
    summary = store.read_json(f"{layout.model_dir(run, 'fusion')}/training.json")
    assert summary["operating_point"] == point and summary["train_samples"] == 0  # fitted on validation only


def test_fusion_scores_raw_code_registers_and_explains_lines(fused, tmp_path):
    from streamguard_ml.explain import explain_split
    from streamguard_ml.inference import LoadedModel
    from streamguard_ml.registry import Registry

    store, run, _, _, _, result = fused
    loaded = LoadedModel.from_uri(result["model_uri"], tmp_path)
    code = ["def f(c):\n    q = 'SELECT * FROM t WHERE n = ' + request.args['n']\n    c.execute(q)\n",
            "def f(c):\n    c.execute('SELECT * FROM t WHERE n = ?', (request.args['n'],))\n"]
    data = loaded.featurize(code)
    scores = loaded.score(data)
    assert scores.prob.shape == (2,) and np.all((0 <= scores.prob) & (scores.prob <= 1))
    (e,) = explain_split(loaded, data, [0])
    assert e.method.startswith("fusion") and e.threshold == loaded.threshold
    assert e.lines and {ln for ln, _ in e.lines} <= {1, 2, 3}
    assert any(u.get("evidence") == "tainted_sinks" and u["lines"] == [3] for u in e.units)
    mv = Registry(store).register("taint-fusion-detector", result["model_uri"], {"accuracy": 0.5})
    assert mv.operating_point["threshold"] == pytest.approx(loaded.threshold)
    assert mv.operating_point["policy"] == "max_fpr" and mv.threshold == pytest.approx(loaded.threshold)


def test_fusion_is_idempotent_and_refits_when_a_member_changes(fused):
    from streamguard_ml.pipeline import fusion_step, train_step

    store, run, cfg, dataset, members, result = fused
    archive, summary = layout.model_archive(run, "fusion"), f"{layout.model_dir(run, 'fusion')}/training.json"
    before, digest = store.read_bytes(archive), store.read_json(summary)["params_digest"]
    again = fusion_step(store, run, cfg, dataset, members)
    assert again["model_uri"] == result["model_uri"] and store.read_bytes(archive) == before
    changed = cfg.__class__(**{**cfg.__dict__, "gnn_epochs": 2})
    gnn = train_step(store, run, "gnn", changed, dataset)
    fusion_step(store, run, cfg, dataset, [gnn, members[1]])
    assert store.read_json(summary)["params_digest"] != digest  # a retrained member means a refitted detector


def test_fusion_without_members_is_a_clear_error(tmp_path, processed_run):
    import os
    import subprocess
    import sys

    store, run, _, _ = processed_run
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path / "m"),
           "SM_CHANNEL_VALIDATION": store.uri(layout.split_dir(run, "val"))}
    env.pop("SM_CHANNEL_GNN", None)
    env.pop("SM_CHANNEL_TRANSFORMER", None)
    out = subprocess.run([sys.executable, "-m", "streamguard_ml.train", "--model-type", "fusion"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--gnn-model" in out.stderr
