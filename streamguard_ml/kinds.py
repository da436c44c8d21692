"""Model kinds: how each model type batches a split, and is built, saved and loaded.

The training loop (``train.py``), evaluation and prediction are written once
against this small interface; the GNN and the transformer differ only here.
Weights are saved as safetensors next to a JSON config (and, for the
transformer, the encoder config and tokenizer), so loading never unpickles and
never needs the network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .dataset import SplitData
from .pairs import pair_positions, pair_units
from .tokens import bucketed_batches, collate_windows

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "streamguard_model.json"


@dataclass
class Batch:
    inputs: dict[str, Any]
    labels: torch.Tensor
    index: list[int]  # positions in the split
    #: [k, 2] positions in this batch of (vulnerable, fixed) members of one pair; None unless asked for.
    pairs: torch.Tensor | None = None


def batch_order(data: SplitData, lengths: Any, batch_size: int, shuffle: bool, seed: int,
                pairs: bool) -> Any:
    """Length-bucketed batches of split positions; with ``pairs`` a pair's members share a batch."""
    units = pair_units(data.records["pair_id"].tolist()) if pairs and "pair_id" in data.records else None
    return bucketed_batches(lengths, batch_size, seed, shuffle=shuffle, units=units)


def with_pairs(batch: Batch, data: SplitData, pairs: bool) -> Batch:
    if pairs and "pair_id" in data.records:
        batch.pairs = torch.from_numpy(pair_positions(batch.index, data.records["pair_id"].tolist(), data.labels))
    return batch


def with_defaults(model_type: str, hp: dict[str, Any]) -> dict[str, Any]:
    """``hp`` completed with the typed config's defaults for ``model_type`` (argument names with ``_``)."""
    from .config import PipelineConfig

    defaults = {k.replace("-", "_"): v for k, v in PipelineConfig().hyperparameters(model_type).items()}
    return {**defaults, **{k: v for k, v in hp.items() if v is not None}}


def save_config(out: Path, doc: dict[str, Any]) -> None:
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))


class _Learner:
    """What the GNN and the transformer share: scoring a split batch by batch."""

    name = ""

    def score(self, model: torch.nn.Module, data: SplitData, batch_size: int) -> Any:
        from .inference import score_split

        return score_split(self, model, data, batch_size)  # type: ignore[arg-type]


