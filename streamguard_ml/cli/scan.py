"""``streamguard-ml scan PATH``: a repository's findings as SARIF, JSON or a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import UsageError, common, package_version
from .models import add_limits, add_model_ref, add_threshold, limits_of, resolve_version

#: Exit status of ``scan --fail-on-findings`` when something was flagged (a CI gate).
EXIT_FINDINGS = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = common(sub.add_parser(
        "scan", help="scan a directory or git checkout: every function scored, findings as SARIF, JSON or a table",
        description="Score every function, method and the module-level code of every .py file under PATH "
                    "(.gitignore honoured; virtualenvs, build and hidden folders skipped) with a registered "
                    "model at its own decision threshold. Files and functions that cannot be scanned are "
                    "listed (SARIF toolExecutionNotifications), never skipped silently."))
    p.add_argument("path", type=Path, help="a directory, git checkout or .py file")
    add_model_ref(p)
    add_threshold(p)
    p.add_argument("--format", choices=["sarif", "json", "table"], default=None,
                   help="output format (default: table on a terminal, else sarif; --json means json)")
    p.add_argument("--output", type=Path, default=None, help="write the report here (default: stdout)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip paths matching this gitignore-style glob (relative to PATH); repeatable")
    p.add_argument("--fail-on-findings", action="store_true", help="exit 1 when anything is flagged (for CI gates)")
    p.add_argument("--explain", choices=["ig", "attention"], default="attention",
                   help="how a finding's lines are found: attention (GNN pooling weights, default: one forward "
                        "pass) or ig (Integrated Gradients: better localisation, ~50x slower); the transformer "
                        "always uses ig")
    p.add_argument("--top-lines", type=int, default=3, metavar="N", help="explanation lines per finding (default 3)")
    p.add_argument("--max-file-bytes", type=int, default=None, metavar="N",
                   help="files larger than this are reported, not read (default 2,000,000)")
    add_limits(p)
    p.set_defaults(func=cmd_scan)


def options_of(args: argparse.Namespace) -> Any:
    from ..scan import MAX_FILE_BYTES, ScanOptions

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold {args.threshold}: give a probability between 0 and 1")
    if args.top_lines < 1:
        raise UsageError(f"--top-lines {args.top_lines}: give at least 1")
    return ScanOptions(excludes=tuple(args.exclude), threshold=args.threshold,
                       max_file_bytes=args.max_file_bytes or MAX_FILE_BYTES, limits=limits_of(args),
                       top_lines=args.top_lines, explain=args.explain)


def cmd_scan(args: argparse.Namespace) -> int:
    from ..inference import LoadedModel
    from ..scan import ScanError, scan, source_files

    options = options_of(args)
    fmt = args.format or ("json" if args.json else "table" if args.output is None and sys.stdout.isatty() else "sarif")
    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist: give a directory, a git checkout or a .py file")
    mv = resolve_version(args)
    with tempfile.TemporaryDirectory() as tmp:
        model = LoadedModel.from_uri(mv.artifact_uri, Path(tmp))
        try:
            files = source_files(args.path, options.excludes)
            with _progress(len(files)) as advance:
                result = scan(args.path, model, mv.model, mv.version, options, progress=advance, files=files)
        except ScanError as exc:
            raise UsageError(str(exc)) from None
    _write(render(result, fmt), args.output)
    print(f"streamguard-ml scan: {result.summary_line()}" + (f" -> {args.output}" if args.output else ""),
          file=sys.stderr)
    return EXIT_FINDINGS if args.fail_on_findings and result.findings else 0


def render(result: Any, fmt: str) -> str:
    from ..sarif import to_sarif

    if fmt == "sarif":
        return json.dumps(to_sarif(result, package_version()), indent=2) + "\n"
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2) + "\n"
    return findings_table(result)


def findings_table(result: Any) -> str:
    from io import StringIO

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(result.findings)} findings", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, kw in (("score", {"justify": "right"}), ("class", {}), ("where", {"overflow": "fold"}),
                     ("line", {"justify": "right"}), ("code", {"overflow": "ellipsis", "no_wrap": True})):
        table.add_column(name, **kw)
    for f in sorted(result.findings, key=lambda f: -f.score):
        top = f.top_lines[0] if f.top_lines else {"line": f.start_line, "text": ""}
        table.add_row(f"{f.score:.3f}", f.rule_id.split("/", 1)[1], f"{f.path}:{f.function}", str(top["line"]),
                      top["text"])
    out = StringIO()
    Console(file=out, width=max(80, _columns()), force_terminal=False).print(table)
    for n in result.notifications:
        out.write(f"not scanned: {n.path}" + (f":{n.function}" if n.function else "")
                  + (f" line {n.line}" if n.line else "") + f" ({n.reason}): {n.detail}\n")
    return out.getvalue()


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80


def _write(text: str, output: Path | None) -> None:
    """To stdout, or to ``output`` through a temporary file renamed when complete (never half-written)."""
    if output is None:
        sys.stdout.write(text)
        return
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


class _progress:
    """A progress bar over files on a terminal (stderr); nothing otherwise."""

    def __init__(self, total: int):
        self.total, self.bar = total, None

    def __enter__(self) -> Any:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="file", desc="scanning", file=sys.stderr, leave=False)
        return self.advance

    def advance(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
