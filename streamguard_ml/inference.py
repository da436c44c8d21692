"""Scoring: a loaded model plus a split (or raw code) → vulnerability scores.

Used by training (validation metrics), evaluation (test split, champion and
challenger alike) and ``streamguard-ml predict``.  Raw code goes through the
same graph and token featurisation as training data.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from .config import InferenceLimits
from .dataset import SplitData, pack_tokens
from .kinds import CONFIG_FILE, GNNKind, TransformerKind, kind_of_directory
from .packaging import ArchiveLimits, extract_model_archive
from .records import Reason, code_fault

log = logging.getLogger(__name__)


@dataclass
class Scores:
    """Per-sample probabilities of the vulnerable class (and anomaly scores for the transformer).

    ``prob`` is what callers report: the raw softmax probability from :func:`score_split`,
    the *calibrated* probability from :meth:`LoadedModel.score`.  ``logit`` keeps the raw
    log-odds (what calibration is fitted on) and ``raw`` the uncalibrated probability.
    """

    prob: np.ndarray
    anomaly: np.ndarray | None = None
    logit: np.ndarray | None = None
    raw: np.ndarray | None = None

    def labels(self, threshold: float = 0.5) -> np.ndarray:
        return (self.prob >= threshold).astype(np.int64)

    def rows(self, ids: Sequence[str], threshold: float = 0.5) -> list[dict[str, Any]]:
        """One prediction row per sample: what ``streamguard-ml predict`` writes and the endpoint returns.

        Built in one place so the CLI and the SageMaker endpoint cannot drift apart.
        """
        if self.anomaly is not None:
            from .models.transformer import ANOMALY_THRESHOLD
        rows = []
        for k, sample_id in enumerate(ids):
            row = {"id": sample_id, "score": round(float(self.prob[k]), 6), "label": int(self.prob[k] >= threshold)}
            if self.anomaly is not None:
                row["anomaly"] = round(float(self.anomaly[k]), 6)
                row["anomalous"] = bool(self.anomaly[k] >= ANOMALY_THRESHOLD)  # unlike anything trained on
            rows.append(row)
        return rows


@torch.no_grad()
def score_split(kind: GNNKind | TransformerKind, model: torch.nn.Module, data: SplitData,
                batch_size: int = 32) -> Scores:
    model.eval()
    prob = np.zeros(len(data), dtype=np.float64)
    logit = np.zeros(len(data), dtype=np.float64)
    # An anomaly head that is not fitted yet (validation during training) has no score to give.
    fitted = isinstance(kind, TransformerKind) and bool(model.anomaly.fitted)
    anomaly = np.zeros(len(data), dtype=np.float64) if fitted else None
    for batch in kind.batches(data, batch_size, shuffle=False, seed=0):
        logits, pooled = kind.forward(model, batch)
        prob[batch.index] = torch.softmax(logits.float(), -1)[:, 1].cpu().numpy()
        logit[batch.index] = (logits[:, 1].double() - logits[:, 0].double()).cpu().numpy()
        if anomaly is not None:
            anomaly[batch.index] = model.anomaly.score(pooled.float()).cpu().numpy()
    return Scores(prob, anomaly, logit, prob.copy())


def extract_archive(archive: Path, target: Path, limits: ArchiveLimits | None = None,
                    name: str | None = None) -> Path:
    """Unpack a SageMaker-style ``model.tar.gz`` into ``target``, or refuse it (``packaging.ArchiveError``).

    Only allow-listed regular files and folders, within the size and member caps, are
    written, member by member, and ``target`` appears only once all of them are.
    Messages name the archive as ``name`` (e.g. the URI it was read from) or its path.
    """
    return extract_model_archive(Path(archive), Path(target), limits, name)


def pack_archive(directory: Path) -> bytes:
    """``model.tar.gz`` with the directory's files at the archive root, as SageMaker writes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


