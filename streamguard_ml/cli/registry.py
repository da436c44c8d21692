"""``registry list|show|latest|best|compare|promote|rollback|card|register``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from . import UsageError, common, emit, store_of
from .models import MODEL_ALIASES, REF_HELP, known_model

MODEL_HELP = "registry model name (" + ", ".join(MODEL_ALIASES.values()) + ") or its short name (" + \
    ", ".join(MODEL_ALIASES) + ")"


def register(sub: argparse._SubParsersAction) -> None:
    reg = sub.add_parser("registry", help="the model registry")
    rsub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    p = common(rsub.add_parser("list", help="all versions (of one model with --model)"))
    p.add_argument("--model", default=None, help="only this model: " + MODEL_HELP)
    p.add_argument("--tag", default=None, metavar="TAG", help="only versions with this tag")
    p.set_defaults(func=cmd_list)

    p = common(rsub.add_parser("show", help="one version: a summary (--json: the whole registry document)"))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("version", help=REF_HELP)
    p.set_defaults(func=cmd_show)

    p = common(rsub.add_parser("latest", help="the newest version"))
    p.add_argument("model", help=MODEL_HELP)
    p.set_defaults(func=lambda a: _show(a, "latest"))

    p = common(rsub.add_parser("best", help="the version with the best value of a metric"))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--metric", default="f1", help="metric to rank by (default f1; fpr and loss: lower is better)")
    p.add_argument("--data", default=None, metavar="HASH",
                   help="rank the versions evaluated on this test data (a content hash or its prefix, as "
                        "`registry show` prints it; default: the data the newest version was evaluated on)")
    p.set_defaults(func=cmd_best)

    p = common(rsub.add_parser("tag", help="attach tags to a version (--remove: take them off), to find it by",
                               description="Tags are labels (reviewed, ticket:SEC-12, ...): `registry list --tag` "
                                           "and the registry page filter by them; every change is in the audit log."))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("version", help=REF_HELP)
    p.add_argument("tags", nargs="+", metavar="TAG", help="1-64 letters, digits and . _ : / -")
    p.add_argument("--remove", action="store_true", help="take the tags off instead")
    p.set_defaults(func=cmd_tag)

    p = common(rsub.add_parser("log", help="the audit log: registrations, status changes, decisions, "
                                           "promotions and rollbacks, oldest first"))
    p.add_argument("model", help=MODEL_HELP)
    p.set_defaults(func=cmd_log)

    p = common(rsub.add_parser("compare", help="metric deltas between two versions"))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("a", help="the version compared from: " + REF_HELP)
    p.add_argument("b", help="the version compared to: " + REF_HELP)
    p.set_defaults(func=cmd_compare)

    p = common(rsub.add_parser("promote", help="make a version the champion (deployed)",
                               description="Make a version the champion. With --expect-current N it changes "
                                           "nothing and exits 3 unless vN is still the champion, so two people "
                                           "promoting from the same view cannot both move it."))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("version", help=REF_HELP)
    p.add_argument("--reason", default="manual promotion", help="why, for the audit log")
    p.add_argument("--expect-current", type=int, default=None, metavar="N",
                   help="promote only if vN is the champion now (else exit 3, nothing changed)")
    p.set_defaults(func=cmd_promote)

    p = common(rsub.add_parser("rollback", help="undo the latest champion move (again: one more step back)",
                               description="Move the champion back to the one before it; each rollback goes one "
                                           "step further back through the champion history. With "
                                           "--expect-current N it changes nothing and exits 3 unless vN is still "
                                           "the champion, so a repeated or concurrent rollback is a conflict."))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--reason", default="manual rollback", help="why, for the audit log")
    p.add_argument("--expect-current", type=int, default=None, metavar="N",
                   help="roll back only if vN is the champion now (else exit 3, nothing changed)")
    p.set_defaults(func=cmd_rollback)

    p = common(rsub.add_parser("card", help="a version's model card (written again from its run with --refresh)"))
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("version", help=REF_HELP)
    p.add_argument("--refresh", action="store_true", help="rebuild it from the version's run and evaluation")
    p.set_defaults(func=cmd_card)

    p = common(rsub.add_parser("register", help="register an existing model artifact by hand"))
    p.add_argument("--model", required=True, help="registry model name (a new name starts a new model)")
    p.add_argument("--artifact", required=True, help="model.tar.gz (local path or s3://)")
    p.add_argument("--metrics", type=Path, required=True, help="JSON file of metrics")
    p.add_argument("--lineage", type=Path, default=None, help="optional JSON file of lineage")
    p.set_defaults(func=cmd_register)


def _registry(args: argparse.Namespace, create: bool = False) -> Any:
    from ..registry import Registry

    return Registry(store_of(args, create=create))


def _version(registry: Any, model: str, ref: str) -> Any:
    """The version ``ref`` (N, latest, deployed/champion, best:<metric>) of a registered ``model``."""
    return registry.resolve(known_model(registry, model), ref)


#: ``registry list`` metric columns: (metric, header), 5 characters each so the table fits 80 columns
#: (precision and recall are in ``registry show``).
LIST_METRICS = (("accuracy", "acc"), ("f1", "f1"), ("fpr", "fpr"), ("roc_auc", "auc"), ("pairwise_accuracy", "pair"))
SHORT_NAMES = {name: short for short, name in MODEL_ALIASES.items()}


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def versions_table(versions: list[dict]) -> Any:
    """The ``registry list`` table: short model names, version, status (+ smoke), aliases and the headline
    metrics; no timestamps (``registry show`` has them), so it stays whole at 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title="StreamGuard model registry", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    names = [SHORT_NAMES.get(v["model"], v["model"]) for v in versions]
    table.add_column("model", overflow="fold", min_width=min(11, max(map(len, names), default=5)))
    table.add_column("v", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=10)  # "registered smoke" wraps before anything folds
    table.add_column("aliases", overflow="fold", min_width=8)
    for _, header in LIST_METRICS:
        table.add_column(header, justify="right", no_wrap=True)
    for name, v in zip(names, versions):
        smoke = " smoke" if (v.get("lineage") or {}).get("smoke") else ""
        table.add_row(name, str(v["version"]), v["status"] + smoke,
                      ", ".join(v["aliases"]) or "-", *(_fmt(v["metrics"].get(m)) for m, _ in LIST_METRICS))
    if not versions:
        table.caption = "no versions registered yet"
    elif any(v["model"] in SHORT_NAMES for v in versions):
        table.caption = "models: " + ", ".join(f"{s} = {n}" for n, s in SHORT_NAMES.items()
                                               if any(v["model"] == n for v in versions))
    return table


