"""Model commands: ``train``, ``evaluate``, ``predict``."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

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
    p.set_defaults(func=cmd_explain)

    p = common(sub.add_parser("predict", help="score functions in a JSONL file ({id, code} per line)"))
    add_model_ref(p)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    add_threshold(p)
    p.set_defaults(func=cmd_predict)


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


def read_inputs(path: Path) -> list[dict[str, Any]]:
    """Input rows in order; unusable lines become rows carrying an ``error``."""
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict) or not isinstance(obj.get("code"), str) or not obj["code"].strip():
                raise ValueError("needs a JSON object with a non-empty 'code'")
            rows.append({"id": obj.get("id", f"line-{number}"), "code": obj["code"]})
        except (UnicodeDecodeError, ValueError) as exc:
            rows.append({"id": f"line-{number}", "error": f"line {number}: {exc}"})
    return rows


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import LoadedModel

    mv = resolve_version(args)
    rows = read_inputs(args.input)
    good = [r for r in rows if "error" not in r]
    with tempfile.TemporaryDirectory() as tmp:
        model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
        threshold = threshold_of(args, model)
        scores = model.score(model.featurize([r["code"] for r in good])) if good else None
    predicted = iter(scores.rows([r["id"] for r in good], threshold) if scores is not None else [])
    out = [{"id": r["id"], "score": None, "label": None, "error": r["error"]} if "error" in r
           else {**next(predicted), "model": mv.model, "version": mv.version} for r in rows]
    args.output.write_text("".join(json.dumps(r) + "\n" for r in out))
    doc = {"model": mv.model, "version": mv.version, "input": str(args.input), "output": str(args.output),
           "threshold": threshold, "threshold_source": "--threshold" if args.threshold is not None else "version",
           "predictions": len(out), "flagged": sum(1 for r in out if r["label"] == 1),
           "errors": sum(1 for r in out if r["label"] is None)}
    emit(args, doc, lambda d: print(f"{d['predictions']} predictions ({d['flagged']} flagged at threshold "
                                    f"{d['threshold']:.3f}, {d['errors']} unreadable) by {d['model']} "
                                    f"v{d['version']} -> {d['output']}"))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_split
    from ..inference import LoadedModel

    if args.input.suffix == ".py":
        if not args.input.is_file():
            raise UsageError(f"{args.input} does not exist")
        rows = [{"id": args.input.name, "code": args.input.read_text(encoding="utf-8")}]
    else:
        rows = [r for r in read_inputs(args.input) if "error" not in r]
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
