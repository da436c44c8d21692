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
from typing import Any, Sequence

import numpy as np
import torch

from .dataset import SplitData, pack_tokens
from .kinds import CONFIG_FILE, GNNKind, TransformerKind, kind_of_directory
from .packaging import ArchiveLimits, extract_model_archive

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
        """Raw functions → the in-memory split format this model reads."""
        return featurize(codes, getattr(self.kind, "tokenizer", None))


def featurize(codes: Sequence[str], tokenizer: Any | None) -> SplitData:
    import pandas as pd

    from .fastgraph import graph_arrays
    from .tokens import EncodedBatch, encode

    graphs, errors = graph_arrays(codes)
    failed = [(i, e) for i, e in enumerate(errors) if e]
    if failed:
        raise ValueError(f"{len(failed)} of {len(codes)} functions have no program graph (first: input {failed[0][0]}, "
                         f"{failed[0][1]}): split or simplify them")
    tokens = encode(tokenizer, codes) if tokenizer is not None else EncodedBatch(
        [np.zeros(1, np.int32) for _ in codes], [np.ones(1, np.int32) for _ in codes])
    records = pd.DataFrame({"id": [str(i) for i in range(len(codes))], "label": np.zeros(len(codes), np.int64),
                            "code": list(codes), "n_nodes": np.diff(graphs["node_ptr"]),
                            "n_tokens": [len(t) for t in tokens.ids]})
    return SplitData(records, graphs, pack_tokens(tokens), {})


__all__ = ["CONFIG_FILE", "LoadedModel", "Scores", "extract_archive", "featurize", "pack_archive", "score_split"]