def _console() -> Any:
    """Rich's console: the terminal's (or $COLUMNS') width, 200 columns into a file or pipe."""
    import os

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    model = known_model(registry, args.model) if args.model else None
    versions = [mv.to_dict() for mv in registry.list(model) if args.tag is None or args.tag in mv.tags]
    emit(args, versions, lambda vs: _console().print(versions_table(vs)))
    return 0


def _show(args: argparse.Namespace, ref: str) -> int:
    registry = _registry(args)
    mv = _version(registry, args.model, ref)
    card = registry.card_prefix(mv.model, mv.version) + "/model_card.md"
    doc = mv.to_dict()
    emit(args, doc, lambda d: print("\n".join(version_summary(d, registry.store.uri(card)
                                                              if registry.store.exists(card) else None))))
    return 0


HEADLINE = ("accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pairwise_accuracy")


def version_summary(d: dict[str, Any], card_uri: str | None) -> list[str]:
    """``registry show`` for a person: what the version is, how good, on what data, from where, and why
    it has its status (``--json`` keeps the whole document)."""
    from ..thresholds import DEFAULT_THRESHOLD

    lineage, metrics, op = d.get("lineage") or {}, d.get("metrics") or {}, d.get("operating_point") or {}
    test = metrics.get("test_data") if isinstance(metrics.get("test_data"), dict) else {}
    lines = [f"{d['model']} v{d['version']}: {d['status']}" + (f" ({', '.join(d['aliases'])})" if d["aliases"]
                                                                else ""),
             f"  created        {d.get('created_at', '-')}",
             f"  tags           {', '.join(d.get('tags') or []) or 'none'}",
             f"  smoke run      {_smoke(lineage)}",
             f"  threshold      {_fmt(op.get('threshold', DEFAULT_THRESHOLD))}" + (
                 f" (policy {op['policy']})" if op.get("policy") else
                 "" if op.get("threshold") is not None else " (the default: no operating point recorded)"),
             "  metrics        " + "  ".join(f"{k}={_fmt(metrics.get(k))}" for k in HEADLINE if k in metrics)
             if any(k in metrics for k in HEADLINE) else "  metrics        none recorded"]
    if test.get("statement"):
        lines.append(f"  test data      {test['statement']}")
    if test.get("content_hash"):
        lines.append(f"  test data hash {test['content_hash']}")
    lines += [f"  run            {lineage.get('run') or '-'}",
              f"  sources        {', '.join(map(str, lineage.get('sources') or [])) or lineage.get('source') or '-'}",
              f"  code version   {lineage.get('code_version') or '-'}"]
    reasons = (d.get("decision") or {}).get("reasons") or []
    lines += ["  decision       " + (reasons[0] if reasons else "none recorded")]
    lines += [f"                 {r}" for r in reasons[1:]]
    lines += [f"  artifact       {d.get('artifact_uri')}",
              f"  model card     {card_uri or 'not written yet: streamguard-ml registry card ' + d['model'] + ' ' + str(d['version'])}"]
    return lines


