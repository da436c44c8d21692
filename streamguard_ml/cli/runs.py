"""``runs list|show|compare``: every training run's figures from the store, with or without MLflow.

The same params, per-epoch history and final evaluation that :mod:`streamguard_ml.tracking`
logs to MLflow, read from ``runs/<run>/models/<type>/training.json`` and
``runs/<run>/eval/<type>/challenger-metrics.json``, so runs can be compared where no
tracking server runs (a laptop, an air-gapped store).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import UsageError, common, emit, store_of
from ..config import ALL_MODEL_TYPES, MODEL_TYPE_OF

TYPE_HELP = "model type: " + ", ".join(ALL_MODEL_TYPES) + " (or its registry name)"
#: ``runs list`` metric columns (final test evaluation): (metric, header), 5 characters each.
LIST_METRICS = (("accuracy", "acc"), ("f1", "f1"), ("fpr", "fpr"), ("roc_auc", "auc"), ("pairwise_accuracy", "pair"))
#: ``runs show`` per-epoch columns: (history key, header).
EPOCH_COLUMNS = (("epoch", "ep"), ("loss", "loss"), ("train_acc", "tr acc"), ("val_loss", "val loss"),
                 ("val_acc", "val acc"), ("val_f1", "val f1"), ("val_auc", "val auc"), ("seconds", "s"))


def model_type(value: str) -> str:
    """``--model-type``: a model type, or the registry name of one (``taint-flow-gnn`` → ``gnn``)."""
    kind = MODEL_TYPE_OF.get(value, value)
    if kind not in ALL_MODEL_TYPES:
        raise argparse.ArgumentTypeError(f"{value!r} is not a model type: use one of {', '.join(ALL_MODEL_TYPES)}")
    return kind


def register(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="training runs in the store: params, per-epoch curves, metrics (no MLflow "
                                       "needed)")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")

    p = common(rsub.add_parser("list", help="every trained run and model type, newest first, with its test metrics"))
    p.add_argument("--model-type", type=model_type, default=None, help="only this " + TYPE_HELP)
    p.set_defaults(func=cmd_list)

    p = common(rsub.add_parser("show", help="one run: params, the per-epoch table and the final metrics"))
    p.add_argument("run", help="run key (the first column of `runs list`) or the DAG run id / CLI --run name")
    p.add_argument("--model-type", type=model_type, default=None,
                   help="only this " + TYPE_HELP + " (default: every model the run trained)")
    p.set_defaults(func=cmd_show)

    p = common(rsub.add_parser("compare", help="two runs: params that differ, metric deltas, same test data or not"))
    p.add_argument("a", help="the run compared from (run key or run id)")
    p.add_argument("b", help="the run compared to (run key or run id)")
    p.add_argument("--model-type", type=model_type, default=None,
                   help=TYPE_HELP + " (default: the one model type both runs trained)")
    p.set_defaults(func=cmd_compare)


def _console() -> Any:
    """Rich's console: the terminal's (or $COLUMNS') width, 200 columns into a file or pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _store(args: argparse.Namespace) -> Any:
    return store_of(args)


def cmd_list(args: argparse.Namespace) -> int:
    from ..tracking import list_runs

    rows = [r for r in list_runs(_store(args)) if args.model_type in (None, r["model_type"])]
    emit(args, rows, lambda rs: _console().print(runs_table(rs)))
    return 0


def runs_table(rows: list[dict[str, Any]]) -> Any:
    """The ``runs list`` table: run (folds when long), model type, when, epochs, registry version and the
    headline test metrics; stays whole at 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title="StreamGuard training runs", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("run", overflow="fold", min_width=8)
    table.add_column("model", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("ep", justify="right", no_wrap=True)
    table.add_column("v", justify="right", no_wrap=True)
    for _, header in LIST_METRICS:
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        created = (r.get("created") or "-").replace("T", " ").removesuffix("+00:00")[:16]
        table.add_row(r["run"], r["model_type"], created, str(r["epochs"]),
                      str(r["version"]) if r.get("version") is not None else "-",
                      *(_fmt(r["metrics"].get(m)) for m, _ in LIST_METRICS))
    table.caption = ("no trained runs in this store yet" if not rows else
                     "metrics: final test evaluation ('-': none yet); v: registry version")
    return table


def cmd_show(args: argparse.Namespace) -> int:
    from .. import layout
    from ..tracking import run_figures, run_model_types

    store = _store(args)
    run = layout.run_key(args.run)
    types = [args.model_type] if args.model_type else run_model_types(store).get(run)
    if not types:
        raise UsageError(f"no run {run!r} with a trained model in {store.uri('runs')} (see `streamguard-ml runs list`)")
    docs = [run_figures(store, run, t) for t in types]
    emit(args, docs, lambda ds: _print_runs(ds))
    return 0


def _print_runs(docs: list[dict[str, Any]]) -> None:
    console = _console()
    for i, doc in enumerate(docs):
        if i:
            console.print()
        for line in run_summary(doc):
            console.print(line, markup=False, highlight=False)
        if doc["history"]:
            console.print(epoch_table(doc["history"]))
        for line in metric_lines(doc):
            console.print(line, markup=False, highlight=False)


def run_summary(doc: dict[str, Any]) -> list[str]:
    """Who the run is, where its data came from, where it went (registry, MLflow), then its params."""
    reg = doc.get("registered") or {}
    link = reg.get("mlflow") or {}
    data = doc.get("data") or {}
    counts = " / ".join(f"{data[k]} {name}" for k, name in (("train_samples", "train"), ("val_samples", "val"),
                                                              ("test_samples", "test")) if data.get(k) is not None)
    lines = [f"run {doc['run']} · {doc['model_type']} ({doc['model']})",
             f"  created      {doc.get('created') or '-'}",
             f"  backend      {doc.get('backend') or '-'}",
             f"  data         content {(data.get('content_hash') or '-')[:16]}" + (f"; {counts} functions" if counts
                                                                                   else "")]
    if data.get("test_statement"):
        lines.append(f"  test data    {data['test_statement']}")
    lines.append("  registered   " + (f"{doc['model']} v{reg['version']} ({reg['status']})" if reg else "no"))
    if link:
        lines.append(f"  MLflow run   {link.get('url') or link.get('run_id')}")
    params = doc.get("params") or {}
    lines.append("params" if params else "params       none recorded")
    width = max(map(len, params), default=0)
    lines += [f"  {k:<{width}}  {v}" for k, v in sorted(params.items())]
    return lines


def epoch_table(history: list[dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title="per epoch", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for _, header in EPOCH_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for row in history:
        table.add_row(*(str(row.get(k, "-")) if k == "epoch" else _fmt(row.get(k), 2 if k == "seconds" else 4)
                        for k, _ in EPOCH_COLUMNS))
    return table


def metric_lines(doc: dict[str, Any]) -> list[str]:
    """The final test evaluation, as many figures a line as fit 80 columns."""
    from ..tracking import flat_metrics

    evaluation = doc.get("evaluation")
    if not evaluation:
        return ["final metrics  not evaluated yet"]
    flat = flat_metrics(evaluation)
    cells = [f"{k} {_fmt(v, 4) if not float(v).is_integer() or k == 'threshold' else int(v)}" for k, v in flat.items()]
    lines = ["final metrics (test split)"]
    width = max(map(len, cells), default=0) + 2
    per = max(1, 78 // width)
    lines += ["  " + "".join(f"{c:<{width}}" for c in cells[i:i + per]).rstrip() for i in range(0, len(cells), per)]
    return lines


def cmd_compare(args: argparse.Namespace) -> int:
    from ..tracking import compare_runs

    doc = compare_runs(_store(args), args.a, args.b, args.model_type)
    emit(args, doc, lambda d: print("\n".join(comparison_lines(d))))
    return 0


def comparison_lines(d: dict[str, Any]) -> list[str]:
    """``runs compare`` for a person: a WARNING first when the two runs were not tested on the same data, then
    the params that differ and the metric deltas."""
    lines = []
    if d.get("same_test_data") is False:
        lines.append(f"WARNING: runs {d['a']} and {d['b']} were not tested on the same data ({d['data_basis']})")
    lines.append(f"{d['model_type']}: run {d['a']} -> run {d['b']}")
    same = {True: "same", False: "DIFFERENT", None: "unknown"}[d.get("same_test_data")]
    lines.append(f"  test data  {same}: {d['data_basis']}")
    lines.append(f"  epochs     {d['epochs']['a']} -> {d['epochs']['b']}")
    params = d.get("params") or {}
    lines.append("params that differ" if params else "params     all the same")
    width = max(map(len, params), default=0)
    lines += [f"  {k:<{width}}  {v['a'] if v['a'] is not None else '-'} -> {v['b'] if v['b'] is not None else '-'}"
              for k, v in params.items()]
    metrics = d.get("metrics") or {}
    lines.append("metrics (test split)" if metrics else "metrics    neither run was evaluated")
    width = max(map(len, metrics), default=0)
    for k, v in metrics.items():
        delta = f"({v['delta']:+.4f})" if isinstance(v.get("delta"), (int, float)) else "(no delta)"
        lines.append(f"  {k:<{width}}  {_fmt(v.get('a'), 4)} -> {_fmt(v.get('b'), 4)} {delta}")
    return lines
