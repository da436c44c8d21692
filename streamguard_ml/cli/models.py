"""Model commands: ``train``, ``evaluate``, ``predict``, ``explain`` (JSONL inputs, or each function of .py files)."""

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
#: The help of every argument that takes a version (``Registry.resolve`` reads them all).
REF_HELP = "N, latest, deployed (or champion) or best:<metric>"


def add_model_ref(p: argparse.ArgumentParser, default: str = "taint-flow-gnn") -> None:
    p.add_argument("--model", default=default,
                   help="registry model: " + " | ".join(REGISTRY_NAMES.values()) + " (or "
                        + " | ".join(REGISTRY_NAMES) + ")")
    p.add_argument("--model-version", default="deployed",
                   help=REF_HELP + "; MODEL:REF names the model too (default: deployed)")


def known_model(registry: Any, name: str) -> str:
    """The registry name of ``name`` (a short name such as ``gnn`` allowed), or a UsageError naming the models
    the registry holds: a mistyped model must not read as a model with no versions."""
    model = MODEL_ALIASES.get(name, name)
    models = registry.models()
    if model not in models:
        where = registry.store.uri(registry.prefix)
        raise UsageError(f"no model {name!r} in the registry at {where}: registered models: "
                         + (", ".join(models) if models else "none yet (run the training DAG or "
                                                             "`streamguard-ml registry register`)"))
    return model


def resolve_version(args: argparse.Namespace) -> Any:
    from ..registry import Registry

    model, ref = args.model, str(args.model_version)
    if ":" in ref and not ref.startswith("best:"):
        model, ref = ref.split(":", 1)
    registry = Registry(store_of(args))
    return registry.resolve(known_model(registry, model), ref)


def register(sub: argparse._SubParsersAction) -> None:
    p = common(sub.add_parser("train", help="train a model on a preprocessed run (local backend); without "
                              "--run it is the SageMaker-contract entrypoint itself"))
    p.add_argument("--run", required=True, help="a preprocessed run (`streamguard-ml preprocess --run RUN`)")
    p.add_argument("--model-type", choices=["gnn", "transformer", "fusion"], required=True,
                   help="fusion: fit the taint-fusion detector from the run's trained gnn and transformer")
    p.add_argument("--epochs", type=int, default=None, help="default: the config's gnn_epochs / transformer_epochs")
    p.add_argument("--base-model", default=None, help="transformer encoder (default: the run's tokenizer)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's batch_size")
    p.set_defaults(func=cmd_train)

    p = common(sub.add_parser("evaluate", help="score a registered version on a run's test split"))
    p.add_argument("--run", required=True, help="a preprocessed run whose split is scored")
    add_model_ref(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default: test)")
    add_threshold(p)
    p.set_defaults(func=cmd_evaluate)

    p = common(sub.add_parser("explain", help="which lines made the model flag this code (per-line and "
                              "per-token/node attributions)"))
    add_model_ref(p)
    p.add_argument("--input", type=Path, required=True,
                   help="a .py file or a directory of them (each function, method and the module-level code is "
                        "explained apart), or a JSONL file of {id, code}")
    p.add_argument("--method", default="ig", choices=["ig", "attention"],
                   help="ig: Integrated Gradients (both models); attention: GNN readout attention")
    p.add_argument("--top", type=int, default=5, help="lines to show per input")
    add_limits(p)
    p.set_defaults(func=cmd_explain)

    p = common(sub.add_parser(
        "predict", help="score functions: a JSONL file ({id, code} per line), or .py files (each function)",
        description="Writes one row per input, in order.  A .py file (or every .py file below a directory) is "
                    "split into its functions, methods and module-level code, each scored apart and named by "
                    "'path', 'function', 'start_line' and 'end_line'; a file that does not parse is an error row "
                    "(reason syntax_error).  A line that cannot be scored (not JSON, no code, "
                    "NUL bytes, over the size limits, no program graph) is a row with 'line', 'reason' and "
                    "'error' and no score; the rest are scored.  Exit status: 0 all scored, "
                    f"{EXIT_PARTIAL} output written but some lines not scored (named on stderr), 2 nothing "
                    "written (bad arguments, unknown model)."))
    add_model_ref(p)
    p.add_argument("--input", type=Path, required=True,
                   help="a JSONL file of {id, code}, a .py file, or a directory of .py files")
    p.add_argument("--output", type=Path, required=True, help="JSONL file of one row per input (written whole)")
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


