"""Taint-Flow GNN on real fixes: full taint graph vs AST-only graph vs bandit, at a fixed 0.5 threshold.

On the SVEN training pairs (``/work/shared/datasets/sven-train``: vulnerable
Python functions and their real fixes) with grouped, CWE-stratified K-fold
cross-validation — the pipeline's own leakage groups, so a pair, commit or
repository never straddles train and test — this trains
the GNN twice per fold, on

* ``full``: AST + control-flow + data-flow + call edges, rule marks and the taint
  analysis's ``tainted`` / ``tainted_sink`` marks (what the pipeline trains);
* ``ast``: the same nodes with AST edges only and no marks (the seed's view);

and scores, on the same held-out folds,

* ``taint-rules``: the graph builder's own verdict without learning — a function
  is flagged when a sink receives tainted data (``tainted_sink``);
* ``bandit``: the static analyser users run today (any finding flags the function).

This is the graph ablation (does the taint graph earn its place over the AST?) at a
fixed 0.5 threshold on raw scores; ``benchmarks/quality.py`` is the benchmark of what the
pipeline ships (operating points, calibration, the fusion detector, unseen classes).

Reported from out-of-fold predictions: F1, false-positive rate, pair-wise accuracy
(vulnerable flagged AND its fix not), per-CWE F1 / pair-wise; line localisation
(top-1 / top-3 lines hit a line the fix deleted) from Integrated Gradients and
from attention for the full model, and from bandit's reported lines; training and
inference graphs/s on this CPU; model size.  The last line is::

    RESULT full_f1=.. full_pairwise=.. ast_f1=.. ast_pairwise=.. bandit_f1=.. bandit_pairwise=.. ...

Usage: ``.venv/bin/pip install -e '.[bench]' && .venv/bin/python benchmarks/gnn.py [--folds 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SVEN = Path("/work/shared/datasets/sven-train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SVEN), help="a directory of SVEN-format JSONL files")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--explain", type=int, default=15, help="vulnerable test samples explained per fold (IG)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", default=None, help="also write every number to this file")
    return p.parse_args()


# -- data ----------------------------------------------------------------------------
def load_samples(data: str) -> list[Any]:
    """SVEN pairs through the pipeline's own connector, validation and de-duplication."""
    from streamguard_ml.config import QualityLimits
    from streamguard_ml.ingest import collect
    from streamguard_ml.quality import deduplicate

    if not Path(data).is_dir():
        raise SystemExit(f"{data} is not a directory: pass --data DIR holding SVEN-format *.jsonl files")
    samples, rejected, _, _ = collect([f"sven:{data}"], QualityLimits())
    samples, dropped, _ = deduplicate(samples)
    print(f"data: {data}: {len(samples)} functions, {len(rejected) + len(dropped)} rejected or duplicate")
    return samples


def folds(samples: Sequence[Any], groups: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """Test indices per fold: grouped as the pipeline's splits are (pair ∪ commit ∪ repository),
    stratified by label × CWE."""
    from sklearn.model_selection import StratifiedGroupKFold

    from streamguard_ml.splits import strata

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(samples)), strata(samples), groups)]


def split_data(samples: Sequence[Any], graphs: Sequence[Any], idx: Sequence[int]) -> Any:
    import pandas as pd

    from streamguard_ml.dataset import SplitData, pack_graphs

    rows = [samples[i] for i in idx]
    records = pd.DataFrame({"id": [s.id for s in rows], "label": [s.label for s in rows],
                            "code": [s.code for s in rows], "cwe": [s.cwe for s in rows],
                            "pair_id": [s.pair_id for s in rows],
                            "vulnerable_lines": [s.vulnerable_lines for s in rows],
                            "n_nodes": [graphs[i].num_nodes for i in idx]})
    return SplitData(records, pack_graphs([graphs[i] for i in idx]), {}, {})


