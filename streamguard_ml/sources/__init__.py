"""Source connectors: one module per input format.

A source is named on the command line and in DAG Params as ``KIND:PATH`` (for
``synthetic`` the "path" is a count); every PATH may be local or ``s3://``.
Each connector yields raw records (dicts in the raw-record shape of
``interfaces.md`` plus ``_source`` / ``_line`` provenance) or
:class:`~streamguard_ml.records.Rejected` items: a connector never drops an
input silently.  *Metadata* kinds (``osv``, ``ghsa``) yield no samples: they
are loaded into an :class:`~.advisories.AdvisoryIndex` that enriches the
records of the other sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..records import Rejected

if TYPE_CHECKING:
    from .advisories import AdvisoryIndex

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


def _cvefixes(path: str) -> Iterator[dict | Rejected]:
    from .cvefixes import read_cvefixes

    return read_cvefixes(path)


CONNECTORS: dict[str, Callable[[str], Iterator[dict | Rejected]]] = {
    "jsonl": _jsonl,
    "sven": _sven,
    "synthetic": _synthetic,
    "feedback": _feedback,
    "cvefixes": _cvefixes,
}
#: Kinds that carry CVE → CWE / severity metadata instead of samples.
METADATA_KINDS = ("osv", "ghsa")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:PATH``; a bare path ending in .jsonl means ``jsonl``."""
    kind, sep, path = spec.partition(":")
    if not sep or (kind not in CONNECTORS and kind not in METADATA_KINDS):
        if spec.endswith((".jsonl", ".jsonl.gz")) and kind not in CONNECTORS:
            return "jsonl", spec
        known = ", ".join(sorted([*CONNECTORS, *METADATA_KINDS]))
        raise ValueError(f"source {spec!r}: write it as KIND:PATH with KIND one of {known}")
    if not path:
        raise ValueError(f"source {spec!r} has no path (or count) after '{kind}:'")
    return kind, path


def read_source(spec: str) -> Iterator[dict | Rejected]:
    """Iterate one sample source given as ``KIND:PATH``."""
    kind, path = parse_spec(spec)
    if kind in METADATA_KINDS:
        raise ValueError(f"source {spec!r} holds advisories, not samples: give it together with sample "
                         "sources (e.g. cvefixes:PATH or sven:PATH) so its metadata is joined onto them")
    return CONNECTORS[kind](path)


def split_specs(specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(sample sources, metadata sources), each validated."""
    samples, metadata = [], []
    for spec in specs:
        (metadata if parse_spec(spec)[0] in METADATA_KINDS else samples).append(spec)
    return samples, metadata


def load_advisories(specs: Sequence[str]) -> "AdvisoryIndex":
    """One index over every metadata source."""
    from .advisories import AdvisoryIndex, read_advisories

    index = AdvisoryIndex()
    for spec in specs:
        read_advisories(parse_spec(spec)[1], index)
    return index
