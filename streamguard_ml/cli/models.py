"""Model commands: ``train``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import UsageError, common, emit, store_of

from ..config import REGISTRY_NAMES

#: ``--model gnn`` etc.: model types name their registry models.
MODEL_ALIASES = dict(REGISTRY_NAMES)


def add_model_ref(p: argparse.ArgumentParser, default: str = "taint-flow-gnn") -> None:
    p.add_argument("--model", default=default,
                   help="registry model: " + " | ".join(REGISTRY_NAMES.values()) + " (or "
                        + " | ".join(REGISTRY_NAMES) + ")")
    p.add_argument("--model-version", default="deployed", help="N, latest, deployed or best:<metric>")


def resolve_version(args: argparse.Namespace) -> Any:
    from ..registry import Registry

    model = MODEL_ALIASES.get(args.model, args.model)
    ref = str(args.model_version)
    if ":" in ref and not ref.startswith("best:"):
        model, ref = ref.split(":", 1)
        model = MODEL_ALIASES.get(model, model)
    return Registry(store_of(args)).resolve(model, ref)


def register(sub: argparse._SubParsersAction) -> None:
    p = common(sub.add_parser("train", help="train a model on a preprocessed run (local backend); without "
                              "--run it is the SageMaker-contract entrypoint itself"))
    p.add_argument("--run", required=True)
    p.add_argument("--model-type", choices=["gnn", "transformer", "fusion"], required=True,
                   help="fusion: fit the taint-fusion detector from the run's trained gnn and transformer")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--base-model", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_train)

    p = common(sub.add_parser("evaluate", help="score a registered version on a run's test split"))
    p.add_argument("--run", required=True)
    add_model_ref(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    add_threshold(p)
    p.set_defaults(func=cmd_evaluate)

    p = common(sub.add_parser("explain", help="which lines made the model flag this code (per-line and "
                              "per-token/node attributions)"))
    add_model_ref(p)
    p.add_argument("--input", type=Path, required=True, help="a .py file or a JSONL file of {id, code}")
    p.add_argument("--method", default="ig", choices=["ig", "attention"],
                   help="ig: Integrated Gradients (both models); attention: GNN readout attention")
    p.add_argument("--top", type=int, default=5, help="lines to show per input")
    add_limits(p)
    p.set_defaults(func=cmd_explain)

    p = common(sub.add_parser(
        "predict", help="score functions in a JSONL file ({id, code} per line)",
        description="Writes one row per input line, in order.  A line that cannot be scored (not JSON, no code, "
                    "NUL bytes, over the size limits, no program graph) is a row with 'line', 'reason' and "
                    "'error' and no score; the rest are scored.  Exit status: 0 all scored, "
                    f"{EXIT_PARTIAL} output written but some lines not scored (named on stderr), 2 nothing "
                    "written (bad arguments, unknown model)."))
    add_model_ref(p)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    add_threshold(p)
    add_limits(p)
    p.set_defaults(func=cmd_predict)


#: ``predict``'s exit status when the output is written but some input lines are error rows.
EXIT_PARTIAL = 4


def add_limits(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~streamguard_ml.config.InferenceLimits` field (``--max-function-chars``)."""
    import dataclasses

    from ..config import InferenceLimits

    for f in dataclasses.fields(InferenceLimits):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=int, default=None, metavar="N",
                       help=f"default {f.default:,}" + (" (a batch of the input is scored at a time)"
                                                        if f.name.startswith("max_request") else ""))


def limits_of(args: argparse.Namespace) -> Any:
    """The :class:`InferenceLimits` the flags give (checked: a bad one is a usage error naming the flag)."""
    import dataclasses

    from ..config import InferenceLimits

    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(InferenceLimits)}
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value}: give a whole number of at least 1")
    return InferenceLimits(**{k: v for k, v in values.items() if v is not None})


