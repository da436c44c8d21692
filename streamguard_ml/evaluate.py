"""Metrics on a test split: the usual classification metrics, false-positive rate,
ROC-AUC, pair-wise accuracy on vulnerable/fixed pairs and per-CWE breakdowns.

Pair-wise accuracy is the metric that matters for a scanner: a pair counts as
correct only if the vulnerable version is flagged *and* its fix is not.  A model
that flags every ``cursor.execute`` gets high recall and zero pair-wise accuracy.
Pair ranking asks less: is the vulnerable version scored above its own fix?

Every figure is taken at the version's own decision threshold (its operating
point, chosen on validation) and repeated at 0.5 under ``at_0.5``; scores are the
calibrated ones, with Brier score and calibration error before and after.  Each
report says which data its test split came from: scores on the built-in synthetic
functions do not measure quality on real code.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import layout
from .store import Store

log = logging.getLogger(__name__)


def classification_metrics(y_true: Sequence[int], prob: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    pred = (p >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out = {"accuracy": float(accuracy_score(y, pred)), "precision": float(precision), "recall": float(recall),
           "f1": float(f1), "fpr": float(fp / (fp + tn)) if fp + tn else 0.0,
           "roc_auc": float(roc_auc_score(y, p)) if len(set(y)) == 2 else None,
           "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn), "n": int(len(y)), "threshold": threshold}
    return out


def _complete_pairs(pair_ids: Sequence[Any], labels: Sequence[int], values: Sequence[float]) -> list[dict]:
    members: dict[str, dict[int, list[float]]] = {}
    for pid, y, v in zip(pair_ids, labels, values):
        if pid is None or (isinstance(pid, float) and np.isnan(pid)):
            continue
        members.setdefault(str(pid), {0: [], 1: []})[int(y)].append(float(v))
    return [v for v in members.values() if v[0] and v[1]]


def pairwise_accuracy(pair_ids: Sequence[Any], labels: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    """Share of complete pairs whose vulnerable member is flagged and whose fix is not."""
    complete = _complete_pairs(pair_ids, labels, pred)
    correct = sum(1 for v in complete if all(v[1]) and not any(v[0]))
    return {"pairwise_accuracy": correct / len(complete) if complete else None, "pairs": len(complete),
            "pairs_correct": correct}


def pair_ranking(pair_ids: Sequence[Any], labels: Sequence[int], prob: Sequence[float]) -> float | None:
    """Share of complete pairs whose vulnerable member scores above its fix (a tie counts one half)."""
    complete = _complete_pairs(pair_ids, labels, prob)
    if not complete:
        return None
    wins = [1.0 if min(v[1]) > max(v[0]) else 0.5 if min(v[1]) == max(v[0]) else 0.0 for v in complete]
    return float(np.mean(wins))


def per_cwe_metrics(records: Any, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    out = {}
    cwes = records["cwe"].fillna("unknown").to_numpy()
    for cwe in sorted(set(cwes)):
        mask = cwes == cwe
        sub = records[mask]
        labels = sub["label"].to_numpy()
        if len(set(labels)) < 2:
            continue
        m = classification_metrics(labels, prob[mask], threshold)
        pw = pairwise_accuracy(sub["pair_id"].tolist(), labels, (prob[mask] >= threshold).astype(int))
        out[cwe] = {"f1": m["f1"], "fpr": m["fpr"], "recall": m["recall"], "roc_auc": m["roc_auc"], "n": m["n"],
                    "pair_ranking": pair_ranking(sub["pair_id"].tolist(), labels, prob[mask]), **pw}
    return out


def full_metrics(records: Any, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    labels = records["label"].to_numpy()
    metrics = classification_metrics(labels, prob, threshold)
    metrics.update(pairwise_accuracy(records["pair_id"].tolist(), labels, (prob >= threshold).astype(int)))
    metrics["pair_ranking"] = pair_ranking(records["pair_id"].tolist(), labels, prob)
    metrics["per_cwe"] = per_cwe_metrics(records, prob, threshold)
    return metrics


#: The headline figures repeated at the fixed 0.5 threshold (``metrics["at_0.5"]``).
AT_HALF_KEYS = ("accuracy", "precision", "recall", "f1", "fpr", "pairwise_accuracy", "tp", "fp", "tn", "fn")
#: ``source`` values of generated (not real) code.
SYNTHETIC_SOURCES = ("synthetic",)


def split_provenance(records: Any) -> dict[str, Any]:
    """Which data the scored split came from, and whether its figures can speak for real code."""
    sources = records["source"].fillna("unknown").astype(str) if "source" in records else None
    counts = {str(k): int(v) for k, v in sources.value_counts().sort_index().items()} if sources is not None else {}
    synthetic = sum(v for k, v in counts.items() if k in SYNTHETIC_SOURCES)
    real = sum(counts.values()) - synthetic
    doc = {"samples": int(len(records)), "sources": counts, "synthetic": synthetic, "real": real,
           "synthetic_only": real == 0 and synthetic > 0, "content_hash": split_identity(records)}
    doc["statement"] = provenance_statement(doc)
    return doc


def split_identity(records: Any) -> str:
    """SHA-256 over the scored functions (id, label, code) in id order: two versions' figures
    compare only when they were measured on the same identity."""
    h = hashlib.sha256()
    column = lambda name: records[name].astype(str) if name in records else [""] * len(records)  # noqa: E731
    for sample_id, label, code in sorted(zip(column("id"), column("label"), column("code"))):
        h.update(f"{sample_id}\x1f{label}\x1f".encode())
        h.update(hashlib.sha256(code.encode()).digest())
    return h.hexdigest()


def seen_in_training(records: Any, model: Any) -> dict[str, Any] | None:
    """How many scored functions the model trained or selected on (by ``records.code_fingerprint``).

    Such figures are optimistic: a re-run on a different split, a champion trained on
    newer data, or a dataset that repeats code across sources all leak test functions
    into training.  None when the model predates recorded fingerprints.
    """
    from .records import code_fingerprint

    seen = model.seen_code() if hasattr(model, "seen_code") else None
    if seen is None:
        return None
    hits = [i for i, code in enumerate(records["code"]) if code_fingerprint(code) in seen]
    return {"samples": len(hits), "of": int(len(records)),
            "ids": [str(records["id"].iloc[i]) for i in hits[:20]]}


def provenance_statement(doc: dict[str, Any]) -> str:
    """One sentence for the run report and the model card."""
    parts = ", ".join(f"{n} {name}" for name, n in doc["sources"].items()) or "unknown sources"
    if doc["synthetic_only"]:
        return (f"Test split: {doc['samples']} built-in synthetic functions ({parts}). These figures do NOT measure "
                "quality on real code; train and test on real data, e.g. the DAG Param "
                "sources=[\"sven:PATH\"] or `streamguard-ml ingest --source sven:PATH`.")
    if doc["synthetic"]:
        return (f"Test split: {doc['samples']} functions ({parts}); {doc['synthetic']} are synthetic, so the "
                "figures mix real and generated code.")
    return f"Test split: {doc['samples']} real functions ({parts})."


def evaluate_model(store: Store, run: str, model_type: str, model_uri: str, workdir: Path,
                   split: str = "test", name: str = "challenger", explain_samples: int = 0,
                   threshold: float | None = None) -> dict[str, Any]:
    """Score ``model_uri`` on the run's split; writes metrics and predictions under ``eval/``.

    Decisions are taken at the version's own threshold unless ``threshold`` overrides it.
    With ``explain_samples``, that many vulnerable samples with known changed lines
    are explained and the line-localisation metrics are added.
    """
    from .dataset import load_split
    from .inference import LoadedModel

    with store.local_dir(layout.split_dir(run, split)) as split_path:
        data = load_split(split_path)
    model = LoadedModel.from_uri(model_uri, workdir / name)
    if model.model_type != model_type:
        raise ValueError(f"{model_uri} holds a {model.model_type} model, expected {model_type}")
    data = compatible_data(model, data)
    scores = model.score(data)
    metrics = score_metrics(data.records, scores, model, threshold)
    if explain_samples:
        explained = explanation_metrics(model, data, explain_samples)
        store.write_json(f"{layout.eval_dir(run, model_type)}/{name}-explanations.json", explained.pop("examples"))
        metrics.update(explained)
    if name == "challenger":
        from .drift import reference_profile

        store.write_json(f"{layout.eval_dir(run, model_type)}/reference.json",
                         reference_profile(data.records["code"], scores.prob, data.graphs["node_type"]))
    _write_predictions(store, f"{layout.eval_dir(run, model_type)}/{name}-predictions.parquet", data, scores,
                       metrics["threshold"])
    store.write_json(layout.eval_metrics(run, model_type, name), metrics)
    log.info("%s %s on %s/%s at threshold %.3f: acc=%.3f f1=%.3f fpr=%.3f auc=%s pairwise=%s", name, model_type,
             run, split, metrics["threshold"], metrics["accuracy"], metrics["f1"], metrics["fpr"],
             _fmt(metrics["roc_auc"]), _fmt(metrics["pairwise_accuracy"]))
    overlap = metrics["test_data"].get("seen_in_training") or {}
    if overlap.get("samples"):
        log.warning("%s %s: %d of %d test functions were in its training or validation data (e.g. %s): its "
                    "figures on %s/%s are optimistic", name, model_uri, overlap["samples"], overlap["of"],
                    ", ".join(overlap["ids"][:3]), run, split)
    else:
        log.info("%s", metrics["test_data"]["statement"])
    return metrics


def score_metrics(records: Any, scores: Any, model: Any, threshold: float | None = None) -> dict[str, Any]:
    """Every figure of one scored split: at the operating point, at 0.5, calibration, provenance."""
    from .calibration import report

    cut = model.threshold if threshold is None else float(threshold)
    metrics = full_metrics(records, scores.prob, cut)
    at_half = full_metrics(records, scores.prob, 0.5)
    metrics["at_0.5"] = {k: at_half[k] for k in AT_HALF_KEYS}
    metrics["operating_point"] = {**model.operating_point.to_dict(), "overridden": threshold is not None}
    if scores.raw is not None:
        metrics["calibration"] = report(records["label"].to_numpy(), scores.raw, scores.prob, model.calibrator.method)
    metrics["test_data"] = split_provenance(records)
    overlap = seen_in_training(records, model)
    if overlap is not None:
        metrics["test_data"]["seen_in_training"] = overlap
        if overlap["samples"]:
            metrics["test_data"]["statement"] += (
                f" WARNING: {overlap['samples']} of {overlap['of']} of these functions were in this model's "
                "training or validation data, so its figures here are optimistic.")
    if scores.anomaly is not None:
        from .models.transformer import ANOMALY_THRESHOLD

        metrics["anomaly_mean"] = float(np.mean(scores.anomaly))
        metrics["anomalous_share"] = float(np.mean(scores.anomaly >= ANOMALY_THRESHOLD))  # ≈1 % when in-distribution
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


EXAMPLES_KEPT = 5


def explanation_metrics(model: Any, data: Any, limit: int) -> dict[str, Any]:
    """Line localisation of IG explanations on vulnerable samples whose fix is known
    (the first few are kept as ``examples`` for the model card)."""
    from .explain import explain_split, localisation

    known = [i for i, (y, lines) in enumerate(zip(data.records["label"], data.records["vulnerable_lines"]))
             if y == 1 and lines is not None and len(lines)][:limit]
    if not known:
        return {"localisation_samples": 0, "examples": []}
    explanations = explain_split(model, data, known)
    out = localisation(explanations, [list(data.records["vulnerable_lines"].iloc[i]) for i in known])
    checks = [e.completeness for e in explanations if e.completeness]
    out["ig_completeness_held"] = sum(c["holds"] for c in checks) / len(checks) if checks else None
    out["examples"] = [{**e.to_dict(), "code": str(data.records["code"].iloc[i]),  # shown in the model card
                        "vulnerable_lines": [int(x) for x in data.records["vulnerable_lines"].iloc[i]]}
                       for e, i in zip(explanations[:EXAMPLES_KEPT], known)]
    return out


FEATURE_KEYS = ("base_model", "graph_format", "vocabulary", "rules")


def compatible_data(model: Any, data: Any) -> Any:
    """The split as ``model`` must see it: stored features when they were made the
    same way, else the same samples re-featurised with the model's own tokenizer
    and graph settings (so a champion is judged on the identical test samples)."""
    trained_on = model.config.get("dataset", {})
    if all(trained_on.get(k) == data.meta.get(k) for k in FEATURE_KEYS):
        return data
    log.info("re-featurising %d samples for a model trained on %s", len(data),
             {k: trained_on.get(k) for k in FEATURE_KEYS})
    fresh = model.featurize(data.records["code"].tolist())
    fresh.records = data.records.assign(n_nodes=fresh.records["n_nodes"].to_numpy(),
                                        n_tokens=fresh.records["n_tokens"].to_numpy())
    return fresh


def _write_predictions(store: Store, key: str, data: Any, scores: Any, threshold: float) -> None:
    frame = data.records[["id", "label", "pair_id", "cwe"]].assign(prob=scores.prob, pred=scores.labels(threshold))
    if scores.raw is not None:
        frame = frame.assign(prob_raw=scores.raw)
    if scores.anomaly is not None:
        frame = frame.assign(anomaly=scores.anomaly)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    store.write_bytes(key, buf.getvalue())


def read_predictions(store: Store, run: str, model_type: str, name: str) -> Any:
    import pandas as pd

    key = f"{layout.eval_dir(run, model_type)}/{name}-predictions.parquet"
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)), use_threads=False)  # see ingest.parquet_table
