"""Model cards: what a registered version is, how well it does and where it fails.

One card per registry version, written at registration from the evaluation's
test-split predictions, the training summary, the dataset card and the
explanation examples: ``model_card.json`` for tools, ``model_card.md`` for
people, and PNGs (confusion matrix, ROC and precision-recall curves with the
version's operating point marked, a reliability diagram before and after
calibration, training curves) beside them.  Intervals are 95 %: Wilson score intervals for the
metrics that are proportions of a known count (accuracy, precision, recall,
false-positive rate, pair-wise accuracy) and a seeded percentile bootstrap
over test samples for F1 and ROC-AUC, which are not.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np

from . import layout
from .config import MODEL_TYPE_OF
from .store import Store, json_bytes

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
FIGURES = {"confusion_matrix": "confusion_matrix.png", "roc": "roc_curve.png", "pr": "pr_curve.png",
           "reliability": "reliability.png", "training": "training_curves.png"}


# -- intervals -------------------------------------------------------------------
def wilson(successes: int, total: int, level: float = LEVEL) -> list[float] | None:
    from scipy.stats import binomtest

    if total <= 0:
        return None
    ci = binomtest(int(successes), int(total)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum((y == 1) & (pred == 1)))
    denom = float(np.sum(y == 1) + np.sum(pred == 1))
    return 2 * tp / denom if denom else 0.0


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count one half)."""
    from scipy.stats import rankdata

    pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(prob)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bootstrap(y: np.ndarray, prob: np.ndarray, threshold: float, level: float = LEVEL,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, list[float] | None]:
    """Percentile intervals for F1 and ROC-AUC (resamples with one class only are skipped)."""
    rng = np.random.default_rng(seed)
    pred = (prob >= threshold).astype(int)
    f1s, aucs = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        f1s.append(_f1(y[idx], pred[idx]))
        aucs.append(_auc(y[idx], prob[idx]))
    tail = (1 - level) / 2 * 100

    def interval(values: list[float]) -> list[float] | None:
        arr = np.asarray(values)[~np.isnan(values)]
        return [float(np.percentile(arr, tail)), float(np.percentile(arr, 100 - tail))] if arr.size else None

    return {"f1": interval(f1s), "roc_auc": interval(aucs)}


def metrics_with_intervals(metrics: dict[str, Any], predictions: Any | None) -> dict[str, dict[str, Any]]:
    """``{metric: {"value", "ci", "method"}}`` for the headline metrics."""
    m = metrics
    tp, fp, tn, fn = (int(m.get(k, 0)) for k in ("tp", "fp", "tn", "fn"))
    out: dict[str, dict[str, Any]] = {
        "accuracy": {"value": m.get("accuracy"), "ci": wilson(tp + tn, tp + fp + tn + fn), "method": "wilson"},
        "precision": {"value": m.get("precision"), "ci": wilson(tp, tp + fp), "method": "wilson"},
        "recall": {"value": m.get("recall"), "ci": wilson(tp, tp + fn), "method": "wilson"},
        "fpr": {"value": m.get("fpr"), "ci": wilson(fp, fp + tn), "method": "wilson"},
        "f1": {"value": m.get("f1"), "ci": None, "method": "bootstrap"},
        "roc_auc": {"value": m.get("roc_auc"), "ci": None, "method": "bootstrap"},
    }
    if m.get("pairs"):
        out["pairwise_accuracy"] = {"value": m.get("pairwise_accuracy"),
                                    "ci": wilson(int(m.get("pairs_correct", 0)), int(m["pairs"])), "method": "wilson"}
    if predictions is not None and len(predictions):
        boot = bootstrap(predictions["label"].to_numpy(int), predictions["prob"].to_numpy(float),
                         float(m.get("threshold", 0.5)))
        out["f1"]["ci"], out["roc_auc"]["ci"] = boot["f1"], boot["roc_auc"]
    return out