def add_threshold(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold on the calibrated score (default: the version's own, chosen on validation)")


def threshold_of(args: argparse.Namespace, model: Any) -> float:
    """``--threshold`` when given (checked), else the version's own operating point."""
    if args.threshold is None:
        return model.threshold
    if not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold {args.threshold}: give a probability between 0 and 1")
    return float(args.threshold)


def _dataset_info(store: Any, run: str) -> dict[str, Any]:
    from .. import layout

    key = layout.dataset_card(run, "json")
    if not store.exists(key):
        raise UsageError(f"run {run!r} is not preprocessed in {store.root}: run `streamguard-ml preprocess --run {run}`")
    card = store.read_json(key)
    return {"content_hash": card["content_hash"], "base_model": card["base_model"]}


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import PipelineConfig
    from ..pipeline import fusion_step, train_step

    store = store_of(args)
    dataset = _dataset_info(store, args.run)
    values: dict[str, Any] = {"base_model": args.base_model or dataset["base_model"], "batch_size": args.batch_size}
    if args.epochs:
        values["gnn_epochs" if args.model_type == "gnn" else "transformer_epochs"] = args.epochs
    cfg = PipelineConfig.from_mapping(values)
    if args.model_type == "fusion":
        result = fusion_step(store, args.run, cfg, dataset, _trained_members(store, args.run))
    else:
        result = train_step(store, args.run, args.model_type, cfg, dataset)
    emit(args, result, lambda r: print(f"{r['model_type']} trained: val acc {r['validation']['accuracy']:.3f}, "
                                       f"F1 {r['validation']['f1']:.3f}\nmodel: {r['model_uri']}"))
    return 0


def _trained_members(store: Any, run: str) -> list[dict[str, Any]]:
    from .. import layout
    from ..config import MODEL_TYPES

    found = [{"model_type": m, "model_uri": store.uri(layout.model_archive(run, m))} for m in MODEL_TYPES
             if store.exists(layout.model_archive(run, m))]
    if not found:
        raise UsageError(f"run {run!r} has no trained gnn or transformer: train them first "
                         f"(`streamguard-ml train --run {run} --model-type gnn`)")
    return found


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..config import MODEL_TYPE_OF
    from ..evaluate import evaluate_model

    mv = resolve_version(args)
    model_type = MODEL_TYPE_OF.get(mv.model)
    if model_type is None:
        raise UsageError(f"{mv.model} is not a model this pipeline evaluates")
    if args.threshold is not None:
        threshold_of(args, mv)  # refuse a bad override before loading anything
    with tempfile.TemporaryDirectory() as tmp:
        metrics = evaluate_model(store_of(args), args.run, model_type, mv.artifact_uri, Path(tmp), split=args.split,
                                 name=f"v{mv.version}", threshold=args.threshold)
    doc = {"model": mv.model, "version": mv.version, "run": args.run, "split": args.split, "metrics": metrics}

    def human(d: dict[str, Any]) -> None:
        m = d["metrics"]
        print(f"{d['model']} v{d['version']} on {d['run']}/{d['split']} at threshold {m['threshold']:.3f}: " + ", ".join(
            f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float) and k != "threshold"))
        print("  at 0.5: " + ", ".join(f"{k}={v:.3f}" for k, v in m["at_0.5"].items() if isinstance(v, float)))
        print(f"  {m['test_data']['statement']}")

    emit(args, doc, human)
    return 0


def iter_items(path: Path) -> Iterator[Any]:
    """The input file's functions as ``inference.Item``s, one per non-blank line, read as they are needed;
    a line that is no JSON object becomes an item carrying its fault (an error row, never a crash)."""
    from ..inference import Item
    from ..records import Reason

    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            fault = None
            try:
                obj = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError as exc:
                fault = Reason.NON_UTF8, f"not UTF-8 (byte {exc.start}): save the file as UTF-8"
            except (ValueError, RecursionError) as exc:
                fault = Reason.MALFORMED_JSON, (f"not valid JSON ({str(exc).splitlines()[0]}): each line must be one "
                                                'object {"id": ..., "code": ...}')
            else:
                if not isinstance(obj, dict):
                    fault = Reason.NOT_AN_OBJECT, 'not a JSON object: each line must be {"id": ..., "code": ...}'
            if fault:
                yield Item(f"line-{number}", None, "line", number, fault)
                continue
            code = obj.get("code")
            yield Item(obj.get("id", f"line-{number}"), code if isinstance(code, str) else None, "line", number)


def read_inputs(path: Path, limits: Any) -> list[dict[str, Any]]:
    """The input rows ``explain`` can explain, ``{id, code}`` in order; each line it cannot (unreadable,
    refused as ``predict`` refuses it: ``inference.function_fault``) is named on stderr, never dropped silently."""
    from ..inference import function_fault

    rows = []
    for item in iter_items(path):
        fault = item.fault or function_fault(item.code, limits)
        if fault:
            print(f"{path}: line {item.position} skipped ({fault[0]}): {fault[1]}", file=sys.stderr)
        else:
            rows.append({"id": item.id, "code": item.code})
    return rows


def cmd_predict(args: argparse.Namespace) -> int:
    """Score the file batch by batch into a temporary file that becomes ``--output`` only when complete."""
    import os

    from ..inference import LoadedModel, predict_stream

    limits = limits_of(args)
    if not args.input.is_file():
        raise UsageError(f"{args.input} does not exist")
    mv = resolve_version(args)
    partial = args.output.with_name(f".{args.output.name}.{os.getpid()}.partial")
    counts = {"rows": 0, "flagged": 0}
    error_lines: list[int] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, open(partial, "w", encoding="utf-8") as out:
            model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
            threshold = threshold_of(args, model)
            for row in predict_stream(model, iter_items(args.input), threshold, limits):
                if "error" in row:
                    error_lines.append(row["line"])
                else:
                    row.update(model=mv.model, version=mv.version)
                    counts["flagged"] += row["label"] == 1
                counts["rows"] += 1
                out.write(json.dumps(row) + "\n")
        os.replace(partial, args.output)
    finally:
        partial.unlink(missing_ok=True)
    doc = {"model": mv.model, "version": mv.version, "input": str(args.input), "output": str(args.output),
           "threshold": threshold, "threshold_source": "--threshold" if args.threshold is not None else "version",
           "rows": counts["rows"], "predictions": counts["rows"] - len(error_lines), "flagged": counts["flagged"],
           "errors": len(error_lines), "error_lines": error_lines[:100]}
    emit(args, doc, lambda d: print(f"{d['predictions']} predictions ({d['flagged']} flagged at threshold "
                                    f"{d['threshold']:.3f}) by {d['model']} v{d['version']} -> {d['output']}"))
    if not error_lines:
        return 0
    shown = ", ".join(map(str, error_lines[:20])) + (f" and {len(error_lines) - 20} more" if len(error_lines) > 20 else "")
    print(f"streamguard-ml predict: {len(error_lines)} of {counts['rows']} inputs not scored (line"
          f"{'s' if len(error_lines) > 1 else ''} {shown}): see their 'error' in {args.output}", file=sys.stderr)
    return EXIT_PARTIAL


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_split
    from ..inference import LoadedModel

    from ..inference import function_fault

    limits = limits_of(args)
    if args.input.suffix == ".py":
        if not args.input.is_file():
            raise UsageError(f"{args.input} does not exist")
        code = args.input.read_text(encoding="utf-8", errors="surrogateescape")
        if fault := function_fault(code, limits):
            raise UsageError(f"{args.input} cannot be explained ({fault[0]}): {fault[1]}")
        rows = [{"id": args.input.name, "code": code}]
    else:
        rows = read_inputs(args.input, limits)
        if not rows:
            raise UsageError(f"{args.input} has no usable {{id, code}} lines")
    mv = resolve_version(args)
    with tempfile.TemporaryDirectory() as tmp:
        model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
        data = model.featurize([r["code"] for r in rows])
        explanations = explain_split(model, data, range(len(rows)), method=args.method)
    docs = []
    for row, e in zip(rows, explanations):
        doc = e.to_dict()
        code_lines = row["code"].splitlines()
        doc.update(id=row["id"], model=mv.model, version=mv.version,
                   top_lines=[{"line": ln, "attribution": round(a, 6), "text": code_lines[ln - 1].strip()}
                              for ln, a in e.lines[: args.top]])
        docs.append(doc)

    def human(ds: list) -> None:
        for d in ds:
            print(f"{d['id']}: p(vulnerable)={d['score']:.3f} ({d['model']} v{d['version']}, {d['method']})")
            for t in d["top_lines"]:
                print(f"  line {t['line']:>4}  {t['attribution']:+.4f}  {t['text']}")

    emit(args, docs, human)
    return 0