def is_python_input(path: Path) -> bool:
    """Whether ``--input`` names Python source (a ``.py`` file or a directory) rather than JSONL."""
    return path.suffix == ".py" or path.is_dir()


def unit_items(path: Path) -> list[tuple[Any, dict[str, Any]]]:
    """Each function, method and the module-level code (:mod:`streamguard_ml.code_units`) of the ``.py``
    file(s) at ``path`` as an ``inference.Item`` with where it is (``path``, ``function``, ``kind``,
    ``start_line``, ``end_line``).  A file that does not parse is one item carrying that fault, so it
    becomes an error row (predict) or a line on stderr (explain), never a silent skip."""
    from ..code_units import CodeUnitError, file_units, python_files
    from ..inference import Item

    if not path.exists():
        raise UsageError(f"{path} does not exist")
    files = python_files(path)
    if not files:
        raise UsageError(f"{path} holds no .py files: give a .py file, a directory of them or a JSONL file")
    out = []
    for file in files:
        try:
            units = file_units(file)
        except CodeUnitError as exc:
            place = {"path": str(file), "function": None, "kind": "file", "start_line": exc.line, "end_line": exc.line}
            out.append((Item(str(file), None, "line", exc.line or 1, (exc.reason, exc.detail)), place))
            continue
        out += [(Item(u.id, u.code, "line", u.start_line), {"path": u.path, "function": u.name, "kind": u.kind,
                                                             "start_line": u.start_line, "end_line": u.end_line})
                for u in units]
    if not out:
        raise UsageError(f"{path} has no functions or module-level code to score (only imports and docstrings)")
    return out


def describe_place(place: dict[str, Any]) -> str:
    """``app.py:Handler.get (lines 14-17)``, or ``bad.py line 4`` for a file that did not parse."""
    if place["function"] is None:
        return f"{place['path']}" + (f" line {place['start_line']}" if place["start_line"] else "")
    return f"{place['path']}:{place['function']} (lines {place['start_line']}-{place['end_line']})"


def read_inputs(path: Path, limits: Any) -> list[dict[str, Any]]:
    """The inputs ``explain`` can explain, ``{id, code, label}`` in order (``label`` names it in messages, and
    ``place`` says where a code unit of a ``.py`` input is); each one it cannot (unreadable, refused as
    ``predict`` refuses it: ``inference.function_fault``) is named on stderr, never dropped silently."""
    from ..inference import function_fault

    if is_python_input(path):
        pairs = unit_items(path)
    else:
        pairs = [(item, None) for item in iter_items(path)]
    rows = []
    for item, place in pairs:
        label = describe_place(place) if place else f"{path}: line {item.position}"
        fault = item.fault or function_fault(item.code, limits)
        if fault:
            print(f"{label} skipped ({fault[0]}): {fault[1]}", file=sys.stderr)
        else:
            rows.append({"id": item.id, "code": item.code, "label": label, "place": place})
    return rows


class _Tally:
    """What ``predict`` wrote: rows, flagged, and the inputs it could not score (named in its summary)."""

    def __init__(self) -> None:
        self.rows = self.flagged = 0
        self.error_lines: list[int] = []
        self.error_names: list[str] = []
        self.shown: list[dict[str, Any]] = []  # .py inputs: every row, for the per-function summary

    def add(self, row: dict[str, Any], place: dict[str, Any] | None) -> None:
        self.rows += 1
        if "error" in row:
            self.error_lines.append(row["line"])
            self.error_names.append(describe_place(place) if place else f"line {row['line']}")
        else:
            self.flagged += row["label"] == 1
        if place:
            self.shown.append(row)


