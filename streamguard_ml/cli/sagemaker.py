"""SageMaker commands: ``sagemaker config`` (the request the DAG sends), ``jobs`` and ``jobs logs``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Iterator

from . import UsageError, common, emit, store_of

#: The CLI reads the role from the same place Airflow reads the Variable from the environment.
ROLE_ENV = "AIRFLOW_VAR_STREAMGUARD_SAGEMAKER_ROLE_ARN"


def register(sub: argparse._SubParsersAction) -> None:
    sm = sub.add_parser("sagemaker", help="SageMaker training jobs")
    smsub = sm.add_subparsers(dest="sagemaker_command", required=True, metavar="ACTION")
    p = common(smsub.add_parser("config", help="the CreateTrainingJob request the DAG hands to "
                                "SageMakerTrainingOperator for a preprocessed run (validated, nothing sent)"))
    p.add_argument("--run", required=True, help="a preprocessed run (DAG run id or CLI run name)")
    p.add_argument("--model-type", choices=["gnn", "transformer"], required=True, help="the model the job trains")
    p.add_argument("--role-arn", default=os.environ.get(ROLE_ENV, ""),
                   help=f"SageMaker execution role (default: ${ROLE_ENV}, the DAG's Variable)")
    p.add_argument("--region", default=None, help="default: sagemaker.region, else boto3's region")
    p.add_argument("--settings", default="{}",
                   help='SageMaker settings as JSON, the DAG\'s "sagemaker" Param, e.g. \'{"instance_count": 2}\'')
    p.add_argument("--epochs", type=int, default=None, help="default: the config's gnn_epochs / transformer_epochs")
    p.add_argument("--base-model", default=None, help="transformer encoder (default: the run's tokenizer)")
    p.add_argument("--fine-tune-from", default=None, help="model.tar.gz URI to start from (the init channel)")
    p.set_defaults(func=cmd_config)

    jobs = common(sub.add_parser("jobs", help="recent SageMaker training jobs: status, instances, time, "
                                 "last metrics (`jobs logs NAME` for a job's CloudWatch log)"))
    add_aws(jobs)
    jobs.add_argument("--max-results", type=int, default=10, help="newest N jobs (default 10)")
    jobs.add_argument("--name-contains", default=None, help="e.g. sg- for this pipeline's jobs")
    jobs.add_argument("--status", default=None, choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"],
                      help="only jobs in this state")
    jobs.add_argument("--watch", action="store_true", help="refresh the table until Ctrl-C")
    jobs.add_argument("--interval", type=float, default=30.0, help="seconds between refreshes with --watch")
    jobs.add_argument("--iterations", type=int, default=0, help="with --watch: stop after N refreshes (0: never)")
    jobs.set_defaults(func=cmd_jobs)
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    p = common(jsub.add_parser("logs", help="a training job's CloudWatch log"))
    add_aws(p)
    p.add_argument("name", help="training job name")
    p.add_argument("--limit", type=int, default=100, help="last N lines (without --follow)")
    p.add_argument("--follow", action="store_true", help="print the whole log and follow it until the job ends")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls with --follow (default 5)")
    p.set_defaults(func=cmd_logs)


def add_aws(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default=None, help="default: boto3's (AWS_DEFAULT_REGION); AWS_ENDPOINT_URL is honoured")


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """botocore's errors (no credentials, unreachable endpoint, access denied) as one-line usage errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(f"AWS: {exc}") from None


def _clients(args: argparse.Namespace) -> tuple[Any, Any]:
    import boto3

    session = boto3.session.Session(region_name=args.region)
    if not session.region_name:
        raise UsageError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    return session.client("sagemaker"), session.client("logs")


