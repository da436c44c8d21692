"""``feedback add``, ``feedback import`` and ``drift check``: the retraining loop from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import UsageError, common, emit, store_of


def register(sub: argparse._SubParsersAction) -> None:
    fb = sub.add_parser("feedback", help="analyst verdicts on predictions")
    fsub = fb.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")
    p = common(fsub.add_parser("add", help="validate a JSONL file of verdicts and append it to the store"))
    p.add_argument("file", type=Path, help="JSONL file of analyst verdicts, one record per line (README: feedback)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="append the valid records and set the invalid ones aside (default: reject the file)")
    p.set_defaults(func=cmd_feedback_add)
    p = common(fsub.add_parser(
        "import", help="import analyst verdicts from a SARIF log with suppressions or a GitHub code-scanning alert "
                       "export, matched to the stored scans",
        description="Read the verdicts of a SARIF 2.1.0 log (result suppressions) or of a GitHub code-scanning "
                    "alert export (dismissed / fixed alerts), match each to the function and model version of a "
                    "scan saved in the store, and append them as feedback. Entries without a verdict, unmatched "
                    "and malformed ones are listed with a reason and written to feedback/rejected/. Exit 0 when "
                    "something was imported or the file held no verdicts; 2 when it held verdicts and none could "
                    "be imported."))
    p.add_argument("file", type=Path, help="a SARIF log (`scan --format sarif`, suppressions added by analysts) or "
                                           "the JSON of `gh api repos/OWNER/REPO/code-scanning/alerts --paginate`")
    p.set_defaults(func=cmd_feedback_import)

    from ..config import Thresholds

    dr = sub.add_parser("drift", help="the retraining decision")
    dsub = dr.add_subparsers(dest="drift_command", required=True, metavar="ACTION")
    p = common(dsub.add_parser("check", help="would the monitor retrain now, and why"))
    d = Thresholds()
    p.add_argument("--feedback-count", type=int, default=None,
                   help=f"retrain after this many new verdicts (default {d.feedback_count})")
    p.add_argument("--accuracy-drop", type=float, default=None,
                   help=f"retrain when accuracy on feedback falls this much below the champion's (default "
                        f"{d.accuracy_drop})")
    p.add_argument("--fpr-rise", type=float, default=None,
                   help=f"retrain when the false-positive rate on feedback rises this much (default {d.fpr_rise})")
    p.add_argument("--psi", type=float, default=None,
                   help=f"retrain when score drift (PSI) exceeds this (default {d.psi})")
    p.add_argument("--max-days", type=int, default=None,
                   help=f"retrain when the champion is older than this many days (default {d.max_days})")
    p.add_argument("--min-feedback-for-rates", type=int, default=None,
                   help=f"verdicts needed before the accuracy and FPR criteria count (default "
                        f"{d.min_feedback_for_rates})")
    p.add_argument("--force", action="store_true", help="as the monitor's force_retrain Param")
    p.set_defaults(func=cmd_drift_check)


def cmd_feedback_add(args: argparse.Namespace) -> int:
    from ..feedback import add_file

    if not args.file.is_file():
        raise UsageError(f"{args.file} does not exist")
    result = add_file(store_of(args, create=True), args.file.read_bytes(), str(args.file), skip_invalid=args.skip_invalid)
    emit(args, result, lambda r: print(f"{r['accepted']} verdicts stored ({r['rejected']} set aside) in "
                                       f"{len(r['partitions'])} partition(s)"))
    return 0


def cmd_feedback_import(args: argparse.Namespace) -> int:
    """Exit 0 when verdicts were stored or the file held none (all open / unsuppressed); 2 when it held
    verdicts and none could be matched or read (the summary is still printed, the reasons stored)."""
    import sys

    from ..verdicts import NO_VERDICT, import_file

    if not args.file.is_file():
        raise UsageError(f"{args.file} does not exist")
    result = import_file(store_of(args, create=True), args.file.read_bytes(), str(args.file))

    def human(r: dict) -> None:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(r["verdicts"].items())) or "none"
        print(f"{r['imported']} of {r['entries']} entries imported from {r['format']} ({verdicts}); "
              f"{r['skipped']} without a verdict, {r['rejected']} rejected")
        for e in r["set_aside"]:
            print(f"  {'skipped' if e['reason'] == NO_VERDICT else e['reason']}: {e['entry']}: {e['detail']}")
        if r["rejected_file"]:
            print(f"set-aside entries: {r['rejected_file']}")

    emit(args, result, human)
    if not result["imported"] and result["rejected"]:
        print(f"streamguard-ml feedback: {args.file}: none of its {result['rejected']} verdict(s) could be imported "
              f"(reasons above and in {result['rejected_file']})", file=sys.stderr)
        return 2
    return 0


def cmd_drift_check(args: argparse.Namespace) -> int:
    from ..drift import Thresholds, check

    names = ("feedback_count", "accuracy_drop", "fpr_rise", "psi", "max_days", "min_feedback_for_rates")
    decision = check(store_of(args), Thresholds.from_mapping({n: getattr(args, n) for n in names}), force=args.force)

    def human(d: dict) -> None:
        print("RETRAIN" if d["should_retrain"] else "no retraining needed")
        for c in d["criteria"]:
            print(f"  [{'x' if c['held'] else ' '}] {c['model']}: {c['name']}: {c['detail']}")

    emit(args, decision, human)
    return 0