def validation_part(groups: Sequence[str], train_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grouped 15 % of the training fold for early stopping."""
    from sklearn.model_selection import GroupShuffleSplit

    fit_part, val_part = next(GroupShuffleSplit(1, test_size=0.15, random_state=seed).split(
        train_idx, groups=[groups[i] for i in train_idx]))
    return train_idx[fit_part], train_idx[val_part]


# -- the GNN -----------------------------------------------------------------------------
def train_gnn(train: Any, val: Any, args: argparse.Namespace) -> Any:
    from streamguard_ml.graphs import vocabulary
    from streamguard_ml.kinds import GNNKind
    from streamguard_ml.train import apply_defaults, build_parser, fit, seed_everything

    targs = apply_defaults(build_parser().parse_args([
        "--model-type", "gnn", "--epochs", str(args.epochs), "--patience", str(args.patience),
        "--hidden", str(args.hidden), "--layers", str(args.layers), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--seed", str(args.seed), "--dropout", "0.2"]))
    targs.checkpoint_dir = None
    seed_everything(args.seed)
    kind = GNNKind()
    model = kind.build({"vocabulary_size": vocabulary()["size"]}, vars(targs))
    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # one line per epoch × folds × variants is noise here
        fit(kind, model, train, val, targs, torch.device("cpu"))
    return kind, model


def train_graphs_per_second(kind: Any, model: Any, data: Any, batch_size: int) -> float:
    """One training epoch over ``data`` with the library's own step (fused AdamW, schedule,
    clipping), on a copy so the model that was scored and explained stays as it is."""
    import copy

    import torch

    from streamguard_ml.train import adamw, optimizer_step, warmup_linear

    model = copy.deepcopy(model).train()
    optimizer = adamw(model, 1e-5, 0.01)
    scheduler = warmup_linear(optimizer, 0, max(1, -(-len(data) // batch_size)))
    started = time.perf_counter()
    for batch in kind.batches(data, batch_size, shuffle=True, seed=0):
        logits, _ = kind.forward(model, batch)
        torch.nn.functional.cross_entropy(logits, batch.labels).backward()
        optimizer_step(model, optimizer, scheduler, 1.0)
    return len(data) / (time.perf_counter() - started)


def model_size(model: Any) -> dict[str, Any]:
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, f"{tmp}/m.safetensors")
        size = Path(f"{tmp}/m.safetensors").stat().st_size
    return {"parameters": sum(p.numel() for p in model.parameters()), "safetensors_bytes": size}


def explain_lines(kind: Any, model: Any, test: Any, limit: int) -> dict[str, list[list[int]]]:
    """Top lines by IG and by attention for the first ``limit`` vulnerable samples with known lines."""
    from types import SimpleNamespace

    from streamguard_ml.calibration import Calibrator
    from streamguard_ml.explain import explain_split

    known = [i for i, (y, lines) in enumerate(zip(test.records["label"], test.records["vulnerable_lines"]))
             if y == 1 and len(lines)][:limit]
    # what explain_split reads of a LoadedModel (raw scores, threshold 0.5: this benchmark compares graphs)
    loaded = SimpleNamespace(model=model, kind=kind, model_type="gnn", calibrator=Calibrator(), threshold=0.5)
    out: dict[str, list] = {"truth": [list(test.records["vulnerable_lines"].iloc[i]) for i in known]}
    for method in ("ig", "attention"):
        out[method] = [e.top_lines(3) for e in explain_split(loaded, test, known, method=method)]
    return out


# -- bandit --------------------------------------------------------------------------------
def run_bandit(samples: Sequence[Any]) -> list[list[tuple[int, str]]]:
    """Bandit's findings per function: (line, test id), most severe first."""
    from quality import bandit_findings  # benchmarks/ is on sys.path when this script runs

    rank = {"HIGH": 0, "MEDIUM": 1, "LOW": 2, "UNDEFINED": 3}
    return [[(line, test) for line, test, _ in sorted(f, key=lambda x: (rank.get(x[2], 3), x[0]))]
            for f in bandit_findings([s.code for s in samples])]


