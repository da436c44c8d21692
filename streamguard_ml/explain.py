"""Explanations: which lines made a model call a function vulnerable.

Both models are explained with **Integrated Gradients** (Captum) on their input
embeddings — node input embeddings for the GNN, token embeddings for the
transformer — attributing the vulnerable-vs-safe log-odds.  IG satisfies
*completeness* (attributions sum to f(x) − f(baseline)); we check it and raise
the number of integration steps until the relative error is below 5 %.  The
GNN also offers ``attention``: the readout's attention weights over nodes
(softmax within the graph).

Per-node / per-token attributions are summed per source line; the top lines are
what ``streamguard-ml explain`` prints.  :func:`localisation` scores lines
against the lines a real fix changed (SVEN ``line_changes``): the share of
vulnerable samples whose top-1 / top-3 lines hit a changed line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .dataset import SplitData
from .graphs import build_graph

COMPLETENESS_TOLERANCE = 0.05
IG_STEPS = (32, 64, 128)


@dataclass
class Explanation:
    id: str
    method: str
    score: float
    lines: list[tuple[int, float]]  # (line, attribution), most incriminating first
    units: list[dict[str, Any]] = field(default_factory=list)  # per node / token, strongest first
    completeness: dict[str, float] | None = None
    threshold: float | None = None  # the version's decision threshold; score >= threshold is flagged

    @property
    def flagged(self) -> bool | None:
        return None if self.threshold is None else self.score >= self.threshold

    def top_lines(self, k: int) -> list[int]:
        return [line for line, _ in self.lines[:k]]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines"] = [{"line": ln, "attribution": round(a, 6)} for ln, a in self.lines]
        d["flagged"] = self.flagged
        return d


def aggregate_lines(unit_lines: np.ndarray, attributions: np.ndarray) -> list[tuple[int, float]]:
    """Sum attributions per line; most positive (towards 'vulnerable') first."""
    totals: dict[int, float] = {}
    for line, a in zip(unit_lines.tolist(), attributions.tolist()):
        totals[int(line)] = totals.get(int(line), 0.0) + float(a)
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


def localisation(explanations: Sequence[Explanation], true_lines: Sequence[Sequence[int]],
                 ks: tuple[int, ...] = (1, 3)) -> dict[str, Any]:
    """Share of samples whose top-k lines contain a line the fix changed."""
    pairs = [(e, set(t)) for e, t in zip(explanations, true_lines) if len(t)]
    out: dict[str, Any] = {"localisation_samples": len(pairs)}
    for k in ks:
        hits = sum(1 for e, t in pairs if t & set(e.top_lines(k)))
        out[f"localisation_top{k}"] = hits / len(pairs) if pairs else None
    return out


def _integrated_gradients(forward: Any, inputs: torch.Tensor, baseline: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """IG with a completeness check, adding steps until it holds (or the budget ends)."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(forward)
    with torch.no_grad():
        gap = float(forward(inputs) - forward(baseline))
    for steps in IG_STEPS:
        attr, delta = ig.attribute(inputs, baselines=baseline, n_steps=steps, return_convergence_delta=True,
                                   internal_batch_size=16)
        rel = abs(float(delta)) / max(abs(gap), 1e-6)
        if rel <= COMPLETENESS_TOLERANCE:
            break
    check = {"sum_attributions": float(attr.sum()), "output_gap": gap, "relative_error": rel, "steps": steps,
             "holds": rel <= COMPLETENESS_TOLERANCE}
    return attr.detach(), check


def _log_odds(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, 1] - logits[:, 0]


def explain_gnn(model: Any, graph: dict[str, np.ndarray], method: str = "ig") -> tuple[np.ndarray, float, dict | None]:
    """Per-node attributions for one graph, the raw vulnerable-vs-safe log-odds, and the IG check."""
    t = {k: torch.from_numpy(np.asarray(v).astype(np.int64)) for k, v in graph.items() if k != "node_line"}
    n = t["node_type"].shape[0]
    model.eval()
    h0 = model.embed(t["node_type"], t["node_tokens"], t["node_marks"]).detach()

    def forward(x: torch.Tensor) -> torch.Tensor:  # x: [copies, nodes, hidden] → log-odds per copy
        copies = x.shape[0]
        offsets = (torch.arange(copies) * n).repeat_interleave(t["edge_index"].shape[1])
        edge_index = t["edge_index"].repeat(1, copies) + offsets
        batch = torch.arange(copies).repeat_interleave(n)
        logits, _ = model.forward_embedded(x.reshape(copies * n, -1), edge_index, t["edge_type"].repeat(copies),
                                           batch, num_graphs=copies)
        return _log_odds(logits)

    with torch.no_grad():
        logits, extras = model.forward_embedded(h0, t["edge_index"], t["edge_type"], torch.zeros(n, dtype=torch.long), 1)
        z = float(_log_odds(logits)[0])
    if method == "attention":
        from torch_geometric.utils import softmax

        with torch.no_grad():
            gate = model.pool.gate_nn(extras["node_states"]).squeeze(-1)
            weights = softmax(gate, torch.zeros(n, dtype=torch.long))
        return weights.numpy(), z, None
    if method != "ig":
        raise ValueError(f"method {method!r}: use ig or attention")
    attr, check = _integrated_gradients(forward, h0.unsqueeze(0), torch.zeros_like(h0).unsqueeze(0))
    return attr[0].sum(-1).numpy(), z, check