# -- figures ---------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def figures(predictions: Any | None, history: list[dict[str, Any]], title: str,
            threshold: float | None = None) -> dict[str, bytes]:
    """PNG bytes by figure name (only those the inputs allow); ``threshold`` is marked on the curves."""
    if (predictions is None or not len(predictions)) and not history:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    out: dict[str, bytes] = {}
    if predictions is not None and len(predictions):
        y, prob, pred = (predictions[c].to_numpy() for c in ("label", "prob", "pred"))
        fig, ax = plt.subplots(figsize=(4, 4))
        ConfusionMatrixDisplay.from_predictions(y, pred, labels=[0, 1], display_labels=["safe", "vulnerable"],
                                                ax=ax, colorbar=False)
        ax.set_title(f"{title}: confusion matrix")
        out["confusion_matrix"] = _png(fig)
        if len(set(y.tolist())) == 2:
            out.update(_curves(y, prob, pred, title, threshold))
            raw = predictions["prob_raw"].to_numpy() if "prob_raw" in predictions else None
            out["reliability"] = _reliability(y, prob, raw, title)
    if history:
        out["training"] = _training_figure(history)
    return out


def _curves(y: np.ndarray, prob: np.ndarray, pred: np.ndarray, title: str, threshold: float | None) -> dict[str, bytes]:
    """ROC and precision-recall curves (test split) with the operating point as a marker."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    tp, fp = int(((pred == 1) & (y == 1)).sum()), int(((pred == 1) & (y == 0)).sum())
    recall = tp / max(1, int((y == 1).sum()))
    fpr = fp / max(1, int((y == 0).sum()))
    precision = tp / (tp + fp) if tp + fp else 1.0
    label = f"threshold {threshold:.3f}" if threshold is not None else "operating point"
    out = {}
    for name, display, point in (("roc", RocCurveDisplay, (fpr, recall)), ("pr", PrecisionRecallDisplay,
                                                                          (recall, precision))):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        display.from_predictions(y, prob, ax=ax, name=title)
        ax.plot(*point, marker="o", color="crimson", linestyle="none", label=label)
        ax.legend(loc="lower right" if name == "roc" else "lower left", fontsize=8)
        ax.set_title(f"{title}: {'ROC' if name == 'roc' else 'precision-recall'} (test split)")
        out[name] = _png(fig)
    return out


def _reliability(y: np.ndarray, prob: np.ndarray, raw: np.ndarray | None, title: str) -> bytes:
    """Observed vulnerable rate per score bin, raw (before) and calibrated (after)."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay

    from .calibration import ECE_BINS

    fig, ax = plt.subplots(figsize=(4.5, 4))
    if raw is not None:
        CalibrationDisplay.from_predictions(y, raw, n_bins=ECE_BINS, ax=ax, name="raw (before)")
    CalibrationDisplay.from_predictions(y, prob, n_bins=ECE_BINS, ax=ax, name="calibrated (after)")
    ax.set_title(f"{title}: reliability (test split)")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _training_figure(history: list[dict[str, Any]]) -> bytes:
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    left.plot(epochs, [h["loss"] for h in history], marker="o", label="training loss")
    if all(h.get("val_loss") is not None for h in history):
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation loss")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend(loc="upper right", fontsize=8)
    for key, label in (("train_acc", "train accuracy"), ("val_acc", "validation accuracy"),
                       ("val_f1", "validation F1"), ("val_auc", "validation AUC")):
        if all(h.get(key) is not None for h in history):
            right.plot(epochs, [h[key] for h in history], marker="o", label=label)
    right.set(xlabel="epoch", ylim=(0, 1.02), title="accuracy / F1 / AUC")
    right.legend(loc="lower right", fontsize=8)
    return _png(fig)


