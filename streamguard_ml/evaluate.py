"""Metrics on a test split: the usual classification metrics, false-positive rate,
ROC-AUC, pair-wise accuracy on vulnerable/fixed pairs and per-CWE breakdowns.

Pair-wise accuracy is the metric that matters for a scanner: a pair counts as
correct only if the vulnerable version is flagged *and* its fix is not.  A model
that flags every ``cursor.execute`` gets high recall and zero pair-wise accuracy.
"""

from __future__ import annotations

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


def pairwise_accuracy(pair_ids: Sequence[Any], labels: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    """Share of complete pairs whose vulnerable member is flagged and whose fix is not."""
    members: dict[str, dict[int, list[int]]] = {}
    for pid, y, yhat in zip(pair_ids, labels, pred):
        if pid is None or (isinstance(pid, float) and np.isnan(pid)):
            continue
        members.setdefault(str(pid), {0: [], 1: []})[int(y)].append(int(yhat))
    complete = {k: v for k, v in members.items() if v[0] and v[1]}
    correct = sum(1 for v in complete.values() if all(v[1]) and not any(v[0]))
    return {"pairwise_accuracy": correct / len(complete) if complete else None, "pairs": len(complete),
            "pairs_correct": correct}


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
        out[cwe] = {"f1": m["f1"], "fpr": m["fpr"], "recall": m["recall"], "n": m["n"], **pw}
    return out


def full_metrics(records: Any, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    labels = records["label"].to_numpy()
    metrics = classification_metrics(labels, prob, threshold)
    metrics.update(pairwise_accuracy(records["pair_id"].tolist(), labels, (prob >= threshold).astype(int)))
    metrics["per_cwe"] = per_cwe_metrics(records, prob, threshold)
    return metrics


def evaluate_model(store: Store, run: str, model_type: str, model_uri: str, workdir: Path,
                   split: str = "test", name: str = "challenger", explain_samples: int = 0) -> dict[str, Any]:
    """Score ``model_uri`` on the run's split; writes metrics and predictions under ``eval/``.

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
    metrics = full_metrics(data.records, scores.prob)
    if scores.anomaly is not None:
        from .models.transformer import ANOMALY_THRESHOLD

        metrics["anomaly_mean"] = float(np.mean(scores.anomaly))
        metrics["anomalous_share"] = float(np.mean(scores.anomaly >= ANOMALY_THRESHOLD))  # ≈1 % when in-distribution
    if explain_samples:
        explained = explanation_metrics(model, data, explain_samples)
        store.write_json(f"{layout.eval_dir(run, model_type)}/{name}-explanations.json", explained.pop("examples"))
        metrics.update(explained)
    if name == "challenger":
        from .drift import reference_profile

        store.write_json(f"{layout.eval_dir(run, model_type)}/reference.json",
                         reference_profile(data.records["code"], scores.prob, data.graphs["node_type"]))
    _write_predictions(store, f"{layout.eval_dir(run, model_type)}/{name}-predictions.parquet", data, scores)
    store.write_json(f"{layout.eval_dir(run, model_type)}/{name}-metrics.json", metrics)
    log.info("%s %s on %s/%s: acc=%.3f f1=%.3f fpr=%.3f pairwise=%s", name, model_type, run, split,
             metrics["accuracy"], metrics["f1"], metrics["fpr"],
             "n/a" if metrics["pairwise_accuracy"] is None else f"{metrics['pairwise_accuracy']:.3f}")
    return metrics


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


def _write_predictions(store: Store, key: str, data: Any, scores: Any) -> None:
    frame = data.records[["id", "label", "pair_id", "cwe"]].assign(prob=scores.prob, pred=scores.labels())
    if scores.anomaly is not None:
        frame = frame.assign(anomaly=scores.anomaly)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    store.write_bytes(key, buf.getvalue())


def read_predictions(store: Store, run: str, model_type: str, name: str) -> Any:
    import pandas as pd

    key = f"{layout.eval_dir(run, model_type)}/{name}-predictions.parquet"
    return pd.read_parquet(io.BytesIO(store.read_bytes(key)), use_threads=False)  # see ingest.parquet_table
