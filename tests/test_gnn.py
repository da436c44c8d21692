"""The Taint-Flow GNN: graphs in a batch stay apart, edge types and taint marks reach the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamguard_ml.dataset import pack_graphs
from streamguard_ml.graphs import MARKS, build_graph, vocabulary
from streamguard_ml.kinds import CONFIG_FILE, GNNKind
from streamguard_ml.models.gnn import GNNConfig, TaintFlowGNN

VULNERABLE = "def f(c, x):\n    q = 'SELECT ' + x\n    c.execute(q)\n"
FIXED = "def f(c, x):\n    c.execute('SELECT ?', (x,))\n"


def _inputs(codes):
    arrays = pack_graphs([build_graph(c) for c in codes])
    counts = np.diff(arrays["node_ptr"])
    edge_counts = np.diff(arrays["edge_ptr"])
    offsets = np.repeat(arrays["node_ptr"][:-1], edge_counts)  # edge ids are graph-local: shift per graph
    t = lambda a: torch.from_numpy(np.asarray(a).astype(np.int64))  # noqa: E731
    return {"node_type": t(arrays["node_type"]), "node_tokens": t(arrays["node_tokens"]),
            "node_marks": t(arrays["node_marks"]), "edge_index": t(arrays["edge_index"] + offsets),
            "edge_type": t(arrays["edge_type"]), "batch": t(np.repeat(np.arange(len(codes)), counts)),
            "num_graphs": len(codes)}


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return TaintFlowGNN(GNNConfig(num_node_types=vocabulary()["size"], hidden=32, heads=4, layers=2,
                                  dropout=0.0)).eval()


def test_graphs_in_a_batch_never_see_each_other(model):
    with torch.no_grad():
        alone, _ = model(**_inputs([VULNERABLE]))
        together, _ = model(**_inputs([VULNERABLE, FIXED]))
        other, _ = model(**_inputs([VULNERABLE, FIXED + "    c.execute('x' + x)\n"]))
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert torch.allclose(together[0], other[0], atol=1e-5)  # changing graph 2 leaves graph 1's logits alone
    assert not torch.allclose(together[1], other[1], atol=1e-5)


def test_edge_types_and_taint_marks_change_the_output(model):
    inputs = _inputs([VULNERABLE])
    with torch.no_grad():
        base, _ = model(**inputs)
        retyped, _ = model(**{**inputs, "edge_type": torch.zeros_like(inputs["edge_type"])})
        unmarked, _ = model(**{**inputs, "node_marks": torch.zeros_like(inputs["node_marks"])})
    assert not torch.allclose(base, retyped, atol=1e-5)
    assert not torch.allclose(base, unmarked, atol=1e-5)
    assert inputs["node_marks"].max() >= 1 << MARKS.index("tainted_sink")  # the taint analysis' mark is there


def test_models_saved_before_the_taint_marks_still_load(model, tmp_path):
    old = TaintFlowGNN(GNNConfig(num_node_types=vocabulary()["size"], hidden=32, heads=4, layers=2, num_marks=3))
    kind = GNNKind()
    kind.save(old, tmp_path, {"graph_format": "pg-1"}, {})
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config["architecture"]["num_marks"]  # what a pg-1 model's config looks like
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    loaded, _ = kind.load(tmp_path)
    assert loaded.cfg.num_marks == 3
    with torch.no_grad():
        logits, _ = loaded(**_inputs([VULNERABLE]))  # new 5-bit marks: the first 3 bits are what it knows
    assert logits.shape == (1, 2)
