"""The Taint-Flow GNN: GAT layers over typed program-graph edges, pooled per graph.

* Node input = node-type embedding + mean of hashed sub-token embeddings +
  a projection of the mark bits (source, sink, sanitizer and the taint
  analysis's tainted / tainted_sink).
* Edges carry their type (AST, CFG, DFG, call, each also reversed) as a learned
  embedding passed to ``GATConv`` as ``edge_attr``; attention is a softmax over
  each node's *incoming edges*, so it never mixes nodes of different graphs.
* Readout is attention pooling (softmax within each graph via ``batch``) plus
  max pooling, then an MLP to two logits.

:meth:`TaintFlowGNN.embed` and :meth:`TaintFlowGNN.forward_embedded` are split
so that Integrated Gradients can attribute to node input embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch_geometric.nn import AttentionalAggregation, GATConv, global_max_pool

from ..graphs import EDGE_TYPES, MARKS, SUBTOKEN_BUCKETS


@dataclass
class GNNConfig:
    num_node_types: int
    hidden: int = 128
    heads: int = 4
    layers: int = 3
    edge_dim: int = 16
    dropout: float = 0.2
    num_edge_types: int = 2 * len(EDGE_TYPES)  # forward + reversed
    subtoken_buckets: int = SUBTOKEN_BUCKETS
    num_marks: int = len(MARKS)  # models saved before the taint marks read 3 bits
    #: Share of nodes whose identifier/literal sub-tokens are hidden while training: the model must
    #: also judge from structure and taint marks, which carry over to APIs it never saw.
    token_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaintFlowGNN(nn.Module):
    def __init__(self, cfg: GNNConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.type_emb = nn.Embedding(cfg.num_node_types, h)
        self.token_emb = nn.EmbeddingBag(cfg.subtoken_buckets, h, mode="mean", padding_idx=0)
        self.mark_proj = nn.Linear(cfg.num_marks, h)
        self.edge_emb = nn.Embedding(cfg.num_edge_types, cfg.edge_dim)
        self.convs = nn.ModuleList(
            GATConv(h, h // cfg.heads, heads=cfg.heads, edge_dim=cfg.edge_dim, dropout=cfg.dropout)
            for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.pool = AttentionalAggregation(gate_nn=nn.Sequential(nn.Linear(h, h // 2), nn.GELU(), nn.Linear(h // 2, 1)))
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(h, 2))
        self.dropout = nn.Dropout(cfg.dropout)

    def embed(self, node_type: torch.Tensor, node_tokens: torch.Tensor, node_marks: torch.Tensor) -> torch.Tensor:
        """Node input embeddings [num_nodes, hidden] (the input IG attributes to)."""
        bits = torch.stack([(node_marks.long() >> i) & 1 for i in range(self.cfg.num_marks)], dim=-1).float()
        tokens = self.token_emb(node_tokens.long().clamp(min=0))
        if self.training and self.cfg.token_dropout > 0:
            keep = torch.rand(tokens.shape[0], 1, device=tokens.device) >= self.cfg.token_dropout
            tokens = tokens * keep
        return self.type_emb(node_type.long()) + tokens + self.mark_proj(bits)

    @staticmethod
    def with_reverse_edges(edge_index: torch.Tensor, edge_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Information flows both ways along every relation; reversed edges get their own type."""
        rev_index = edge_index.flip(0)
        rev_type = edge_type.long() + len(EDGE_TYPES)
        return torch.cat([edge_index, rev_index], 1).long(), torch.cat([edge_type.long(), rev_type])

    def forward_embedded(self, h: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                         batch: torch.Tensor, num_graphs: int | None = None,
                         return_attention: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        edge_index, edge_type = self.with_reverse_edges(edge_index, edge_type)
        edge_attr = self.edge_emb(edge_type)
        attentions = []
        for conv, norm in zip(self.convs, self.norms):
            if return_attention:
                out, (att_index, alpha) = conv(h, edge_index, edge_attr, return_attention_weights=True)
                attentions.append((att_index, alpha))
            else:
                out = conv(h, edge_index, edge_attr)
            h = norm(h + self.dropout(torch.nn.functional.gelu(out)))
        size = int(batch.max()) + 1 if num_graphs is None else num_graphs
        pooled = torch.cat([self.pool(h, batch, dim_size=size), global_max_pool(h, batch, size=size)], dim=-1)
        extras: dict[str, Any] = {"node_states": h}
        if return_attention:
            extras["attention"] = attentions
        return self.head(pooled), extras

    def forward(self, node_type: torch.Tensor, node_tokens: torch.Tensor, node_marks: torch.Tensor,
                edge_index: torch.Tensor, edge_type: torch.Tensor, batch: torch.Tensor,
                num_graphs: int | None = None, return_attention: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        h = self.embed(node_type, node_tokens, node_marks)
        return self.forward_embedded(h, edge_index, edge_type, batch, num_graphs, return_attention)
