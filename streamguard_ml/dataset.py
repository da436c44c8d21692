"""The processed-data format: Parquet records plus compressed safetensors shards of graphs and tokens.

A shard directory holds

* ``records.parquet`` — one row per sample (ids, labels, CWE, pair, group, code, lines);
* ``graphs.safetensors.zst`` — all program graphs of the shard concatenated, with
  ``node_ptr`` / ``edge_ptr`` offsets (CSR style);
* ``tokens.safetensors.zst`` — unpadded token ids and their source lines, with ``tok_ptr``.

safetensors never unpickles; the tensor files are zstd-compressed (a standard
zstd stream: ``zstd -d`` restores plain safetensors) because graph arrays are
highly redundant — node types, sub-token buckets and line numbers shrink ~10x.
Parquet is columnar and compressed.  :func:`load_split` reads every shard of a
split directory back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .graphs import SUBTOKENS_PER_NODE, ProgramGraph
from .tokens import EncodedBatch

#: How tensor shards are stored (``.zst``: zstd-compressed safetensors).
TENSOR_SUFFIX = ".safetensors.zst"


def offsets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """CSR offsets of consecutive items with these counts: ``[0, c0, c0 + c1, ...]`` (int64)."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def pack_graphs(graphs: Sequence[ProgramGraph]) -> dict[str, np.ndarray]:
    """Concatenate graphs into flat arrays with CSR offsets."""
    node_counts = [g.num_nodes for g in graphs]
    edge_counts = [len(g.edges) for g in graphs]
    nodes = sum(node_counts)
    edges = np.fromiter(chain.from_iterable(chain.from_iterable(g.edges for g in graphs)), np.int32,
                        3 * sum(edge_counts)).reshape(-1, 3)
    buckets = np.fromiter(chain.from_iterable(chain.from_iterable(g.token_buckets() for g in graphs)), np.int16,
                          nodes * SUBTOKENS_PER_NODE)
    return {
        "node_type": np.fromiter(chain.from_iterable(g.type_ids() for g in graphs), np.int16, nodes),
        "node_tokens": buckets.reshape(-1, SUBTOKENS_PER_NODE),
        "node_marks": np.fromiter(chain.from_iterable(g.marks for g in graphs), np.uint8, nodes),
        "node_line": np.fromiter(chain.from_iterable(g.start_line for g in graphs), np.int32, nodes),
        "node_end_line": np.fromiter(chain.from_iterable(g.end_line for g in graphs), np.int32, nodes),
        "edge_index": edges[:, :2].T.copy(),
        "edge_type": edges[:, 2].astype(np.uint8),
        "node_ptr": offsets(node_counts),
        "edge_ptr": offsets(edge_counts),
    }


def concat_graphs(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Packed graph chunks → one packed set (offsets shifted; edge ids stay graph-local)."""
    return _concat(list(parts), {"node_ptr": "node_type", "edge_ptr": "edge_type"}, {"edge_index"})


def pack_tokens(batch: EncodedBatch) -> dict[str, np.ndarray]:
    lengths = [len(x) for x in batch.ids]
    return {
        "input_ids": np.concatenate(batch.ids) if batch.ids else np.zeros(0, np.int32),
        "token_line": np.concatenate(batch.lines) if batch.lines else np.zeros(0, np.int32),
        "tok_ptr": offsets(lengths),
    }


def arrays_bytes(arrays: dict[str, np.ndarray], meta: dict[str, str] | None = None) -> bytes:
    """Arrays as a zstd-compressed safetensors file (the ``TENSOR_SUFFIX`` format: a standard
    zstd frame, so ``zstd -d`` restores the safetensors bytes)."""
    import pyarrow as pa
    from safetensors.numpy import save

    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta))
    return sink.getvalue().to_pybytes()


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    import pyarrow as pa
    from safetensors.numpy import load

    with pa.input_stream(str(path), compression="zstd" if str(path).endswith(".zst") else None) as src:
        return load(src.read())


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
    graphs = concat_graphs([load_arrays(s / f"graphs{TENSOR_SUFFIX}") for s in shards])
    tokens = _concat([load_arrays(s / f"tokens{TENSOR_SUFFIX}") for s in shards], {"tok_ptr": "input_ids"}, set())
    meta_path = directory / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return SplitData(records, graphs, tokens, meta)
