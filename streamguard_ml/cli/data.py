"""Data commands: ``ingest``, ``preprocess``, ``graph``."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UsageError, common, emit, store_of


def register(sub: argparse._SubParsersAction) -> None:
    p = common(sub.add_parser("ingest", help="read raw samples into a run (validation, dedup, quarantine)"))
    p.add_argument("--source", action="append", required=True, metavar="KIND:PATH",
                   help="jsonl:FILE|DIR, sven:FILE|DIR, cvefixes:DB.sqlite, osv:DIR / ghsa:FILE (advisory "
                        "metadata), synthetic:COUNT (repeatable); local paths or s3://")
    p.add_argument("--out", required=True, metavar="RUN", help="run name")
    p.set_defaults(func=cmd_ingest)

    p = common(sub.add_parser("preprocess", help="graphs, tokens, augmentation and grouped splits for a run"))
    p.add_argument("--run", required=True, help="an ingested run (`streamguard-ml ingest --out RUN`)")
    p.add_argument("--base-model", default=None, help="tokenizer to use (default: the embedded MiniLM)")
    p.add_argument("--shard-size", type=int, default=None, help="samples per preprocessing shard (default: config)")
    p.add_argument("--seed", type=int, default=None, help="seed of the split and augmentation (default: config)")
    p.add_argument("--augment-copies", type=int, default=None,
                   help="augmented copies per training sample (default: config)")
    p.add_argument("--workers", type=int, default=None, help="worker threads building graphs and tokens (default: CPU count)")
    p.set_defaults(func=cmd_preprocess)

    p = common(sub.add_parser("graph", help="print the program graph the GNN sees for a Python file"))
    p.add_argument("file", type=Path, help="a Python source file")
    p.set_defaults(func=cmd_graph)


def config_from(args: argparse.Namespace, **extra: object):
    from ..config import PipelineConfig

    values = {k: getattr(args, k, None) for k in ("base_model", "shard_size", "seed", "augment_copies")}
    return PipelineConfig.from_mapping({**values, **extra})


def cmd_ingest(args: argparse.Namespace) -> int:
    from ..ingest import ingest

    cfg = config_from(args, sources=args.source)
    report = ingest(store_of(args, create=True), args.out, cfg.sources, cfg.limits)

    def human(r: dict) -> None:
        print(f"run {r['run']}: accepted {r['accepted']}, quarantined {r['quarantined']} "
              f"{r['quarantine_reasons'] or ''}\nquarantine file: {r['quarantine_file']}")

    emit(args, report, human)
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .. import layout
    from ..preprocess import preprocess

    store = store_of(args)
    if not store.exists(layout.ingested(args.run)):
        raise UsageError(f"run {args.run!r} has no ingested samples in {store.root}: run `streamguard-ml ingest` first")
    result = preprocess(store, args.run, config_from(args), workers=args.workers)

    def human(r: dict) -> None:
        print(f"run {r['run']}: {r['splits']}\nmanifest: {r['manifest']}\ndataset card: {r['dataset_card']}")

    emit(args, result, human)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ..graphs import build_graph, first_error_line

    if not args.file.is_file():
        raise UsageError(f"{args.file} is not a file")
    code = args.file.read_text(encoding="utf-8")
    graph = build_graph(code).to_json()
    error = first_error_line(code)
    if error is not None:
        graph["warning"] = f"syntax error near line {error}; the graph covers what tree-sitter recovered"

    def human(g: dict) -> None:
        from collections import Counter

        marked = [n for n in g["nodes"] if n["marks"]]
        print(f"{len(g['nodes'])} nodes, edges {dict(Counter(e['type'] for e in g['edges']))}")
        for n in marked:
            print(f"  line {n['start_line']:>4}  {n['type']:<12} {','.join(n['marks'])}")

    emit(args, graph, human)
    return 0