def gnn_attention(model: Any, data: SplitData) -> list[np.ndarray]:
    """The GNN's pooling attention over the nodes of every graph of ``data`` in one batched forward
    pass: what ``explain_gnn(..., "attention")`` gives one graph at a time, at a fraction of the
    cost when a scan explains hundreds of flagged functions."""
    from torch_geometric.utils import softmax

    g = data.graphs
    node_ptr, edge_ptr = np.asarray(g["node_ptr"]), np.asarray(g["edge_ptr"])
    graphs = len(node_ptr) - 1
    shift = np.repeat(node_ptr[:-1], np.diff(edge_ptr))  # edge ids are graph-local: shift to batch-global
    t = {k: torch.from_numpy(np.asarray(g[k]).astype(np.int64)) for k in ("node_type", "node_tokens", "node_marks",
                                                                         "edge_type")}
    edge_index = torch.from_numpy((np.asarray(g["edge_index"]) + shift).astype(np.int64))
    batch = torch.from_numpy(np.repeat(np.arange(graphs), np.diff(node_ptr)).astype(np.int64))
    model.eval()
    with torch.no_grad():
        h0 = model.embed(t["node_type"], t["node_tokens"], t["node_marks"])
        _, extras = model.forward_embedded(h0, edge_index, t["edge_type"], batch, num_graphs=graphs)
        weights = softmax(model.pool.gate_nn(extras["node_states"]).squeeze(-1), batch)
    return np.split(weights.numpy(), node_ptr[1:-1])


def explain_transformer(model: Any, kind: Any, token_ids: np.ndarray, method: str = "ig") -> tuple[np.ndarray, float, dict | None]:
    """Per-token attributions (over the unpadded token sequence) for one function, and its raw log-odds."""
    from .tokens import collate_windows

    if method != "ig":
        raise ValueError(f"method {method!r}: the transformer is explained with ig")
    cls, sep, pad = kind._special_ids()
    wb = collate_windows([token_ids], kind.max_length, kind.stride, cls, sep, pad)
    model.eval()
    emb = model.input_embeddings(wb.input_ids).detach()  # [windows, L, H]
    special = (wb.input_ids == cls) | (wb.input_ids == sep) | (wb.attention_mask == 0)
    pad_emb = model.input_embeddings(torch.full_like(wb.input_ids, pad)).detach()
    baseline = torch.where(special.unsqueeze(-1), emb, pad_emb)  # keep [CLS]/[SEP], blank the code
    windows = emb.shape[0]

    def forward(x: torch.Tensor) -> torch.Tensor:  # x: [copies, windows, L, H]
        copies = x.shape[0]
        logits, _ = model(None, wb.attention_mask.repeat(copies, 1),
                          torch.arange(copies).repeat_interleave(windows), copies,
                          inputs_embeds=x.reshape(copies * windows, *x.shape[2:]))
        return _log_odds(logits)

    with torch.no_grad():
        logits, _ = model(wb.input_ids, wb.attention_mask, wb.window_sample, 1)
        z = float(_log_odds(logits)[0])
    attr, check = _integrated_gradients(forward, emb.unsqueeze(0), baseline.unsqueeze(0))
    per_position = attr[0].sum(-1)  # [windows, L]
    per_token = np.zeros(len(token_ids), dtype=np.float64)
    for w, (_, start, end) in enumerate(wb.spans):
        # A token seen by two overlapping windows contributed through both: summing keeps
        # completeness (token and line attributions still add up to f(x) - f(baseline)).
        per_token[start:end] += per_position[w, 1 : 1 + end - start].double().numpy()
    return per_token, z, check


def explain_split(loaded: Any, data: SplitData, indices: Sequence[int], method: str = "ig",
                  top_units: int = 15) -> list[Explanation]:
    """Explanations for samples ``indices`` of a split (raw code goes through ``featurize`` first).

    The score shown is the version's calibrated probability, judged at its own threshold.
    """
    from .kinds import TransformerKind

    if loaded.model_type == "fusion":
        from .fusion import explain_fusion

        return explain_fusion(loaded, data, indices, method, top_units)
    out = []
    for i in indices:
        code_lines = str(data.records["code"].iloc[i]).splitlines()
        if isinstance(loaded.kind, TransformerKind):
            ids = data.token_ids(i)
            attr, z, check = explain_transformer(loaded.model, loaded.kind, ids, method)
            unit_lines = data.token_lines(i)
            texts = loaded.kind.tokenizer.convert_ids_to_tokens(ids.tolist())
        else:
            graph = data.graph(i)
            attr, z, check = explain_gnn(loaded.model, graph, method)
            unit_lines = graph["node_line"]
            rebuilt = build_graph(str(data.records["code"].iloc[i]))  # deterministic: same nodes, with text
            texts = [" ".join([t, *toks]) for t, toks in zip(rebuilt.types, rebuilt.tokens)]
        order = np.argsort(-np.abs(attr))[:top_units]
        units = [{"index": int(j), "line": int(unit_lines[j]), "text": texts[j],
                  "attribution": round(float(attr[j]), 6)} for j in order]
        lines = [(ln, a) for ln, a in aggregate_lines(unit_lines, attr) if 0 < ln <= len(code_lines)]
        score = float(loaded.calibrator.apply([z])[0])
        out.append(Explanation(str(data.records["id"].iloc[i]), method, score, lines, units, check, loaded.threshold))
    return out
