"""``streamguard-ml``: argument parsing and printing only; the work is in the library.

The global options ``--store`` (overrides ``STREAMGUARD_STORE``), ``--json`` (one JSON
document on stdout), ``-v/--verbose`` and ``-q/--quiet`` are accepted before the command
or after it (``streamguard-ml --store S registry list`` = ``streamguard-ml registry list
--store S``; given in both places, the one after the command wins).  Bad input exits
non-zero with a one-line reason.  Command groups live in sibling modules, each adding its
sub-parsers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

from ..layout import STORE_FOLDERS  # a non-empty directory with none of these is not a store
from ..store import LocalStore, Store, open_store


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


#: Exit status after stdout was closed by its reader (``streamguard-ml registry list | head -1``):
#: 128 + SIGPIPE, what a shell reports for any program a closed pipe ends, so a pipeline with
#: ``set -o pipefail`` still sees that the output was cut short.
EXIT_BROKEN_PIPE = 141

#: Commands that run for minutes: on a terminal they log progress (INFO: the epoch lines) by default.
LONG_RUNNING = frozenset({"ingest", "preprocess", "train", "evaluate"})


EPILOG = """\
--store, --json, -v and -q are accepted before the command or after it.

environment:
  STREAMGUARD_STORE  the default --store
  STREAMGUARD_LOG    log level of every logger (DEBUG, INFO, WARNING, ERROR); -v / -q win over it.
                     Without either, ingest, preprocess, train and evaluate log their progress (the
                     epoch lines) when stderr is a terminal; other commands log only warnings.

exit status: 0 done, 2 bad input (one line on stderr), 3 registry conflict (promote or rollback --expect-current),
  4 predict wrote its output but some inputs are error rows, 130 interrupted, 141 stdout closed early
  (piped into head: quietly, as a program ended by SIGPIPE)."""


def common(p: argparse.ArgumentParser, top: bool = False) -> argparse.ArgumentParser:
    """Add the global options to ``p``.  On a command's parser they default to SUPPRESS, so a value given
    before the command (on the top-level parser, ``top=True``, which holds the real defaults) survives."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    p.add_argument("--store", default=default(None),
                   help="artifact store: a local directory or s3://bucket/prefix (default: $STREAMGUARD_STORE or "
                        "~/.streamguard)")
    p.add_argument("--json", action="store_true", default=default(False), help="print one JSON document on stdout")
    p.add_argument("-v", "--verbose", action="count", default=default(0),
                   help="log progress on stderr (-vv: debug); the default on a terminal for long-running commands")
    p.add_argument("-q", "--quiet", action="store_true", default=default(False),
                   help="log only warnings and errors (no progress lines)")
    return p


def store_of(args: argparse.Namespace, create: bool = False) -> Store:
    """The store the arguments name.  Unless the command creates one (``create``: ingest, registry register,
    feedback add), a local store must exist and look like one: a mistyped ``--store`` is an error, not an
    empty registry."""
    store = open_store(args.store)
    if not create:
        check_store(store, args.store)
    return store


def check_store(store: Store, given: str | None) -> None:
    """UsageError when a local ``store`` does not exist or holds something else (S3 stores are checked by
    the first read: a missing bucket is already a one-line error)."""
    if not isinstance(store, LocalStore):
        return
    path = store.path
    source = "--store" if given else "$STREAMGUARD_STORE" if os.environ.get("STREAMGUARD_STORE") else "default store"
    fix = "pass the directory that `streamguard-ml ingest` or a training run wrote (--store DIR or $STREAMGUARD_STORE)"
    if not path.exists():
        raise UsageError(f"store {path} ({source}) does not exist: {fix}")
    if not path.is_dir():
        raise UsageError(f"store {path} ({source}) is not a directory: {fix}")
    entries = {p.name for p in path.iterdir() if not p.name.startswith(".")}
    if entries and not entries & set(STORE_FOLDERS):
        raise UsageError(f"{path} ({source}) holds no StreamGuard store (none of {', '.join(STORE_FOLDERS)}): {fix}")


def emit(args: argparse.Namespace, doc: Any, human: Callable[[Any], None] | None = None) -> None:
    if getattr(args, "json", False) or human is None:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        human(doc)


def build_parser() -> argparse.ArgumentParser:
    from . import data, models, monitoring, registry, runs, sagemaker, scan

    parser = argparse.ArgumentParser(prog="streamguard-ml", description="Train, judge and ship models that "
                                     "find vulnerable code.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed streamguard-ml version and exit")
    common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, models, scan, registry, runs, monitoring, sagemaker):
        module.register(sub)
    return parser


def package_version() -> str:
    """The installed distribution's version (``pip show streamguard-ml``), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamguard-ml")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def log_level(args: argparse.Namespace, stderr_is_tty: bool) -> str:
    """The level for StreamGuard's own loggers: -v / -q, else $STREAMGUARD_LOG, else INFO for a long-running
    command on a terminal (its progress), else WARNING."""
    if getattr(args, "verbose", 0):
        return "DEBUG" if args.verbose > 1 else "INFO"
    if getattr(args, "quiet", False):
        return "WARNING"
    if os.environ.get("STREAMGUARD_LOG"):
        return os.environ["STREAMGUARD_LOG"].upper()
    return "INFO" if stderr_is_tty and args.command in LONG_RUNNING else "WARNING"


def setup_logging(args: argparse.Namespace) -> None:
    """Everything logs at $STREAMGUARD_LOG (WARNING by default); StreamGuard's loggers at :func:`log_level`,
    so ``-v`` shows the training progress without the INFO chatter of every library."""
    root = os.environ.get("STREAMGUARD_LOG", "WARNING").upper()
    own = log_level(args, sys.stderr.isatty())
    for name, level in (("STREAMGUARD_LOG", root), ("level", own)):
        if not isinstance(logging.getLevelName(level), int):
            raise UsageError(f"{name} {level!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=root, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("streamguard_ml").setLevel(own)


def _silence_stdout() -> None:
    """After the reader closed stdout: point it at /dev/null, so the interpreter's final flush cannot
    raise again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and "--run" not in argv and any(a.startswith("--model-type") for a in argv):
        from ..train import main as train_main  # the SageMaker-contract entrypoint itself

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except (UsageError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"streamguard-ml {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