# -- scoring ---------------------------------------------------------------------------------
def scores(samples: Sequence[Any], idx: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    import pandas as pd

    from streamguard_ml.evaluate import full_metrics

    rows = [samples[i] for i in idx]
    records = pd.DataFrame({"label": [s.label for s in rows], "cwe": [s.cwe for s in rows],
                            "pair_id": [s.pair_id for s in rows]})
    return full_metrics(records, prob)


def hit_rate(top: Sequence[Sequence[int]], truth: Sequence[Sequence[int]], k: int) -> float | None:
    pairs = [(set(t[:k]), set(g)) for t, g in zip(top, truth) if g]
    return sum(1 for t, g in pairs if t & g) / len(pairs) if pairs else None


def table(rows: dict[str, dict[str, Any]], cwes: Sequence[str]) -> str:
    def f(x: Any) -> str:
        return "  -  " if x is None else f"{x:.3f}"

    head = f"{'model':<12} {'F1':>6} {'FPR':>6} {'pairwise':>8} {'prec':>6} {'recall':>6}  " + "  ".join(
        f"{c + ' F1/pw':>15}" for c in cwes)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        per = "  ".join(f"{f(m['per_cwe'].get(c, {}).get('f1')):>7}/{f(m['per_cwe'].get(c, {}).get('pairwise_accuracy')):<7}"
                        for c in cwes)
        lines.append(f"{name:<12} {f(m['f1']):>6} {f(m['fpr']):>6} {f(m['pairwise_accuracy']):>8} "
                     f"{f(m['precision']):>6} {f(m['recall']):>6}  {per}")
    return "\n".join(lines)


def main() -> None:
    import torch

    from streamguard_ml.graphs import MARK_BIT, ast_only, build_graph
    from streamguard_ml.inference import score_split
    from streamguard_ml.splits import leakage_groups

    args = parse_args()
    samples = load_samples(args.data)
    started = time.perf_counter()
    full = [build_graph(s.code) for s in samples]
    build_s = time.perf_counter() - started
    variants = {"full": full, "ast": [ast_only(g) for g in full]}
    nodes = np.array([g.num_nodes for g in full])
    print(f"graphs: {len(full)} built in {build_s:.1f}s ({len(full) / build_s:.0f}/s), nodes median "
          f"{int(np.median(nodes))}, max {nodes.max()}; edges median {int(np.median([len(g.edges) for g in full]))}")

    bandit = run_bandit(samples)
    tainted_sink = MARK_BIT["tainted_sink"]
    oof = {name: np.zeros(len(samples)) for name in (*variants, "taint-rules", "bandit")}
    oof["taint-rules"] = np.array([float(any(m & tainted_sink for m in g.marks)) for g in full])
    oof["bandit"] = np.array([float(bool(f)) for f in bandit])
    speed: dict[str, dict[str, list[float]]] = {v: {"train": [], "infer": []} for v in variants}
    explained: dict[str, list] = {"truth": [], "ig": [], "attention": [], "bandit": [], "bandit_truth": []}
    size: dict[str, Any] = {}
    groups = leakage_groups(samples)
    test_folds = folds(samples, groups, args.folds, args.seed)
    for k, test_idx in enumerate(test_folds):
        train_idx = np.setdiff1d(np.arange(len(samples)), test_idx)
        fit_idx, val_idx = validation_part(groups, train_idx, args.seed + k)
        for name, graphs in variants.items():
            t0 = time.perf_counter()
            fit = split_data(samples, graphs, fit_idx)
            kind, model = train_gnn(fit, split_data(samples, graphs, val_idx), args)
            test = split_data(samples, graphs, test_idx)
            scored = time.perf_counter()
            oof[name][test_idx] = score_split(kind, model, test, 32).prob
            speed[name]["infer"].append(len(test) / (time.perf_counter() - scored))
            speed[name]["train"].append(train_graphs_per_second(kind, model, fit, args.batch_size))
            if name == "full":
                size = model_size(model)
                if args.explain:
                    lines = explain_lines(kind, model, test, args.explain)
                    for key in ("truth", "ig", "attention"):
                        explained[key] += lines[key]
            m = scores(samples, test_idx, oof[name][test_idx])
            print(f"fold {k + 1}/{len(test_folds)} {name:<5} test {len(test_idx):>3}: F1 {m['f1']:.3f} "
                  f"FPR {m['fpr']:.3f} pairwise {m['pairwise_accuracy'] or 0:.3f} ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
        known = [i for i in test_idx if samples[i].label == 1 and samples[i].vulnerable_lines][:args.explain]
        explained["bandit"] += [[line for line, _ in bandit[i]][:3] for i in known]
        explained["bandit_truth"] += [samples[i].vulnerable_lines for i in known]

    all_idx = np.arange(len(samples))
    results = {name: scores(samples, all_idx, prob) for name, prob in oof.items()}
    cwes = sorted({s.cwe for s in samples if s.cwe})
    print(f"\nout-of-fold, {args.folds}-fold grouped CV, {len(samples)} functions "
          f"({sum(s.label for s in samples)} vulnerable), threshold 0.5")
    print(table(results, cwes))
    local = {"ig": {k: hit_rate(explained["ig"], explained["truth"], k) for k in (1, 3)},
             "attention": {k: hit_rate(explained["attention"], explained["truth"], k) for k in (1, 3)},
             "bandit": {k: hit_rate(explained["bandit"], explained["bandit_truth"], k) for k in (1, 3)}}
    print(f"\nline localisation on {len(explained['truth'])} vulnerable test functions (top-1 / top-3 hits a "
          "deleted line):")
    for name, hits in local.items():
        print(f"  {name:<10} {hits[1] or 0:.3f} / {hits[3] or 0:.3f}")
    rates = {v: {k: float(np.mean(x)) for k, x in s.items()} for v, s in speed.items()}
    print(f"\nthroughput (CPU, {torch.get_num_threads()} threads): " + "; ".join(
        f"{v}: train {r['train']:.1f} graphs/s, inference {r['infer']:.1f} graphs/s" for v, r in rates.items()))
    print(f"model size: {size['parameters']:,} parameters, {size['safetensors_bytes'] / 1e6:.2f} MB safetensors")
    if args.json:
        Path(args.json).write_text(json.dumps({"metrics": results, "localisation": local, "throughput": rates,
                                               "model_size": size}, indent=2, default=str))
    summary = {f"{n.replace('-', '_')}_{k}": results[n][m] for n in results
               for k, m in (("f1", "f1"), ("fpr", "fpr"), ("pairwise", "pairwise_accuracy"))}
    summary.update(ig_top1=local["ig"][1], ig_top3=local["ig"][3], train_graphs_per_s=rates["full"]["train"],
                   infer_graphs_per_s=rates["full"]["infer"])
    print("RESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