def cmd_predict(args: argparse.Namespace) -> int:
    """Score the input batch by batch into a temporary file that becomes ``--output`` only when complete."""
    import os

    from ..inference import LoadedModel, predict_stream

    limits = limits_of(args)
    if not args.input.exists():
        raise UsageError(f"{args.input} does not exist")
    pairs = unit_items(args.input) if is_python_input(args.input) else None
    items = [item for item, _ in pairs] if pairs is not None else iter_items(args.input)
    places = iter([place for _, place in pairs]) if pairs is not None else None
    mv = resolve_version(args)
    partial = args.output.with_name(f".{args.output.name}.{os.getpid()}.partial")
    tally = _Tally()
    try:
        with tempfile.TemporaryDirectory() as tmp, open(partial, "w", encoding="utf-8") as out:
            model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
            threshold = threshold_of(args, model)
            for row in predict_stream(model, items, threshold, limits):
                place = next(places) if places is not None else None  # rows come one per item, in order
                row.update(place or {})
                if "error" not in row:
                    row.update(model=mv.model, version=mv.version)
                tally.add(row, place)
                out.write(json.dumps(row) + "\n")
        os.replace(partial, args.output)
    finally:
        partial.unlink(missing_ok=True)
    errors = len(tally.error_lines)
    doc = {"model": mv.model, "version": mv.version, "input": str(args.input), "output": str(args.output),
           "threshold": threshold, "threshold_source": "--threshold" if args.threshold is not None else "version",
           "rows": tally.rows, "predictions": tally.rows - errors, "flagged": tally.flagged,
           "errors": errors, "error_lines": tally.error_lines[:100]}
    if pairs is not None:
        doc["error_units"] = tally.error_names[:100]
    emit(args, doc, lambda d: _print_predictions(d, tally.shown))
    if not errors:
        return 0
    names = tally.error_names if pairs is not None else None
    shown = ", ".join(names[:20] if names else map(str, tally.error_lines[:20])) + (
        f" and {errors - 20} more" if errors > 20 else "")
    what = "" if names else f"line{'s' if errors > 1 else ''} "
    print(f"streamguard-ml predict: {errors} of {tally.rows} inputs not scored ({what}{shown}): see their "
          f"'error' in {args.output}", file=sys.stderr)
    return EXIT_PARTIAL


def _print_predictions(d: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"{d['predictions']} predictions ({d['flagged']} flagged at threshold {d['threshold']:.3f}) by "
          f"{d['model']} v{d['version']} -> {d['output']}")
    for row in rows:  # .py inputs: one line per function, so the finding is named where it is
        verdict = (f"{row['score']:.3f}" + ("  FLAGGED" if row["label"] == 1 else "")) if "error" not in row else \
            f"not scored ({row['reason']})"
        print(f"  {describe_place(row)}: {verdict}")


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_split
    from ..inference import LoadedModel

    limits = limits_of(args)
    if not args.input.exists():
        raise UsageError(f"{args.input} does not exist")
    rows = read_inputs(args.input, limits)
    if not rows:
        raise UsageError(f"{args.input} has nothing that can be explained (each input skipped is named above)")
    mv = resolve_version(args)
    with tempfile.TemporaryDirectory() as tmp:
        model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
        data, graph_errors = model.featurize_each([r["code"] for r in rows])
        for row, error in zip(rows, graph_errors):
            if error:
                print(f"{row['label']} skipped (no_graph): no program graph could be built ({error})", file=sys.stderr)
        rows = [row for row, error in zip(rows, graph_errors) if not error]
        if not rows:
            raise UsageError(f"{args.input} has nothing that can be explained (each input skipped is named above)")
        explanations = explain_split(model, data, range(len(rows)), method=args.method)
    docs = [_explanation_doc(row, e, mv, args.top) for row, e in zip(rows, explanations)]
    emit(args, docs, _print_explanations)
    return 0


def _explanation_doc(row: dict[str, Any], e: Any, mv: Any, top: int) -> dict[str, Any]:
    """One explanation; for a code unit of a .py file, every line number is the file's, not the unit's."""
    doc = e.to_dict()
    place = row.get("place")
    offset = place["start_line"] - 1 if place else 0
    code_lines = row["code"].splitlines()
    doc.update(id=row["id"], model=mv.model, version=mv.version,
               top_lines=[{"line": ln + offset, "attribution": round(a, 6), "text": code_lines[ln - 1].strip()}
                          for ln, a in e.lines[:top]])
    if place:
        doc.update(place)
        doc["lines"] = [{**x, "line": x["line"] + offset} for x in doc["lines"]]
        doc["units"] = [{**x, "line": x["line"] + offset} if "line" in x else x for x in doc["units"]]
    return doc


def _print_explanations(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        name = describe_place(d) if "path" in d else d["id"]
        print(f"{name}: p(vulnerable)={d['score']:.3f} ({d['model']} v{d['version']}, {d['method']})")
        for t in d["top_lines"]:
            print(f"  line {t['line']:>4}  {t['attribution']:+.4f}  {t['text']}")