def _smoke(lineage: dict[str, Any]) -> str:
    if "smoke" not in lineage:
        return "not recorded"
    return "YES: a smoke run on a tiny sample, not for production" if lineage["smoke"] else "no"


def cmd_show(args: argparse.Namespace) -> int:
    return _show(args, args.version)


def cmd_best(args: argparse.Namespace) -> int:
    registry = _registry(args)
    mv = registry.best(known_model(registry, args.model), args.metric,
                       lower_is_better=args.metric in ("fpr", "loss"), data=args.data)
    return _show(args, str(mv.version))


def cmd_tag(args: argparse.Namespace) -> int:
    registry = _registry(args)
    mv = _version(registry, args.model, args.version)
    for tag in args.tags:
        mv = registry.tag(mv.model, mv.version, tag, remove=args.remove)
    emit(args, mv.to_dict(), lambda d: print(f"{d['model']} v{d['version']} tags: {', '.join(d['tags']) or 'none'}"))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    registry = _registry(args)
    events = registry.events(known_model(registry, args.model))
    emit(args, events, lambda es: print("\n".join(log_lines(es))))
    return 0


def log_lines(events: list[dict[str, Any]]) -> list[str]:
    """One line per audit-log entry: what happened to which version, and why."""
    lines = []
    for e in events:
        what = {"promoted": "champion", "rolled_back": "champion (rolled back)"}.get(e.get("event"))
        if what:
            previous = f" (was v{e['previous']})" if e.get("previous") is not None else ""
            text = f"v{e['version']} {what}{previous}"
        elif e.get("event") == "status":
            text = f"v{e['version']} {e.get('status')}"
        elif e.get("event") in ("tagged", "untagged"):
            text = f"v{e['version']} {e['event']} {e.get('tag')}"
        elif e.get("event") == "decision":
            decision = e.get("decision") or {}
            text = f"v{e['version']} gate: {'promote' if decision.get('promote') else 'keep the champion'}"
            e = {**e, "reason": "; ".join(decision.get("reasons") or [])}
        else:
            text = f"v{e.get('version')} {e.get('event')}"
        when = str(e.get("at") or "")[:19]
        reason = f": {e['reason']}" if e.get("reason") else ""
        lines.append(" ".join(x for x in (f"{e['seq']:>4}", when, text) if x) + reason)
    return lines or ["no entries"]