# -- the card ------------------------------------------------------------------
def known_limits(card: dict[str, Any]) -> list[str]:
    """Honest, data-driven caveats (plus the ones every version shares)."""
    limits = ["Python functions only: graphs and taint marks come from tree-sitter-python and the rules in "
              "data/taint_rules.json; other languages are not supported."]
    point = card.get("operating_point") or {}
    if point.get("policy") in (None, "fixed"):
        limits.append(f"The decision threshold is {card['metrics'].get('threshold', 0.5)}, not chosen on "
                      "validation: retrain to give this version an operating point.")
    elif point.get("note"):
        limits.append(f"Operating point: {point['note']}.")
    provenance = card.get("test_data") or {}
    if card["lineage"].get("smoke"):
        limits.insert(0, "SMOKE RUN: trained on shrunk data for a few epochs to check the pipeline; this version "
                         "can never be promoted or deployed.")
    seen = provenance.get("seen_in_training") or {}
    if seen.get("samples"):
        limits.append(f"{seen['samples']} of {seen['of']} test functions were in this model's training or "
                      "validation data: the test figures are optimistic.")
    sources = card["lineage"].get("sources") or []
    if provenance.get("synthetic_only") or (sources and all(str(s).startswith("synthetic:") for s in sources)):
        limits.append("Trained and tested on built-in synthetic functions only: these figures do not measure "
                      "quality on real code; expect much lower accuracy there.")
    m_fpr, budget = card["metrics"].get("fpr"), point.get("max_fpr")
    if isinstance(m_fpr, float) and isinstance(budget, float) and m_fpr > budget + 0.05:
        limits.append(f"The test FPR ({m_fpr:.3f}) is well above the validation budget ({budget}) the threshold "
                      "was chosen for: the validation split is small or unlike the test split.")
    acc = card["metrics_ci"].get("accuracy", {})
    n = card["metrics"].get("n")
    if acc.get("ci") and n:
        width = (acc["ci"][1] - acc["ci"][0]) * 50
        limits.append(f"The test split has {n} samples: accuracy is known to about ±{width:.1f} points (95 %).")
    m = card["metrics"]
    if isinstance(m.get("pairwise_accuracy"), float) and m["pairwise_accuracy"] < m.get("accuracy", 0) - 0.05:
        limits.append(f"Pair-wise accuracy ({m['pairwise_accuracy']:.3f}) trails accuracy ({m['accuracy']:.3f}): "
                      "the model often flags the fixed version of a vulnerable function too.")
    for cwe, pc in sorted((m.get("per_cwe") or {}).items()):
        if pc.get("n", 0) < 30:
            limits.append(f"{cwe}: only {pc.get('n')} test samples; its metrics are not reliable.")
        elif pc.get("f1", 1) < m.get("f1", 0) - 0.1:
            limits.append(f"{cwe}: F1 {pc['f1']:.3f}, well below the overall {m.get('f1', 0):.3f}.")
    if isinstance(m.get("ig_completeness_held"), float) and m["ig_completeness_held"] < 1:
        limits.append(f"Integrated-Gradients completeness held for {m['ig_completeness_held']:.0%} of explained "
                      "samples; the other explanations are approximate.")
    if card["model_type"] == "transformer":
        limits.append("Long functions are scored over overlapping token windows; context across windows is "
                      "only combined at the pooling step.")
    if card["model_type"] == "fusion":
        n = card["training"].get("val_samples")
        fitted_on = f"the {n} validation functions" if n else "the validation functions"
        limits.append(f"The fusion detector's weights were fitted on {fitted_on} and its threshold "
                      "chosen on their out-of-fold scores: it inherits what its members miss, and the taint "
                      "evidence only knows the APIs in data/taint_rules.json.")
    if not card["figures"].get("roc"):
        limits.append("No evaluation predictions were available (registered by hand?): curves are missing.")
    return limits


