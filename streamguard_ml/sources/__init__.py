"""Source connectors: one module per input format.

A source is named on the command line and in DAG Params as ``KIND:PATH`` (for
``synthetic`` the "path" is a count); every PATH may be local or ``s3://``.
Each connector yields raw records (dicts in the raw-record shape of
``interfaces.md`` plus ``_source`` / ``_line`` provenance) or
:class:`~streamguard_ml.records.Rejected` items: a connector never drops an
input silently.  *Metadata* kinds (``osv``, ``ghsa``) yield no samples: they
are loaded into an :class:`~.advisories.AdvisoryIndex` that enriches the
records of the other sources.

**Where sources may be read from** is the deployment's setting ``STREAMGUARD_SOURCE_ROOTS``
(an environment variable, comma-separated; see :mod:`streamguard_ml.config`): folders and URI prefixes (``s3://bucket/prefix``; ``s3://`` alone:
any bucket).  Empty (the laptop default) means anywhere.  Set, every path is checked
here, where a spec is resolved and before anything is read (:func:`check_source`): a
local path after resolving ``~``, ``..`` and symbolic links, a URI by whole path
segments and never with ``..`` in it.  The deployment's store (``STREAMGUARD_STORE``)
is always allowed: the retraining monitor passes feedback batches from it.
``synthetic`` reads no path.  A run cannot change the setting: it is no
``PipelineConfig`` field, so no Param or ``dag_run.conf`` key can name it.  Links *inside* an allowed
folder are the operator's: files found below a folder are not checked one by one.

A file that is not what its kind says (not JSON lines, not SQLite) is a
:class:`SourceError` (or the connector's own error) for the whole source; a bad
*record* inside a good file is a quarantine entry.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..records import Rejected

if TYPE_CHECKING:
    from .advisories import AdvisoryIndex

RawItem = "dict | Rejected"


class SourceError(ValueError):
    """A source as a whole cannot be read (refused path, wrong kind of file); the message names it."""


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


def check_source(spec: str, roots: Sequence[str] | None = None) -> tuple[str, str]:
    """``(kind, path)`` of ``spec`` if the source path policy lets it be read, else SourceError.

    ``roots`` defaults to the deployment's (``STREAMGUARD_SOURCE_ROOTS``).
    """
    from ..config import SOURCE_ROOTS_ENV, default_store, deployment_roots, is_uri, local_path, within

    kind, path = parse_spec(spec)
    roots = deployment_roots(SOURCE_ROOTS_ENV) if roots is None else tuple(roots)
    if not roots or kind == "synthetic" or any(within(path, root) for root in (*roots, default_store())):
        return kind, path
    shown = path if is_uri(path) or local_path(path) == path else f"{path} (that is {local_path(path)})"
    raise SourceError(f"source {spec!r}: {shown} is outside the allowed source roots {list(roots)} and the "
                      f"store (the deployment setting {SOURCE_ROOTS_ENV}): move the data under one of "
                      f"them, or have the operator add its folder or prefix to {SOURCE_ROOTS_ENV}")


def read_source(spec: str, roots: Sequence[str] | None = None) -> Iterator[dict | Rejected]:
    """Iterate one sample source given as ``KIND:PATH`` (checked against ``roots``, see :func:`check_source`)."""
    kind, path = check_source(spec, roots)
    if kind in METADATA_KINDS:
        raise ValueError(f"source {spec!r} holds advisories, not samples: give it together with sample "
                         "sources (e.g. cvefixes:PATH or sven:PATH) so its metadata is joined onto them")
    return CONNECTORS[kind](path)


def split_specs(specs: Sequence[str], roots: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(sample sources, metadata sources), each validated and checked against the source path policy."""
    samples, metadata = [], []
    for spec in specs:
        (metadata if check_source(spec, roots)[0] in METADATA_KINDS else samples).append(spec)
    return samples, metadata


def load_advisories(specs: Sequence[str], roots: Sequence[str] | None = None) -> "AdvisoryIndex":
    """One index over every metadata source."""
    from .advisories import AdvisoryIndex, read_advisories

    index = AdvisoryIndex()
    for spec in specs:
        read_advisories(check_source(spec, roots)[1], index)
    return index
