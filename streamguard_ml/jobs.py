"""Watching SageMaker training jobs: recent jobs with their last metrics, and their CloudWatch logs.

What ``streamguard-ml jobs`` shows.  Metrics come from the job description's
``FinalMetricDataList`` (SageMaker fills it when a job ends) and, for whatever
is missing there — every metric of a running job — from the newest epoch line
in the job's log, parsed with the same regexes as the job's metric definitions.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from .sagemaker import LOG_GROUP
from .train import METRIC_REGEXES

#: How far back in a job's log to look for its latest epoch line.
METRIC_LOG_EVENTS = 50


def recent_jobs(sagemaker: Any, logs: Any | None = None, max_results: int = 10, name_contains: str | None = None,
                status: str | None = None) -> list[dict[str, Any]]:
    """The newest training jobs first, one JSON-able row each."""
    query: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": max_results}
    if name_contains:
        query["NameContains"] = name_contains
    if status:
        query["StatusEquals"] = status
    summaries = sagemaker.list_training_jobs(**query)["TrainingJobSummaries"]
    return [job_row(sagemaker.describe_training_job(TrainingJobName=s["TrainingJobName"]), logs)
            for s in summaries]


def job_row(description: dict[str, Any], logs: Any | None = None) -> dict[str, Any]:
    """Status, instances, running time and last metrics of one described job."""
    resources = description.get("ResourceConfig", {})
    created = description.get("CreationTime")
    started = description.get("TrainingStartTime") or created
    seconds = description.get("TrainingTimeInSeconds")
    if seconds is None and started is not None:  # still running: time so far
        end = description.get("TrainingEndTime") or datetime.now(timezone.utc)
        seconds = int((end - started).total_seconds())
    return {
        "name": description["TrainingJobName"],
        "status": description["TrainingJobStatus"],
        "secondary_status": description.get("SecondaryStatus"),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "spot": bool(description.get("EnableManagedSpotTraining")),
        "created": created.isoformat() if created else None,
        "seconds": seconds,
        "metrics": last_metrics(description, logs),
        "model_artifacts": description.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "failure_reason": description.get("FailureReason"),
    }


def last_metrics(description: dict[str, Any], logs: Any | None = None) -> dict[str, float]:
    metrics = {m["MetricName"]: float(m["Value"]) for m in description.get("FinalMetricDataList") or []}
    if logs is not None and not set(METRIC_REGEXES) <= set(metrics):
        parsed = metrics_from_lines(m["message"] for m in tail_events(logs, description["TrainingJobName"],
                                                                      METRIC_LOG_EVENTS))
        metrics = {**parsed, **metrics}
    return metrics


def metrics_from_lines(lines: Any) -> dict[str, float]:
    """The latest value of each metric in these log lines (what SageMaker's metric definitions extract)."""
    found: dict[str, float] = {}
    for line in lines:
        for name, regex in METRIC_REGEXES.items():
            if m := re.search(regex, line):
                found[name] = float(m.group(1))
    return found


def log_streams(logs: Any, job: str) -> list[str]:
    """The job's streams, one per host (``<job>/algo-1-<epoch>``...)."""
    from botocore.exceptions import ClientError

    try:
        pages = logs.get_paginator("describe_log_streams").paginate(logGroupName=LOG_GROUP,
                                                                     logStreamNamePrefix=f"{job}/")
        return sorted(s["logStreamName"] for page in pages for s in page["logStreams"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        raise


def tail_events(logs: Any, job: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` events of the job's log across its streams, oldest first."""
    events = [dict(e, stream=stream) for stream in log_streams(logs, job)
              for e in logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, limit=limit,
                                           startFromHead=False)["events"]]
    return sorted(events, key=lambda e: e["timestamp"])[-limit:]


def follow_events(logs: Any, job: str, sagemaker: Any, interval: float = 5.0) -> Iterator[dict[str, Any]]:
    """The job's whole log from the start, then new events as they arrive, until the job has ended."""
    tokens: dict[str, str] = {}
    while True:
        ended = sagemaker.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] not in ("InProgress",
                                                                                                   "Stopping")
        for stream in log_streams(logs, job):
            while True:
                where = {"nextToken": tokens[stream]} if stream in tokens else {"startFromHead": True}
                page = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, **where)
                yield from (dict(e, stream=stream) for e in page["events"])
                if not page["events"] or page["nextForwardToken"] == tokens.get(stream):
                    tokens[stream] = page["nextForwardToken"]
                    break
                tokens[stream] = page["nextForwardToken"]
        if ended:
            return
        time.sleep(interval)