def build_card(mv: Any, predictions: Any | None = None, training: dict[str, Any] | None = None,
               dataset_card: dict[str, Any] | None = None, explanations: list[dict] | None = None,
               figure_names: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON model card of a :class:`~streamguard_ml.registry.ModelVersion`."""
    training = training or {}
    data = dataset_card or {}
    metrics = mv.metrics or {}
    card: dict[str, Any] = {
        "model": mv.model, "version": mv.version,
        "model_type": training.get("model_type") or MODEL_TYPE_OF.get(mv.model, "unknown"),
        "created_at": mv.created_at, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact_uri": mv.artifact_uri, "lineage": mv.lineage, "params": mv.params,
        "data": {k: data.get(k) for k in ("run", "content_hash", "samples", "augmented", "pairs", "per_split",
                                           "base_model", "graph_format", "vocabulary", "rules") if k in data}
        | ({"quarantined": data["quarantine"]["total"]} if "quarantine" in data else {}),
        "metrics": metrics,
        "metrics_ci": metrics_with_intervals(metrics, predictions),
        "confusion_matrix": {k: metrics.get(k) for k in ("tp", "fp", "tn", "fn")},
        "operating_point": getattr(mv, "operating_point", None) or metrics.get("operating_point"),
        "at_0.5": metrics.get("at_0.5"),
        "calibration": {"test": metrics.get("calibration"), "validation": training.get("validation_calibration")},
        "test_data": metrics.get("test_data"),
        "training": {"epochs": len(training.get("history", [])), "history": training.get("history", []),
                     "validation": training.get("validation", {}), "train_samples": training.get("train_samples"),
                     "val_samples": training.get("val_samples")},
        "decision": mv.decision,
        "explanations": explanations or [],
        "figures": figure_names or {},
    }
    card["known_limits"] = known_limits(card)
    return card


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def _operating_point_lines(card: dict[str, Any]) -> list[str]:
    point = card.get("operating_point") or {}
    if not point:
        return []
    val = point.get("validation") or {}
    policy = point.get("policy")
    rule = (f"the highest validation recall with a false-positive rate within {point.get('max_fpr')}"
            if policy == "max_fpr" else "the best validation F1" if policy == "max_f1" else "fixed")
    out = ["", "## Operating point", "",
           f"- Threshold **{_fmt(point.get('threshold'))}** on the calibrated score, policy `{policy}` ({rule}), "
           "chosen on the validation split; `predict`, evaluation, the gate and the endpoint use it "
           "unless `--threshold` overrides it."]
    if val:
        out.append(f"- On validation ({val.get('n')} functions): recall {_fmt(val.get('recall'))}, precision "
                   f"{_fmt(val.get('precision'))}, FPR {_fmt(val.get('fpr'))}, F1 {_fmt(val.get('f1'))}")
    if point.get("note"):
        out.append(f"- Note: {point['note']}")
    return out


def _calibration_lines(card: dict[str, Any]) -> list[str]:
    calibration = card.get("calibration") or {}
    rows = [(split, c) for split, c in (("validation", calibration.get("validation")),
                                        ("test", calibration.get("test"))) if c]
    if not rows:
        return []
    out = ["", f"## Calibration (`{rows[0][1].get('method')}`, fitted on validation)", "",
           "| split | Brier before | Brier after | ECE before | ECE after |", "|---|---|---|---|---|"]
    out += [f"| {split} | {_fmt(c.get('brier_before'))} | {_fmt(c.get('brier_after'))} | "
            f"{_fmt(c.get('ece_before'))} | {_fmt(c.get('ece_after'))} |" for split, c in rows]
    return out


def render_markdown(card: dict[str, Any]) -> str:
    lin, data = card["lineage"], card["data"]
    lines = [f"# Model card — {card['model']} v{card['version']}", "",
             *(["", "> **Smoke run** — a pipeline check on shrunk data; never promoted or deployed.", ""]
               if lin.get("smoke") else []),
             f"- Model type: `{card['model_type']}`; registered {card['created_at']}",
             f"- Artifact: `{card['artifact_uri']}`",
             f"- Code version `{lin.get('code_version')}`, training backend `{lin.get('training_backend')}`, "
             f"job `{lin.get('job_name')}`, base model `{lin.get('base_model')}`", "",
             "## Data", "",
             f"- Run `{data.get('run', lin.get('run'))}`, content hash `{data.get('content_hash', lin.get('data_content_hash'))}`",
             f"- Split manifest: `{lin.get('split_manifest')}`; dataset card: `{lin.get('dataset_card')}`"]
    if data.get("samples") is not None:
        lines.append(f"- {data['samples']} samples ({data.get('augmented', 0)} augmented), {data.get('pairs', 0)} "
                     f"vulnerable/fixed pairs, {data.get('quarantined', 0)} inputs quarantined")
        lines += [f"- {s}: {v['total']} samples, {v['vulnerable']} vulnerable"
                  for s, v in (data.get("per_split") or {}).items()]
    test = card.get("test_data") or {}
    if test.get("content_hash"):
        lines.append(f"- Evaluated on test data `{test['content_hash'][:12]}` ({test.get('samples')} functions): "
                     "figures compare only with versions evaluated on the same data")
    if test.get("statement"):
        lines += ["", f"**{test['statement']}**"]
    lines += _operating_point_lines(card)
    at_half = card.get("at_0.5") or {}
    lines += ["", f"## Metrics on the test split at threshold {_fmt(card['metrics'].get('threshold'))} "
              "(95 % intervals)", "", "| metric | value | interval | method | at 0.5 |", "|---|---|---|---|---|"]
    for name, m in card["metrics_ci"].items():
        ci = f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]" if m.get("ci") else "–"
        lines.append(f"| {name} | {_fmt(m['value'])} | {ci} | {m['method']} | {_fmt(at_half.get(name))} |")
    if card["metrics"].get("pair_ranking") is not None:
        lines.append(f"| pair_ranking | {_fmt(card['metrics']['pair_ranking'])} | – | vulnerable scored above its "
                     "fix | – |")
    lines += _calibration_lines(card)
    cm = card["confusion_matrix"]
    lines += ["", "## Confusion matrix", "", "| | predicted safe | predicted vulnerable |", "|---|---|---|",
              f"| actually safe | {cm.get('tn')} | {cm.get('fp')} |",
              f"| actually vulnerable | {cm.get('fn')} | {cm.get('tp')} |", ""]
    captions = {"confusion_matrix": "Confusion matrix", "roc": "ROC curve", "pr": "Precision-recall curve",
                "reliability": "Reliability diagram", "training": "Training curves"}
    lines += [f"![{captions[k]}]({name})" for k, name in card["figures"].items()]
    per_cwe = card["metrics"].get("per_cwe") or {}
    if per_cwe:
        lines += ["", "## Per CWE", "", "| CWE | n | F1 | FPR | recall | ROC-AUC | pair-wise | pair ranking |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c} | {v.get('n')} | {_fmt(v.get('f1'))} | {_fmt(v.get('fpr'))} | {_fmt(v.get('recall'))} | "
                  f"{_fmt(v.get('roc_auc'))} | {_fmt(v.get('pairwise_accuracy'))} | {_fmt(v.get('pair_ranking'))} |"
                  for c, v in sorted(per_cwe.items())]
    hist = card["training"]["history"]
    if hist:
        lines += ["", "## Training", "", "| epoch | loss | train acc | val acc | val F1 | val AUC | val loss |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {h['epoch']} | {_fmt(h.get('loss'))} | {_fmt(h.get('train_acc'))} | {_fmt(h.get('val_acc'))} | "
                  f"{_fmt(h.get('val_f1'))} | {_fmt(h.get('val_auc'))} | {_fmt(h.get('val_loss'))} |" for h in hist]
    decision = card.get("decision")
    if decision:
        lines += ["", f"## Promotion gate: {'promote' if decision.get('promote') else 'keep as challenger'} "
                  f"({decision.get('kind')})", ""] + [f"- {r}" for r in decision.get("reasons", [])]
    if card["explanations"]:
        lines += ["", "## Explanation examples (Integrated Gradients)", ""]
        for ex in card["explanations"][:3]:
            top = [ln["line"] for ln in ex["lines"][:3]]
            lines += [f"Sample `{ex['id']}`: score {ex['score']:.3f}; top lines {top}; lines the fix changed "
                      f"{ex.get('vulnerable_lines')}", "", "```python"]
            lines += [f"{'>>' if i in top else '  '} {i:3d} {text}" for i, text in
                      enumerate(ex.get("code", "").splitlines(), 1)]
            lines += ["```", ""]
    lines += ["", "## Known limits", ""] + [f"- {limit}" for limit in card["known_limits"]]
    return "\n".join(lines) + "\n"


# -- inputs and output ---------------------------------------------------------------
def run_inputs(store: Store, run: str, model_type: str) -> dict[str, Any]:
    """What a training run left for the card: predictions, training summary, dataset card, explanations."""
    from .evaluate import read_predictions

    eval_dir, model_dir = layout.eval_dir(run, model_type), layout.model_dir(run, model_type)
    found: dict[str, Any] = {}
    if store.exists(f"{eval_dir}/challenger-predictions.parquet"):
        found["predictions"] = read_predictions(store, run, model_type, "challenger")
    for name, key in (("training", f"{model_dir}/training.json"), ("dataset_card", layout.dataset_card(run, "json")),
                      ("explanations", f"{eval_dir}/challenger-explanations.json")):
        if store.exists(key):
            found[name] = store.read_json(key)
    return found


def write_model_card(store: Store, prefix: str, mv: Any, **inputs: Any) -> dict[str, str]:
    """Write the card and its figures under ``prefix``; returns their URIs (idempotent)."""
    training = inputs.get("training") or {}
    pngs = figures(inputs.get("predictions"), training.get("history", []), f"{mv.model} v{mv.version}",
                   (mv.metrics or {}).get("threshold"))
    for name, data in pngs.items():
        store.write_bytes(f"{prefix}/{FIGURES[name]}", data)
    card = build_card(mv, figure_names={k: FIGURES[k] for k in pngs}, **inputs)
    card_json = json.loads(json_bytes(card))
    store.write_bytes(f"{prefix}/model_card.json", json_bytes(card_json))
    store.write_bytes(f"{prefix}/model_card.md", render_markdown(card_json).encode())
    return {"json": store.uri(f"{prefix}/model_card.json"), "markdown": store.uri(f"{prefix}/model_card.md"),
            **{name: store.uri(f"{prefix}/{FIGURES[name]}") for name in pngs}}