class GNNKind(_Learner):
    name = "gnn"

    def __init__(self) -> None:
        self._cache: dict[int, list[Any]] = {}

    def build(self, meta: dict[str, Any], hp: dict[str, Any]) -> torch.nn.Module:
        from .models.gnn import GNNConfig, TaintFlowGNN

        hp = with_defaults(self.name, hp)
        cfg = GNNConfig(num_node_types=int(meta["vocabulary_size"]), hidden=int(hp["hidden"]),
                        layers=int(hp["layers"]), heads=int(hp["heads"]), dropout=float(hp["dropout"]),
                        token_dropout=float(hp["token_dropout"]))
        return TaintFlowGNN(cfg)

    def _graphs(self, data: SplitData) -> list[Any]:
        from torch_geometric.data import Data

        key = id(data)
        if key not in self._cache:
            labels = data.labels
            graphs = []
            for i in range(len(data)):
                g = data.graph(i)
                graphs.append(Data(node_type=torch.from_numpy(g["node_type"].astype(np.int64)),
                                   node_tokens=torch.from_numpy(g["node_tokens"].astype(np.int64)),
                                   node_marks=torch.from_numpy(g["node_marks"].astype(np.int64)),
                                   edge_index=torch.from_numpy(g["edge_index"].astype(np.int64)),
                                   edge_type=torch.from_numpy(g["edge_type"].astype(np.int64)),
                                   y=torch.tensor([int(labels[i])]), num_nodes=len(g["node_type"])))
            self._cache = {key: graphs}
        return self._cache[key]

    def batches(self, data: SplitData, batch_size: int, shuffle: bool, seed: int,
                pairs: bool = False) -> Iterator[Batch]:
        from torch_geometric.data import Batch as PygBatch

        graphs = self._graphs(data)
        lengths = data.records["n_nodes"].to_numpy()
        for idx in batch_order(data, lengths, batch_size, shuffle, seed, pairs):
            b = PygBatch.from_data_list([graphs[i] for i in idx])
            inputs = {"node_type": b.node_type, "node_tokens": b.node_tokens, "node_marks": b.node_marks,
                      "edge_index": b.edge_index, "edge_type": b.edge_type, "batch": b.batch,
                      "num_graphs": len(idx)}
            yield with_pairs(Batch(inputs, b.y, list(idx)), data, pairs)

    def forward(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = model(**batch.inputs)
        return logits, None

    def save(self, model: torch.nn.Module, out: Path, meta: dict[str, Any], hp: dict[str, Any],
             extras: dict[str, Any] | None = None) -> None:
        """Weights as safetensors; ``extras`` (calibration, operating point) ride in the JSON config."""
        from safetensors.torch import save_model

        save_model(model, str(out / MODEL_FILE))
        save_config(out, {"model_type": self.name, "architecture": model.cfg.to_dict(), "dataset": meta,
                          "hyperparameters": hp, **(extras or {})})

    def load(self, directory: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
        from safetensors.torch import load_model

        from .models.gnn import GNNConfig, TaintFlowGNN

        config = json.loads((directory / CONFIG_FILE).read_text())
        model = TaintFlowGNN(GNNConfig(**{"num_marks": 3, **config["architecture"]}))  # pg-1 models had 3 marks
        load_model(model, str(directory / MODEL_FILE))
        return model.eval(), config

    def fit_extras(self, model: torch.nn.Module, train: SplitData, val: SplitData, batch_size: int) -> None:
        """The GNN has no head fitted after training (its scores are calibrated in train.py, as every model's)."""


class TransformerKind(_Learner):
    name = "transformer"

    def __init__(self, max_length: int = 256, stride: int = 192):
        self.max_length, self.stride = max_length, stride
        self.tokenizer: Any = None

    def _special_ids(self) -> tuple[int, int, int]:
        t = self.tokenizer
        cls = t.cls_token_id if t.cls_token_id is not None else t.bos_token_id
        sep = t.sep_token_id if t.sep_token_id is not None else t.eos_token_id
        return int(cls), int(sep), int(t.pad_token_id if t.pad_token_id is not None else 0)

    def build(self, meta: dict[str, Any], hp: dict[str, Any]) -> torch.nn.Module:
        from transformers import AutoModel

        from .models.transformer import SQLIntentTransformer, max_positions
        from .tokens import load_tokenizer, resolve_base_model

        base = hp.get("base_model") or meta["base_model"]
        if meta.get("base_model") and base != meta["base_model"]:
            raise ValueError(f"data was tokenized for {meta['base_model']!r} but training asks for {base!r}: "
                             "re-run preprocess with the same base_model")
        self.tokenizer = load_tokenizer(base)
        encoder = AutoModel.from_pretrained(resolve_base_model(base))
        limit = max_positions(encoder.config)
        if self.max_length > limit:
            raise ValueError(f"max_length={self.max_length} exceeds the {limit} positions of {base!r}: use "
                             f"--max-length {limit} or less (longer functions are covered by overlapping windows)")
        return SQLIntentTransformer(encoder, dropout=float(with_defaults(self.name, hp)["dropout"]))

    def batches(self, data: SplitData, batch_size: int, shuffle: bool, seed: int,
                pairs: bool = False) -> Iterator[Batch]:
        lengths = data.records["n_tokens"].to_numpy()
        for idx in batch_order(data, lengths, batch_size, shuffle, seed, pairs):
            yield with_pairs(self.collate(data, idx), data, pairs)

    def collate(self, data: SplitData, idx: list[int]) -> Batch:
        """Samples ``idx`` as windows padded to the longest window of this batch (dynamic padding)."""
        cls, sep, pad = self._special_ids()
        wb = collate_windows([data.token_ids(i) for i in idx], self.max_length, self.stride, cls, sep, pad)
        inputs = {"input_ids": wb.input_ids, "attention_mask": wb.attention_mask,
                  "window_sample": wb.window_sample, "num_samples": len(idx)}
        return Batch(inputs, torch.as_tensor(data.labels[idx], dtype=torch.long), list(idx))

    def forward(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return model(**batch.inputs)

    def save(self, model: torch.nn.Module, out: Path, meta: dict[str, Any], hp: dict[str, Any],
             extras: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_model

        save_model(model, str(out / MODEL_FILE))
        model.encoder.config.save_pretrained(out / "encoder")
        self.tokenizer.save_pretrained(out / "tokenizer")
        save_config(out, {"model_type": self.name, "max_length": self.max_length, "window_stride": self.stride,
                          "dataset": meta, "hyperparameters": hp, **(extras or {})})

    def load(self, directory: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from .models.transformer import SQLIntentTransformer

        config = json.loads((directory / CONFIG_FILE).read_text())
        self.max_length, self.stride = int(config["max_length"]), int(config["window_stride"])
        self.tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer", use_fast=True)
        self.tokenizer.model_max_length = 10**9
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(directory / "encoder"))
        model = SQLIntentTransformer(encoder)
        load_model(model, str(directory / MODEL_FILE))
        return model.eval(), config

    @torch.no_grad()
    def embeddings(self, model: torch.nn.Module, data: SplitData, batch_size: int) -> torch.Tensor:
        out = torch.zeros(len(data), model.encoder.config.hidden_size)
        model.eval()
        for b in self.batches(data, batch_size, shuffle=False, seed=0):
            _, pooled = self.forward(model, b)
            out[b.index] = pooled.float().cpu()
        return out

    def fit_extras(self, model: torch.nn.Module, train: SplitData, val: SplitData, batch_size: int) -> None:
        """Fit the anomaly head on training embeddings, calibrate it on validation."""
        train_emb = self.embeddings(model, train, batch_size)
        val_emb = self.embeddings(model, val, batch_size)
        model.anomaly.fit(train_emb, torch.as_tensor(train.labels), val_emb)


def kind_for(model_type: str, **kwargs: Any) -> Any:
    """The kind of ``model_type``: GNN, transformer or the fusion detector (``fusion.FusionKind``)."""
    if model_type == "gnn":
        return GNNKind()
    if model_type == "transformer":
        return TransformerKind(**kwargs)
    if model_type == "fusion":
        from .fusion import FusionKind

        return FusionKind()
    raise ValueError(f"model type {model_type!r}: use 'gnn', 'transformer' or 'fusion'")


def kind_of_directory(directory: Path) -> Any:
    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    return kind_for(config["model_type"])