class LoadedModel:
    """A model artifact (directory or ``model.tar.gz``, local or in a store) ready to score.

    It scores with the calibration and decides with the operating point saved in its
    config (models saved before either existed: raw scores, threshold 0.5).
    """

    def __init__(self, directory: Path):
        from .calibration import Calibrator
        from .thresholds import OperatingPoint

        self.directory = Path(directory)
        self.kind = kind_of_directory(self.directory)
        self.model, self.config = self.kind.load(self.directory)
        self.calibrator = Calibrator.from_dict(self.config.get("calibration"))
        self.operating_point = OperatingPoint.from_dict(self.config.get("operating_point"))

    @property
    def threshold(self) -> float:
        """The version's own decision threshold (chosen on its validation split)."""
        return float(self.operating_point.threshold)

    def seen_code(self) -> set[str] | None:
        """Fingerprints of the code this model (and, for the fusion detector, each member) was
        trained or selected on; None for a model saved before they were recorded."""
        own = (self.config.get("trained_on") or {}).get("fingerprints")
        members = getattr(self.model, "members", None) or {}
        parts = [own] + [m.seen_code() for m in members.values()]
        if all(p is None for p in parts):
            return None
        return set().union(*(p for p in parts if p is not None))

    @classmethod
    def from_uri(cls, uri: str, workdir: Path | None = None) -> "LoadedModel":
        from .store import read_uri_bytes

        if Path(uri).is_dir():
            return cls(Path(uri))
        workdir = Path(workdir or tempfile.mkdtemp(prefix="sg-model-"))
        workdir.mkdir(parents=True, exist_ok=True)
        archive = workdir / "model.tar.gz"
        archive.write_bytes(read_uri_bytes(uri))
        return cls(extract_archive(archive, workdir / "model", name=uri))

    @property
    def model_type(self) -> str:
        return self.kind.name

    def score(self, data: SplitData, batch_size: int = 32) -> Scores:
        """Calibrated scores (``prob``), with the raw ones kept beside them."""
        raw = self.kind.score(self.model, data, batch_size)
        return Scores(self.calibrator.apply(raw.logit), raw.anomaly, raw.logit, raw.raw)

    def featurize(self, codes: Sequence[str]) -> SplitData:
        """Raw functions → the in-memory split format this model reads (ValueError if any has no graph)."""
        return featurize(codes, getattr(self.kind, "tokenizer", None))

    def featurize_each(self, codes: Sequence[str]) -> tuple[SplitData, list[str | None]]:
        """:meth:`featurize` of the functions that have a program graph, and per input None or why not."""
        return featurize_each(codes, getattr(self.kind, "tokenizer", None))


def featurize(codes: Sequence[str], tokenizer: Any | None) -> SplitData:
    """All of ``codes`` featurised, or ValueError naming the first that has no program graph."""
    data, errors = featurize_each(codes, tokenizer)
    failed = [(i, e) for i, e in enumerate(errors) if e]
    if failed:
        raise ValueError(f"{len(failed)} of {len(codes)} functions have no program graph (first: input {failed[0][0]}, "
                         f"{failed[0][1]}): split or simplify them")
    return data


def featurize_each(codes: Sequence[str], tokenizer: Any | None) -> tuple[SplitData, list[str | None]]:
    """The split of the functions that have a program graph (in input order) and, per input, None or the
    graph error: one unbuildable function must not cost the others their scores."""
    import pandas as pd

    from .fastgraph import graph_arrays
    from .tokens import EncodedBatch, encode

    graphs, errors = graph_arrays(codes)
    built = [code for code, error in zip(codes, errors) if error is None]
    tokens = encode(tokenizer, built) if tokenizer is not None and built else EncodedBatch(
        [np.zeros(1, np.int32) for _ in built], [np.ones(1, np.int32) for _ in built])
    records = pd.DataFrame({"id": [str(i) for i in range(len(built))], "label": np.zeros(len(built), np.int64),
                            "code": built, "n_nodes": np.diff(graphs["node_ptr"]),
                            "n_tokens": [len(t) for t in tokens.ids]})
    return SplitData(records, graphs, pack_tokens(tokens), {}), errors