def cmd_compare(args: argparse.Namespace) -> int:
    registry = _registry(args)
    a, b = (_version(registry, args.model, ref).version for ref in (args.a, args.b))
    doc = registry.compare(known_model(registry, args.model), a, b)
    emit(args, doc, lambda d: print("\n".join(comparison_lines(d))))
    return 0


def comparison_lines(d: dict[str, Any]) -> list[str]:
    """``registry compare`` for a person: a WARNING first when the library says the two versions were not
    measured on comparable test data (``comparable`` False, ``why_not``), the basis of the deltas when they
    are paired numbers from the promotion gate, then the deltas."""
    lines = []
    metrics = d.get("metrics") or {}
    if d.get("comparable") is False:
        lines.append(f"WARNING: v{d['a']} and v{d['b']} are not comparable"
                     + (f": {d['why_not']}" if d.get("why_not") else "")
                     + ("; the deltas below do not say which is better" if metrics else ""))
    lines.append(f"{d['model']}: v{d['a']} -> v{d['b']}")
    if d.get("basis") == "gate":
        lines.append(f"  paired numbers: both versions scored by the promotion gate on "
                     f"{d.get('paired_on') or 'one test split'}")
    for k, v in metrics.items():
        delta = v.get("delta")
        shown = f"{delta:+.4f}" if isinstance(delta, (int, float)) else "no delta"
        lines.append(f"  {k:<20} {_fmt(v.get('a'), 4)} -> {_fmt(v.get('b'), 4)} ({shown})")
    if not metrics:
        lines.append("  no metric deltas")
    return lines


def cmd_promote(args: argparse.Namespace) -> int:
    from ..registry import ANY_CHAMPION

    registry = _registry(args)
    mv = _version(registry, args.model, args.version)
    expected = ANY_CHAMPION if args.expect_current is None else args.expect_current
    mv = _conflict_exits(args, lambda: registry.promote(mv.model, mv.version, args.reason, expected=expected))
    if mv is None:
        return EXIT_CONFLICT
    emit(args, mv.to_dict(), lambda d: print(f"{d['model']} v{d['version']} is now the champion"))
    return 0


#: Exit code of a registry change refused because the registry moved on (not bad input: 2).
EXIT_CONFLICT = 3


def _conflict_exits(args: argparse.Namespace, change: Callable[[], Any]) -> Any:
    """``change()``, or None after one line on stderr when the registry moved on (a conflict)."""
    from ..registry import RegistryConflict

    try:
        return change()
    except RegistryConflict as exc:
        print(f"streamguard-ml {args.command}: {exc}", file=sys.stderr)
        return None


def cmd_rollback(args: argparse.Namespace) -> int:
    registry = _registry(args)
    model = known_model(registry, args.model)
    mv = _conflict_exits(args, lambda: registry.rollback(model, args.reason, expected=args.expect_current))
    if mv is None:
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
    registry = _registry(args, create=True)
    mv = registry.register(MODEL_ALIASES.get(args.model, args.model), args.artifact, metrics, lineage=lineage)
    card = write_model_card(registry.store, registry.card_prefix(mv.model, mv.version), mv)
    emit(args, {**mv.to_dict(), "model_card": card["markdown"]},
         lambda d: print(f"registered {d['model']} v{d['version']} -> {d['artifact_uri']}"))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from ..config import MODEL_TYPE_OF
    from ..model_card import run_inputs, write_model_card

    registry = _registry(args)
    mv = _version(registry, args.model, args.version)
    prefix = registry.card_prefix(mv.model, mv.version)
    if args.refresh or not registry.store.exists(f"{prefix}/model_card.json"):
        run = mv.lineage.get("run")
        inputs = run_inputs(registry.store, run, MODEL_TYPE_OF[mv.model]) if run and mv.model in MODEL_TYPE_OF else {}
        write_model_card(registry.store, prefix, mv, **inputs)
    card = registry.store.read_json(f"{prefix}/model_card.json")
    card["markdown_uri"] = registry.store.uri(f"{prefix}/model_card.md")
    emit(args, card, lambda d: print(registry.store.read_bytes(f"{prefix}/model_card.md").decode()))
    return 0
