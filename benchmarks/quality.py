"""Honest generalisation numbers: the pipeline's own code path on real fixes it has not seen.

Every experiment is a pipeline run — the same steps the ``streamguard_training`` DAG
runs, with the DAG's defaults (``PipelineConfig()``): ingest, split, preprocess,
train the GNN and the transformer with the local backend (the SageMaker-contract
entrypoint in a subprocess), fit the fusion detector, evaluate each at its own
operating point (chosen on validation, never on test).  Only the split changes:

* **grouped cross-validation** (``--folds``, default 5): ``test_fold = k`` of
  ``test_fraction = 1 / folds``, grouped by repository (a pair, commit or
  repository never straddles two splits);
* **leave one class out**: ``holdout_cwe = C`` for each CWE class in the data —
  train on the other classes (and on the built-in synthetic functions when
  ``synthetic_train`` > 0, none of class C), test on every real function of C.

Scored on the same test functions beside the learned models: the taint rules alone
(a function is flagged when the taint analysis finds a tainted sink) and bandit
(any finding; ``pip install -e '.[bench]'``).  Reported: ROC-AUC, F1 and FPR at each
version's operating point, pair-wise accuracy (vulnerable flagged and its fix not)
and pair ranking (vulnerable scored above its own fix), pooled over the folds and
per class.  ``--ablation`` repeats the cross-validation for ``--ablation-models``
without pair-aware training (no pair batches, no ranking term) and with the ranking
term at ``--ablation-pair-weight``.  The last line is::

    RESULT detector=... auc=... f1=... fpr=... pairwise=... loco_auc=...

for the detector with the best pooled cross-validated ROC-AUC.  The data is
``../shared/datasets/sven-train`` (real Python fixes of CWE-22/78/79/89) unless
``--data`` says otherwise: these figures are about real code, not synthetic data.

Usage: ``.venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/quality.py``
(about 2.5 hours on 2 CPU cores with the transformer; ``--models gnn,fusion`` for minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SVEN = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sven-train"
LEARNED = ("gnn", "transformer", "fusion")
#: bandit's severities as scores (a function's score is the sum over its findings).
SEVERITY = {"HIGH": 3.0, "MEDIUM": 2.0, "LOW": 1.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SVEN), help="a directory (or file) of SVEN-format JSONL")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--models", default="gnn,transformer,fusion",
                   help="learned detectors to run (fusion needs at least one of gnn / transformer)")
    p.add_argument("--no-loco", action="store_true", help="skip leave-one-class-out")
    p.add_argument("--no-bandit", action="store_true")
    p.add_argument("--ablation", action="store_true",
                   help="also run CV without pair-aware training and with the ranking term")
    p.add_argument("--ablation-pair-weight", type=float, default=0.5, help="ranking-term weight of the ablation")
    p.add_argument("--ablation-models", default="gnn", help="models of the ablation (fusion is refitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a PipelineConfig field for every run, e.g. --set gnn_epochs=20")
    p.add_argument("--store", default=None, help="keep the runs here (default: a temporary directory)")
    p.add_argument("--json", default=None, help="also write every number to this file")
    return p.parse_args()


# -- running the pipeline --------------------------------------------------------------------
def base_config(args: argparse.Namespace) -> Any:
    from streamguard_ml.config import PipelineConfig

    values = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: json.loads(v) for k, v in values.items()}
    return dataclasses.replace(PipelineConfig(), sources=(f"sven:{args.data}",), **overrides).validate()


def run(store: Any, name: str, cfg: Any, models: Sequence[str]) -> dict[str, Any]:
    """One pipeline run; returns the test predictions of every detector and the test records."""
    from streamguard_ml.dataset import load_split
    from streamguard_ml.evaluate import evaluate_model, read_predictions
    from streamguard_ml.layout import split_dir
    from streamguard_ml.pipeline import finalize_step, fusion_step, ingest_step, plan_step, train_step
    from streamguard_ml.preprocess import process_shards

    started = time.perf_counter()
    ingest_step(store, name, cfg)
    shards = plan_step(store, name, cfg)
    process_shards(store, name, [(s["split"], s["index"]) for s in shards], cfg)
    dataset = finalize_step(store, name, cfg)
    trained: dict[str, dict] = {}
    for model_type in ("gnn", "transformer"):
        if model_type in models:
            trained[model_type] = train_step(store, name, model_type, cfg, dataset)
    if "fusion" in models:
        trained["fusion"] = fusion_step(store, name, cfg, dataset, list(trained.values()))
    out: dict[str, Any] = {"splits": dataset["splits"]}
    with tempfile.TemporaryDirectory() as tmp:
        for model_type, result in trained.items():
            metrics = evaluate_model(store, name, model_type, result["model_uri"], Path(tmp) / model_type)
            predictions = read_predictions(store, name, model_type, "challenger")
            out[model_type] = predictions.assign(threshold=metrics["threshold"])
            out.setdefault("epochs", {})[model_type] = result.get("epochs_run")
    out["test"] = load_split(store.uri(split_dir(name, "test")))
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def rule_predictions(test: Any, bandit: bool) -> dict[str, Any]:
    """The taint rules alone (tainted sinks per function) and bandit (findings) on the test split."""
    from streamguard_ml.fusion import taint_evidence

    records = test.records[["id", "label", "pair_id", "cwe"]].copy()
    tainted = taint_evidence(test.graphs)[:, 0]
    out = {"taint-rules": records.assign(prob=tainted, pred=(tainted > 0).astype(int), threshold=1.0)}
    if bandit:
        score = run_bandit(test.records["code"].tolist())
        out["bandit"] = records.assign(prob=score, pred=(score > 0).astype(int), threshold=1.0)
    return out


def bandit_findings(codes: Sequence[str]) -> list[list[tuple[int, str, str]]]:
    """bandit's findings per function: (line, test id, severity).  Also used by benchmarks/gnn.py."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, code in enumerate(codes):
            Path(tmp, f"f{i:05d}.py").write_text(code)
        done = subprocess.run([sys.executable, "-m", "bandit", "-r", tmp, "-f", "json", "-q"],
                              capture_output=True, text=True, check=False)
        if not done.stdout.strip():
            raise SystemExit(f"bandit is not installed or failed ({done.stderr.strip()[:300]}): "
                             "pip install -e '.[bench]' (or pass --no-bandit)")
        report = json.loads(done.stdout)
    found: list[list[tuple[int, str, str]]] = [[] for _ in codes]
    for r in report["results"]:
        found[int(Path(r["filename"]).stem[1:])].append((int(r["line_number"]), r["test_id"], r["issue_severity"]))
    return found