# -- scoring raw input: ``streamguard-ml predict`` and the endpoint ------------------------------------------

#: Error-row reason of a function no program graph could be built for (the others are records.Reason's).
NO_GRAPH = "no_graph"


@dataclass(frozen=True)
class Item:
    """One function to score, and where its sender finds it: ``line`` 7 of a file, ``instance`` 3 of a request.

    ``fault`` is (reason, detail) when the input could not even be read as a function (bad JSON, no code).
    """

    id: str
    code: str | None
    where: str
    position: int
    fault: tuple[str, str] | None = None


def function_fault(code: Any, limits: InferenceLimits) -> tuple[str, str] | None:
    """(reason, detail) when ``code`` must not be scored: what ingest rejects (:func:`records.code_fault`:
    empty, not UTF-8, NUL bytes) or over the per-function limits; None when it may be."""
    if fault := code_fault(code):
        return fault
    chars, lines = len(code), code.count("\n") + 1
    if chars > limits.max_function_chars or lines > limits.max_function_lines:
        return Reason.TOO_LONG, (f"{chars} characters / {lines} lines is over the limit of "
                                 f"{limits.max_function_chars} / {limits.max_function_lines} per function: split it "
                                 "into functions (or raise --max-function-chars / --max-function-lines, "
                                 "STREAMGUARD_MAX_FUNCTION_CHARS / _LINES on the endpoint)")
    return None


def error_row(item: Item, reason: str, detail: str) -> dict[str, Any]:
    """The row of an input that was not scored: no score, no label, and what to do about it."""
    return {"id": item.id, "score": None, "label": None, item.where: item.position, "reason": reason,
            "error": f"{item.where} {item.position}: {detail}"}


def batches(items: Iterable[Item], limits: InferenceLimits) -> Iterator[list[Item]]:
    """``items`` in order, cut into runs within the request limits (a single larger item runs alone)."""
    batch: list[Item] = []
    size = 0
    for item in items:
        cost = len(item.code.encode("utf-8", "replace")) if item.code is not None else 0
        if batch and (len(batch) >= limits.max_request_functions or size + cost > limits.max_request_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        yield batch


def predict_items(model: LoadedModel, items: Iterable[Item], threshold: float,
                  limits: InferenceLimits) -> list[dict[str, Any]]:
    """One row per item, in order: :meth:`Scores.rows`' row, or :func:`error_row` for an item that was
    unreadable, is refused by :func:`function_fault` or has no program graph."""
    return list(predict_stream(model, items, threshold, limits))


def predict_stream(model: LoadedModel, items: Iterable[Item], threshold: float,
                   limits: InferenceLimits) -> Iterator[dict[str, Any]]:
    """:func:`predict_items` as rows come: featurised and scored in :func:`batches`, so memory is bounded
    by the request limits, not by how many items there are (``items`` may be a generator over a file)."""
    for batch in batches(items, limits):
        yield from _predict_batch(model, batch, threshold, limits)


def _predict_batch(model: LoadedModel, items: Sequence[Item], threshold: float,
                   limits: InferenceLimits) -> list[dict[str, Any]]:
    faults = [item.fault or function_fault(item.code, limits) for item in items]
    todo = [k for k, fault in enumerate(faults) if fault is None]
    scored: Iterator[dict[str, Any]] = iter(())
    if todo:
        data, errors = model.featurize_each([items[k].code for k in todo])
        for k, error in zip(todo, errors):
            if error:
                faults[k] = (NO_GRAPH, f"no program graph could be built ({error}): split or simplify the function")
        ok = [k for k in todo if faults[k] is None]
        if ok:
            scored = iter(model.score(data).rows([items[k].id for k in ok], threshold))
    return [error_row(item, *fault) if fault else next(scored) for item, fault in zip(items, faults)]


__all__ = ["CONFIG_FILE", "Item", "LoadedModel", "NO_GRAPH", "Scores", "batches", "error_row", "extract_archive",
           "featurize", "featurize_each", "function_fault", "pack_archive", "predict_items", "predict_stream",
           "score_split"]
