"""The processed-data format: Parquet records plus safetensors shards of graphs and tokens.

A shard directory holds

* ``records.parquet`` — one row per sample (ids, labels, CWE, pair, group, code, lines);
* ``graphs.safetensors`` — all program graphs of the shard concatenated, with
  ``node_ptr`` / ``edge_ptr`` offsets (CSR style);
* ``tokens.safetensors`` — unpadded token ids and their source lines, with ``tok_ptr``.

safetensors never unpickles and memory-maps cheaply; Parquet is columnar and
compressed.  :func:`load_split` reads every shard of a split directory back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .graphs import SUBTOKENS_PER_NODE, ProgramGraph
from .tokens import EncodedBatch

def pack_graphs(graphs: Sequence[ProgramGraph]) -> dict[str, np.ndarray]:
    """Concatenate graphs into flat arrays with CSR offsets."""
    node_counts = [g.num_nodes for g in graphs]
    edge_counts = [len(g.edges) for g in graphs]
    edges = [e for g in graphs for e in g.edges]
    return {
        "node_type": np.fromiter((t for g in graphs for t in g.type_ids()), np.int16, sum(node_counts)),
        "node_tokens": np.asarray([b for g in graphs for b in g.token_buckets()], np.int16).reshape(-1, SUBTOKENS_PER_NODE),
        "node_marks": np.fromiter((m for g in graphs for m in g.marks), np.uint8, sum(node_counts)),
        "node_line": np.fromiter((s for g in graphs for s in g.start_line), np.int32, sum(node_counts)),
        "node_end_line": np.fromiter((s for g in graphs for s in g.end_line), np.int32, sum(node_counts)),
        "edge_index": np.asarray([(e[0], e[1]) for e in edges], np.int32).reshape(-1, 2).T.copy(),
        "edge_type": np.fromiter((e[2] for e in edges), np.uint8, len(edges)),
        "node_ptr": np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64),
        "edge_ptr": np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64),
    }


def pack_tokens(batch: EncodedBatch) -> dict[str, np.ndarray]:
    lengths = [len(x) for x in batch.ids]
    return {
        "input_ids": np.concatenate(batch.ids) if batch.ids else np.zeros(0, np.int32),
        "token_line": np.concatenate(batch.lines) if batch.lines else np.zeros(0, np.int32),
        "tok_ptr": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }


def save_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata=meta)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@dataclass
class SplitData:
    """One split in memory: records (a DataFrame), graphs and tokens as flat arrays."""

    records: Any  # pandas.DataFrame
    graphs: dict[str, np.ndarray]
    tokens: dict[str, np.ndarray]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return self.records["label"].to_numpy(dtype=np.int64)

    def token_ids(self, i: int) -> np.ndarray:
        p = self.tokens["tok_ptr"]
        return self.tokens["input_ids"][p[i] : p[i + 1]]

    def token_lines(self, i: int) -> np.ndarray:
        p = self.tokens["tok_ptr"]
        return self.tokens["token_line"][p[i] : p[i + 1]]

    def graph(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of graph ``i`` with node indices local to the graph."""
        g, n0, n1 = self.graphs, self.graphs["node_ptr"][i], self.graphs["node_ptr"][i + 1]
        e0, e1 = g["edge_ptr"][i], g["edge_ptr"][i + 1]
        return {"node_type": g["node_type"][n0:n1], "node_tokens": g["node_tokens"][n0:n1],
                "node_marks": g["node_marks"][n0:n1], "node_line": g["node_line"][n0:n1],
                "edge_index": g["edge_index"][:, e0:e1], "edge_type": g["edge_type"][e0:e1]}


def _concat(parts: list[dict[str, np.ndarray]], ptr_keys: dict[str, str], axis1: set[str]) -> dict[str, np.ndarray]:
    """Concatenate CSR-packed shards, shifting the offsets (edge ids are graph-local)."""
    if not parts:
        return {}
    out: dict[str, list[np.ndarray]] = {k: [] for k in parts[0]}
    shift = {k: 0 for k in ptr_keys}
    for part in parts:
        for key, arr in part.items():
            if key in ptr_keys:
                out[key].append(arr[(0 if not out[key] else 1):] + shift[key])
            else:
                out[key].append(arr)
        for key, counted in ptr_keys.items():
            shift[key] += len(part[counted])
    return {k: np.concatenate(v, axis=1 if k in axis1 else 0) for k, v in out.items()}


def load_split(directory: str | Path) -> SplitData:
    """Read all shards of one split directory (a local path, e.g. a SageMaker channel)."""
    import pandas as pd

    directory = Path(directory)
    shards = sorted(p for p in directory.glob("shard-*") if (p / "records.parquet").exists())
    if not shards:
        raise FileNotFoundError(f"{directory} holds no processed shards: run preprocess first")
    records = pd.concat([pd.read_parquet(s / "records.parquet") for s in shards], ignore_index=True)
    graphs = _concat([load_arrays(s / "graphs.safetensors") for s in shards],
                     {"node_ptr": "node_type", "edge_ptr": "edge_type"}, {"edge_index"})
    tokens = _concat([load_arrays(s / "tokens.safetensors") for s in shards], {"tok_ptr": "input_ids"}, set())
    meta_path = directory / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return SplitData(records, graphs, tokens, meta)