def run_bandit(codes: Sequence[str]) -> np.ndarray:
    """bandit's findings per function, as the sum of their severities (0: no finding)."""
    return np.array([sum(SEVERITY.get(sev, 1.0) for _, _, sev in f) for f in bandit_findings(codes)])


# -- scoring ---------------------------------------------------------------------------------
def summarise(frame: Any) -> dict[str, Any]:
    """Metrics of pooled predictions: decisions as each run took them (its own threshold), AUC from scores."""
    from sklearn.metrics import roc_auc_score

    from streamguard_ml.evaluate import pair_ranking, pairwise_accuracy

    y, pred, prob = frame["label"].to_numpy(int), frame["pred"].to_numpy(int), frame["prob"].to_numpy(float)
    tp, fp = int(((pred == 1) & (y == 1)).sum()), int(((pred == 1) & (y == 0)).sum())
    fn, tn = int(((pred == 0) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    pairs = pairwise_accuracy(frame["pair_id"].tolist(), y, pred)
    return {"n": int(len(y)), "roc_auc": float(roc_auc_score(y, prob)) if len(set(y.tolist())) == 2 else None,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision, "recall": recall, "fpr": fp / (fp + tn) if fp + tn else 0.0,
            "pairwise_accuracy": pairs["pairwise_accuracy"], "pairs": pairs["pairs"],
            "pair_ranking": pair_ranking(frame["pair_id"].tolist(), y, prob)}


def per_class(frame: Any) -> dict[str, dict[str, Any]]:
    cwes = frame["cwe"].fillna("unknown")
    return {c: summarise(frame[cwes == c]) for c in sorted(set(cwes))}


def fmt(x: Any) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    keys = ("roc_auc", "f1", "fpr", "precision", "recall", "pairwise_accuracy", "pair_ranking")
    print(f"\n{title}\n{'detector':<14}" + "".join(f"{k[:10]:>11}" for k in keys) + f"{'n':>6}")
    for name, m in rows.items():
        print(f"{name:<14}" + "".join(f"{fmt(m.get(k)):>11}" for k in keys) + f"{m['n']:>6}")


def print_classes(title: str, classes: dict[str, dict[str, dict[str, Any]]], key: str) -> None:
    names = list(classes)
    cwes = sorted({c for per in classes.values() for c in per})
    print(f"\n{title} ({key})\n{'class':<10}" + "".join(f"{n:>14}" for n in names))
    for c in cwes:
        print(f"{c:<10}" + "".join(f"{fmt(classes[n].get(c, {}).get(key)):>14}" for n in names))


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    import pandas as pd

    from streamguard_ml.store import LocalStore

    args = parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} does not exist: pass --data DIR holding SVEN-format *.jsonl files")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(LEARNED)
    if unknown or not models:
        raise SystemExit(f"--models {args.models!r}: choose from {','.join(LEARNED)}")
    cfg = base_config(args)
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="sg-quality-"))
    store = LocalStore(root)
    print(f"data: {args.data} (real code); store: {root}; models: {models}; config: test at each version's "
          f"{cfg.threshold_policy} operating point (max_fpr={cfg.max_fpr}), calibration {cfg.calibration}, "
          f"pair loss {cfg.pair_loss_weight}, synthetic_train {cfg.synthetic_train}", flush=True)
    pooled: dict[str, list] = {}
    fold_rows: list[dict[str, Any]] = []
    for k in range(args.folds):
        fold_cfg = dataclasses.replace(cfg, test_fraction=1 / args.folds, test_fold=k).validate()
        result = run(store, f"cv-{k}", fold_cfg, models)
        result.update(rule_predictions(result["test"], not args.no_bandit))
        for name in [*models, "taint-rules", "bandit"]:
            if name in result:
                pooled.setdefault(name, []).append(result[name].assign(fold=k))
                fold_rows.append({"fold": k, "detector": name, **summarise(result[name])})
        line = "; ".join(f"{r['detector']} auc {fmt(r['roc_auc'])} f1 {fmt(r['f1'])} fpr {fmt(r['fpr'])}"
                         for r in fold_rows if r["fold"] == k)
        print(f"cv fold {k + 1}/{args.folds} ({result['seconds']:.0f}s, splits {result['splits']}, epochs "
              f"{result.get('epochs')}): {line}", flush=True)
    cv = {name: pd.concat(frames, ignore_index=True) for name, frames in pooled.items()}
    cv_metrics = {name: summarise(frame) for name, frame in cv.items()}
    cv_classes = {name: per_class(frame) for name, frame in cv.items()}
    spread = {name: {key: float(np.std([r[key] for r in fold_rows if r["detector"] == name and r[key] is not None]))
                     for key in ("roc_auc", "f1", "fpr", "pairwise_accuracy")} for name in cv}
    print_table(f"{args.folds}-fold grouped CV, pooled out-of-fold predictions (real code: {args.data})", cv_metrics)
    print("  fold-to-fold standard deviation: " + "; ".join(
        f"{n} auc {s['roc_auc']:.3f} f1 {s['f1']:.3f}" for n, s in spread.items()))
    for key in ("roc_auc", "f1", "pairwise_accuracy", "pair_ranking"):
        print_classes("per class, CV", cv_classes, key)

    loco: dict[str, dict[str, dict[str, Any]]] = {}
    if not args.no_loco:
        cwes = sorted({c for c in cv[models[0]]["cwe"].dropna().unique()})
        for cwe in cwes:
            result = run(store, f"loco-{cwe}", dataclasses.replace(cfg, holdout_cwe=cwe).validate(), models)
            result.update(rule_predictions(result["test"], not args.no_bandit))
            loco[cwe] = {name: summarise(result[name]) for name in [*models, "taint-rules", "bandit"]
                         if name in result}
            print(f"loco {cwe} ({result['seconds']:.0f}s, splits {result['splits']}): " + "; ".join(
                f"{n} auc {fmt(m['roc_auc'])} f1 {fmt(m['f1'])}" for n, m in loco[cwe].items()), flush=True)
        names = list(next(iter(loco.values())))
        print_classes("leave one class out: trained without the class, tested on all of it",
                      {n: {c: loco[c][n] for c in loco} for n in names}, "roc_auc")
        means = {n: float(np.mean([loco[c][n]["roc_auc"] for c in loco])) for n in names}
        print("  mean ROC-AUC over held-out classes: " + "; ".join(f"{n} {v:.3f}" for n, v in means.items()))

    ablation: dict[str, Any] = {}
    if args.ablation:
        ablation = run_ablation(store, cfg, args, cv_metrics)

    best = max(models, key=lambda n: cv_metrics[n]["roc_auc"] or 0)
    ahead = {c: (cv_classes[best][c]["f1"] > cv_classes["bandit"][c]["f1"]) for c in cv_classes.get("bandit", {})}
    if ahead:
        print(f"\n{best} ahead of bandit on F1 in every class: {all(ahead.values())} ({ahead})")
    loco_auc = float(np.mean([loco[c][best]["roc_auc"] for c in loco])) if loco else float("nan")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": args.data, "config": cfg.to_dict(), "cv": cv_metrics, "cv_per_class": cv_classes,
            "cv_folds": fold_rows, "cv_spread": spread, "loco": loco, "ablation": ablation, "best": best},
            indent=2, default=str))
    m = cv_metrics[best]
    print(f"RESULT detector={best} auc={m['roc_auc']:.3f} f1={m['f1']:.3f} fpr={m['fpr']:.3f} "
          f"pairwise={m['pairwise_accuracy']:.3f} loco_auc={loco_auc:.3f}")