def cmd_config(args: argparse.Namespace) -> int:
    import boto3

    from ..config import PipelineConfig
    from ..sagemaker import prepare_training_job
    from .models import _dataset_info

    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--settings is not JSON ({exc}): e.g. '{{\"instance_count\": 2}}'") from None
    store = store_of(args)
    dataset = _dataset_info(store, args.run)
    values: dict[str, Any] = {"base_model": args.base_model or dataset["base_model"], "sagemaker": settings,
                              "training_backend": "sagemaker"}
    if args.epochs:
        values["gnn_epochs" if args.model_type == "gnn" else "transformer_epochs"] = args.epochs
    cfg = PipelineConfig.from_mapping(values)
    region = args.region or cfg.sagemaker.region or boto3.session.Session().region_name or ""
    request = prepare_training_job(store, args.run, args.model_type, cfg, dataset["content_hash"], args.role_arn,
                                   region, init_uri=args.fine_tune_from)
    emit(args, request)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from ..jobs import recent_jobs

    sagemaker, logs = _clients(args)

    def rows() -> list[dict[str, Any]]:
        return recent_jobs(sagemaker, logs, args.max_results, args.name_contains, args.status)

    if not args.watch:
        with aws_errors():
            console = _console()
            emit(args, rows(), lambda r: console.print(jobs_table(r, console.width)))
        return 0
    from rich.live import Live

    count = 0
    console = _console()
    with aws_errors(), Live(jobs_table(rows(), console.width), console=console, auto_refresh=False) as live:
        try:
            while not args.iterations or (count := count + 1) < args.iterations:
                time.sleep(args.interval)
                live.update(jobs_table(rows(), console.width), refresh=True)
        except KeyboardInterrupt:
            pass
    return 0


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


STATUS_STYLE = {"InProgress": "yellow", "Completed": "green", "Failed": "red", "Stopped": "red", "Stopping": "yellow"}
#: The last epoch's metrics shown (all are in --json), short headers and 3 decimals: with the job name
#: folding, the table stays whole at 80 columns.
SHOWN_METRICS = ("train:loss", "validation:accuracy", "validation:f1")
METRIC_HEADERS = ("loss", "val acc", "val f1")


def jobs_table(rows: list[dict[str, Any]], width: int = 160) -> Any:
    """The jobs as a table for a console ``width`` wide: below 120 columns the job name, status and
    instances fold within fixed widths (wider, a job name stays whole, to copy into ``jobs logs``)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"SageMaker training jobs ({time.strftime('%H:%M:%S')})", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1, 0, 0))
    narrow = width < 120
    table.add_column("job", overflow="fold", max_width=22 if narrow else None)
    table.add_column("status", overflow="fold", max_width=12 if narrow else None)
    table.add_column("instances", overflow="fold", max_width=12 if narrow else None)
    table.add_column("time", no_wrap=True, justify="right")
    for header in METRIC_HEADERS:
        table.add_column(header, no_wrap=True, justify="right")
    for r in rows:
        seconds = r["seconds"] or 0
        status = r["status"] + (f" ({r['secondary_status']})" if r["secondary_status"] not in (None, r["status"])
                                else "")
        instance = f"{r['instance_count']} x {str(r['instance_type']).removeprefix('ml.')}" + (" spot" if r["spot"]
                                                                                             else "")
        metrics = [f"{r['metrics'][m]:.3f}" if m in r["metrics"] else "-" for m in SHOWN_METRICS]
        table.add_row(r["name"], f"[{STATUS_STYLE.get(r['status'], 'white')}]{status}[/]", instance,
                      f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s", *metrics)
    if not rows:
        table.caption = "no training jobs"
    return table


def cmd_logs(args: argparse.Namespace) -> int:
    from ..jobs import follow_events, tail_events

    sagemaker, logs = _clients(args)
    with aws_errors():
        sagemaker.describe_training_job(TrainingJobName=args.name)  # a clear error for a wrong name
        events = follow_events(logs, args.name, sagemaker, args.interval) if args.follow else \
            tail_events(logs, args.name, args.limit)
        if args.json:
            emit(args, [{"stream": e["stream"], "timestamp": e["timestamp"], "message": e["message"]}
                        for e in events])
            return 0
        for e in events:
            print(f"[{e['stream'].rsplit('/', 1)[-1]}] {e['message']}", flush=True)
    return 0
