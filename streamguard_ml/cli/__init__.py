"""``streamguard-ml``: argument parsing and printing only; the work is in the library.

Every command takes ``--store`` (overrides ``STREAMGUARD_STORE``) and ``--json``
(one JSON document on stdout), and exits non-zero with a one-line reason on bad
input.  Command groups live in sibling modules, each adding its sub-parsers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

from ..store import Store, open_store


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--store", default=None, help="artifact store (default: $STREAMGUARD_STORE or ~/.streamguard)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return p


def store_of(args: argparse.Namespace) -> Store:
    return open_store(args.store)


def emit(args: argparse.Namespace, doc: Any, human: Callable[[Any], None] | None = None) -> None:
    if getattr(args, "json", False) or human is None:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        human(doc)


def build_parser() -> argparse.ArgumentParser:
    from . import data, models, monitoring, registry, sagemaker

    parser = argparse.ArgumentParser(prog="streamguard-ml", description="Train, judge and ship models that "
                                     "find vulnerable code.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, models, registry, monitoring, sagemaker):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and "--run" not in argv and any(a.startswith("--model-type") for a in argv):
        from ..train import main as train_main  # the SageMaker-contract entrypoint itself

        return train_main(argv[1:])
    logging.basicConfig(level=os.environ.get("STREAMGUARD_LOG", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UsageError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"streamguard-ml {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