def run_ablation(store: Any, cfg: Any, args: argparse.Namespace, default: dict[str, Any]) -> dict[str, Any]:
    """Cross-validation without pair-aware training, and with the ranking term at ``--ablation-pair-weight``."""
    models = [m.strip() for m in args.ablation_models.split(",") if m.strip()]
    weight = args.ablation_pair_weight
    variants = {
        "no pairs": dataclasses.replace(cfg, pair_batches=False, pair_loss_weight=0.0),
        f"pairs + ranking {weight:g}": dataclasses.replace(cfg, pair_batches=True, pair_loss_weight=weight),
    }
    label = ("no pairs" if not cfg.pair_batches else
             f"pairs + ranking {cfg.pair_loss_weight:g}" if cfg.pair_loss_weight else "pair batches")
    rows = {f"{n} ({label}, default)": default[n] for n in models}
    out: dict[str, Any] = {"default": {n: default[n] for n in models}}
    for name, variant in variants.items():
        if variant == cfg:  # the default already is this variant: its CV is the one measured above
            continue
        measured = cross_validate_variant(store, variant, args, models, name)
        rows.update({f"{n} ({name})": m for n, m in measured.items()})
        out[name] = measured
    print_table("ablation: pair-aware training (CV, pooled)", rows)
    return out


def cross_validate_variant(store: Any, cfg: Any, args: argparse.Namespace, models: list[str], name: str) -> dict[str, Any]:
    import pandas as pd

    frames: dict[str, list] = {}
    tag = name.replace(" ", "-").replace("+", "").replace(".", "")
    for k in range(args.folds):
        fold_cfg = dataclasses.replace(cfg, test_fraction=1 / args.folds, test_fold=k).validate()
        result = run(store, f"cv-{k}-{tag}", fold_cfg, models)
        for m in models:
            frames.setdefault(m, []).append(result[m])
    return {m: summarise(pd.concat(f, ignore_index=True)) for m, f in frames.items()}


if __name__ == "__main__":
    main()
