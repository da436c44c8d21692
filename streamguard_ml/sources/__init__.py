"""Source connectors: one module per input format.

A source is named on the command line and in DAG Params as ``KIND:PATH`` (for
``synthetic`` the "path" is a count).  Each connector yields raw records (dicts
in the raw-record shape of ``interfaces.md`` plus ``_source`` / ``_line``
provenance) or :class:`~streamguard_ml.records.Rejected` items: a connector never
drops an input silently.
"""

from __future__ import annotations

from typing import Callable, Iterator

from ..records import Rejected

RawItem = "dict | Rejected"


def _jsonl(path: str) -> Iterator[dict | Rejected]:
    from .jsonl import read_jsonl

    return read_jsonl(path)


def _sven(path: str) -> Iterator[dict | Rejected]:
    from .sven import read_sven

    return read_sven(path)


def _feedback(path: str) -> Iterator[dict | Rejected]:
    from .feedback import read_feedback

    return read_feedback(path)


def _synthetic(count: str) -> Iterator[dict | Rejected]:
    from .synthetic import generate_records

    n, _, seed = count.partition("@")
    if not n.isdigit():
        raise ValueError(f"synthetic:{count}: give a sample count, e.g. synthetic:1200 or synthetic:1200@7")
    return iter(generate_records(int(n), seed=int(seed) if seed else 13))


CONNECTORS: dict[str, Callable[[str], Iterator[dict | Rejected]]] = {
    "jsonl": _jsonl,
    "sven": _sven,
    "synthetic": _synthetic,
    "feedback": _feedback,
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:PATH``; a bare path ending in .jsonl means ``jsonl``."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in CONNECTORS:
        if spec.endswith((".jsonl", ".jsonl.gz")) and kind not in CONNECTORS:
            return "jsonl", spec
        known = ", ".join(sorted(CONNECTORS))
        raise ValueError(f"source {spec!r}: write it as KIND:PATH with KIND one of {known}")
    if not path:
        raise ValueError(f"source {spec!r} has no path (or count) after '{kind}:'")
    return kind, path


def read_source(spec: str) -> Iterator[dict | Rejected]:
    """Iterate one source given as ``KIND:PATH``."""
    kind, path = parse_spec(spec)
    return CONNECTORS[kind](path)
