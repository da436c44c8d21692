"""Packed program graphs from the C builder (``native/fastgraph.c``), graphs.py where it cannot.

graphs.py is the specification and stays the readable reference; the C extension
builds the same graphs (tests/test_fastgraph.py compares them array by array) about
nine times faster (2.7 s → 0.31 s for 5,000 functions, 60 % of it tree-sitter's
parse) and without the GIL, so a thread pool uses every core.  It is configured
here from graphs.py's own tables — node-type vocabulary, skipped / leaf /
operator / value-carrying types, taint rules — so none of them is written twice.

The extension is optional (no C compiler: no extension): :func:`available` says
whether it was built.  Functions it hands back (any non-ASCII byte, where Python's
Unicode-aware regex and ``lower()`` decide; nesting deeper than it follows, where
graphs.py may raise ``RecursionError``) are built by graphs.py, so results never
depend on which builder ran.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from . import graphs
from .dataset import concat_graphs, offsets, pack_graphs
from .graphs import EDGE_ID, MARK_BIT, SUBTOKENS_PER_NODE

#: Errors that make one function's graph fail (quarantined) rather than the whole batch.
GRAPH_ERRORS = (RecursionError, ValueError)


def _rules() -> list[tuple]:
    """The rule table as (mark bit, call, builtin, name words, keyword, min args, args, injection, if text,
    unless text, unconditional, safe, max args or -1), in graphs._call_rules' order."""
    out = []
    for kind, mark in graphs._RULE_KINDS:
        for rule in graphs.taint_rules()[kind]:
            if "attribute" in rule or "parameters" in rule:
                continue  # not call rules: passed separately
            args = rule.get("args")
            if args is not None and any(a < 0 for a in args):
                raise ValueError(f"taint rule {rule}: negative argument positions are not supported")
            out.append((MARK_BIT[mark], rule.get("call"), bool(rule.get("builtin")),
                        tuple(rule.get("name_words", ())), rule.get("keyword"), int(rule.get("min_args", 0)),
                        tuple(args) if args is not None else None, bool(rule.get("injection")),
                        tuple(rule["if_text"]) if "if_text" in rule else None, tuple(rule.get("unless_text", ())),
                        bool(rule.get("unconditional")), bool(rule.get("safe")), int(rule.get("max_args", -1))))
    return out


@lru_cache(maxsize=1)
def _native() -> Any:
    try:
        from . import _fastgraph
    except ImportError:
        return None
    import tree_sitter_python as tsp

    sources = graphs.taint_rules()["sources"]
    _fastgraph.configure(
        tsp.language(), graphs.vocabulary()["index"], sorted(graphs.SKIPPED_TYPES), sorted(graphs._LEAF_TYPES),
        sorted(graphs._OPERATOR_TYPES), sorted(graphs.VALUE_CARRIERS), tuple(MARK_BIT[m] for m in graphs.MARKS),
        _rules(), [r["attribute"] for r in sources if "attribute" in r], any(r.get("parameters") for r in sources),
        tuple(EDGE_ID[e] for e in graphs.EDGE_TYPES), SUBTOKENS_PER_NODE, graphs.SUBTOKEN_BUCKETS)
    return _fastgraph


def available() -> bool:
    """Whether the C builder was compiled into this installation."""
    return _native() is not None


def _from_buffers(raw: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The C builder's raw buffers → the arrays of dataset.pack_graphs."""
    edges = np.frombuffer(raw["edges"], np.int32).reshape(-1, 3)
    nodes, edge_counts = np.frombuffer(raw["node_count"], np.int64), np.frombuffer(raw["edge_count"], np.int64)
    return {
        "node_type": np.frombuffer(raw["node_type"], np.int16).copy(),
        "node_tokens": np.frombuffer(raw["node_tokens"], np.int16).reshape(-1, SUBTOKENS_PER_NODE).copy(),
        "node_marks": np.frombuffer(raw["node_marks"], np.uint8).copy(),
        "node_line": np.frombuffer(raw["node_line"], np.int32).copy(),
        "node_end_line": np.frombuffer(raw["node_end_line"], np.int32).copy(),
        "edge_index": edges[:, :2].T.copy(),
        "edge_type": edges[:, 2].astype(np.uint8),
        "node_ptr": offsets(nodes),
        "edge_ptr": offsets(edge_counts),
    }


def _slice(packed: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Graphs ``start:stop`` of a packed set (edge ids are graph-local, so only offsets move)."""
    n0, n1 = packed["node_ptr"][start], packed["node_ptr"][stop]
    e0, e1 = packed["edge_ptr"][start], packed["edge_ptr"][stop]
    out = {k: v[n0:n1] for k, v in packed.items() if k.startswith("node_") and not k.endswith("_ptr")}
    out.update(edge_index=packed["edge_index"][:, e0:e1], edge_type=packed["edge_type"][e0:e1],
               node_ptr=packed["node_ptr"][start : stop + 1] - n0, edge_ptr=packed["edge_ptr"][start : stop + 1] - e0)
    return out


def graph_arrays(codes: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str | None]]:
    """Packed graphs of the functions that succeeded and, per input, None or the error that failed it.

    The C builder runs first (GIL released); whatever it hands back, and everything when
    it is not built, goes through graphs.py.
    """
    native = _native()
    encoded = [_utf8(code) for code in codes]
    built, handed = None, [i for i, e in enumerate(encoded) if e is None or native is None]
    if native is not None:
        todo = [i for i, e in enumerate(encoded) if e is not None]
        raw, back = native.build([encoded[i] for i in todo])
        built = _from_buffers(raw)
        if not handed and not back:
            return built, [None] * len(codes)
        handed = sorted(handed + [todo[k] for k in back])
    # Splice: runs of natively built graphs between the ones graphs.py builds, in input order.
    parts, errors, done, position = [], [None] * len(codes), 0, 0
    for i in handed:
        run = i - done  # graphs built natively since the last handed-back one
        if built is not None and run:
            parts.append(_slice(built, position, position + run))
            position += run
        done = i + 1
        try:
            parts.append(pack_graphs([graphs.build_graph(codes[i])]))
        except GRAPH_ERRORS as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"
    if built is not None and position < len(built["node_ptr"]) - 1:
        parts.append(_slice(built, position, len(built["node_ptr"]) - 1))
    return (concat_graphs(parts) if parts else pack_graphs([])), errors


def _utf8(code: str) -> bytes | None:
    try:
        return code.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: graphs.py reports the error
        return None
