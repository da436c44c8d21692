"""``registry list|show|latest|best|compare|promote|rollback|card|register``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import UsageError, common, emit, store_of
from .models import MODEL_ALIASES


def register(sub: argparse._SubParsersAction) -> None:
    reg = sub.add_parser("registry", help="the model registry")
    rsub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    p = common(rsub.add_parser("list", help="all versions (of one model with --model)"))
    p.add_argument("--model", default=None)
    p.set_defaults(func=cmd_list)

    p = common(rsub.add_parser("show", help="one version"))
    p.add_argument("model")
    p.add_argument("version", help="N, latest, deployed or best:<metric>")
    p.set_defaults(func=cmd_show)

    p = common(rsub.add_parser("latest", help="the newest version"))
    p.add_argument("model")
    p.set_defaults(func=lambda a: _show(a, "latest"))

    p = common(rsub.add_parser("best", help="the version with the best value of a metric"))
    p.add_argument("model")
    p.add_argument("--metric", default="f1")
    p.set_defaults(func=lambda a: _show(a, f"best:{a.metric}"))

    p = common(rsub.add_parser("compare", help="metric deltas between two versions"))
    p.add_argument("model")
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p.set_defaults(func=cmd_compare)

    p = common(rsub.add_parser("promote", help="make a version the champion (deployed)"))
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("--reason", default="manual promotion")
    p.set_defaults(func=cmd_promote)

    p = common(rsub.add_parser("rollback", help="undo the latest champion move (again: one more step back)",
                               description="Move the champion back to the one before it; each rollback goes one "
                                           "step further back through the champion history. With "
                                           "--expect-current N it changes nothing and exits 3 unless vN is still "
                                           "the champion, so a repeated or concurrent rollback is a conflict."))
    p.add_argument("model")
    p.add_argument("--reason", default="manual rollback")
    p.add_argument("--expect-current", type=int, default=None, metavar="N",
                   help="roll back only if vN is the champion now (else exit 3, nothing changed)")
    p.set_defaults(func=cmd_rollback)

    p = common(rsub.add_parser("card", help="a version's model card (written again from its run with --refresh)"))
    p.add_argument("model")
    p.add_argument("version", help="N, latest, deployed or best:<metric>")
    p.add_argument("--refresh", action="store_true", help="rebuild it from the version's run and evaluation")
    p.set_defaults(func=cmd_card)

    p = common(rsub.add_parser("register", help="register an existing model artifact by hand"))
    p.add_argument("--model", required=True)
    p.add_argument("--artifact", required=True, help="model.tar.gz (local path or s3://)")
    p.add_argument("--metrics", type=Path, required=True, help="JSON file of metrics")
    p.add_argument("--lineage", type=Path, default=None, help="optional JSON file of lineage")
    p.set_defaults(func=cmd_register)


def _registry(args: argparse.Namespace) -> Any:
    from ..registry import Registry

    return Registry(store_of(args))


def _name(model: str) -> str:
    return MODEL_ALIASES.get(model, model)


def _print_versions(versions: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="StreamGuard model registry")
    for col in ("model", "version", "status", "aliases", "accuracy", "f1", "fpr", "pairwise", "created"):
        table.add_column(col)
    for v in versions:
        m = v["metrics"]
        fmt = lambda x: f"{x:.3f}" if isinstance(x, (int, float)) else "-"  # noqa: E731
        table.add_row(v["model"], str(v["version"]), v["status"], ",".join(v["aliases"]), fmt(m.get("accuracy")),
                      fmt(m.get("f1")), fmt(m.get("fpr")), fmt(m.get("pairwise_accuracy")), v["created_at"])
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def cmd_list(args: argparse.Namespace) -> int:
    versions = [mv.to_dict() for mv in _registry(args).list(_name(args.model) if args.model else None)]
    emit(args, versions, _print_versions)
    return 0


def _show(args: argparse.Namespace, ref: str) -> int:
    mv = _registry(args).resolve(_name(args.model), ref)
    emit(args, mv.to_dict(), lambda d: print(json.dumps(d, indent=2, sort_keys=True, default=str)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    return _show(args, args.version)


def cmd_compare(args: argparse.Namespace) -> int:
    doc = _registry(args).compare(_name(args.model), args.a, args.b)

    def human(d: dict) -> None:
        print(f"{d['model']}: v{d['a']} -> v{d['b']}")
        for k, v in d["metrics"].items():
            print(f"  {k:<20} {v['a']:.4f} -> {v['b']:.4f} ({v['delta']:+.4f})")

    emit(args, doc, human)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    mv = _registry(args).promote(_name(args.model), args.version, args.reason)
    emit(args, mv.to_dict(), lambda d: print(f"{d['model']} v{d['version']} is now the champion"))
    return 0


#: Exit code of a registry change refused because the registry moved on (not bad input: 2).
EXIT_CONFLICT = 3


def cmd_rollback(args: argparse.Namespace) -> int:
    from ..registry import RegistryConflict

    try:
        mv = _registry(args).rollback(_name(args.model), args.reason, expected=args.expect_current)
    except RegistryConflict as exc:
        print(f"streamguard-ml {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    emit(args, mv.to_dict(), lambda d: print(f"{d['model']} champion rolled back to v{d['version']}"))
    return 0


def _read_json_file(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} file {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{what} file {path} must hold a JSON object")
    return doc


def cmd_register(args: argparse.Namespace) -> int:
    from ..model_card import write_model_card

    metrics = _read_json_file(args.metrics, "metrics")
    lineage = _read_json_file(args.lineage, "lineage") if args.lineage else {"source": "manual registration"}
    registry = _registry(args)
    mv = registry.register(_name(args.model), args.artifact, metrics, lineage=lineage)
    card = write_model_card(registry.store, registry.card_prefix(mv.model, mv.version), mv)
    emit(args, {**mv.to_dict(), "model_card": card["markdown"]},
         lambda d: print(f"registered {d['model']} v{d['version']} -> {d['artifact_uri']}"))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from ..config import MODEL_TYPE_OF
    from ..model_card import run_inputs, write_model_card

    registry = _registry(args)
    mv = registry.resolve(_name(args.model), args.version)
    prefix = registry.card_prefix(mv.model, mv.version)
    if args.refresh or not registry.store.exists(f"{prefix}/model_card.json"):
        run = mv.lineage.get("run")
        inputs = run_inputs(registry.store, run, MODEL_TYPE_OF[mv.model]) if run and mv.model in MODEL_TYPE_OF else {}
        write_model_card(registry.store, prefix, mv, **inputs)
    card = registry.store.read_json(f"{prefix}/model_card.json")
    card["markdown_uri"] = registry.store.uri(f"{prefix}/model_card.md")
    emit(args, card, lambda d: print(registry.store.read_bytes(f"{prefix}/model_card.md").decode()))
    return 0
