"""Counterfactual augmentation: semantics-preserving rewrites of training pairs.

A vulnerable function and its fix differ in a few tokens; a model that has seen
both learns *what* makes code vulnerable instead of who wrote it.  We add more
such evidence by consistently renaming local variables and parameters of both
members of a pair with the same mapping, so the augmented pair is again a
minimal vulnerable/fixed pair (``pair_id`` = original + ``~augK``), and line
numbers (hence ``vulnerable_lines``) are unchanged.  Only the training split is
augmented, so validation and test stay untouched real data.
"""

from __future__ import annotations

import builtins
import keyword
import random
from typing import Any

from .graphs import parse
from .records import Sample, stable_id

_RESERVED = set(dir(builtins)) | set(keyword.kwlist) | {"self", "cls", "request", "os", "sys", "subprocess"}
_WORDS = ["alpha", "beta", "item", "value", "data", "entry", "token", "payload", "thing", "field", "arg",
          "blob", "chunk", "elem", "node", "part", "piece", "unit", "word", "ref"]


def local_names(code: str) -> list[str]:
    """Names bound inside the code (parameters, assignment/for/with targets), in order of appearance."""
    root = parse(code).root_node
    names: list[str] = []
    stack = [root]
    while stack:
        n = stack.pop()
        bound = _bound_identifiers(n)
        for ident in bound:
            text = ident.text.decode("utf-8", "replace")
            if text not in _RESERVED and text not in names:
                names.append(text)
        stack.extend(reversed(n.named_children))
    return names


def _bound_identifiers(n: Any) -> list[Any]:
    if n.type == "parameters":
        out = []
        for p in n.named_children:
            ident = p if p.type == "identifier" else p.child_by_field_name("name")
            if ident is None and p.named_children:
                ident = p.named_children[0]
            if ident is not None and ident.type == "identifier":
                out.append(ident)
        return out
    target = None
    if n.type in ("assignment", "augmented_assignment"):
        target = n.child_by_field_name("left")
    elif n.type == "for_statement":
        target = n.child_by_field_name("left")
    elif n.type == "as_pattern_target":
        target = n
    if target is None:
        return []
    if target.type == "identifier":
        return [target]
    return [c for c in target.named_children if c.type == "identifier"]


def rename(code: str, mapping: dict[str, str]) -> str:
    """Replace identifier occurrences (not attribute members or keyword names) by byte span."""
    source = code.encode("utf-8")
    edits: list[tuple[int, int, bytes]] = []
    stack = [parse(code).root_node]
    while stack:
        n = stack.pop()
        if n.type == "identifier":
            text = n.text.decode("utf-8", "replace")
            parent = n.parent
            member = parent is not None and parent.type == "attribute" and parent.child_by_field_name("attribute") == n
            kwname = parent is not None and parent.type == "keyword_argument" and parent.child_by_field_name("name") == n
            if text in mapping and not member and not kwname:
                edits.append((n.start_byte, n.end_byte, mapping[text].encode()))
        stack.extend(n.named_children)
    for start, end, new in sorted(edits, reverse=True):
        source = source[:start] + new + source[end:]
    return source.decode("utf-8")


def renaming_for(names: list[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    words = rng.sample(_WORDS, k=min(len(_WORDS), len(names)))
    return {n: f"{w}_{i}" for i, (n, w) in enumerate(zip(names, words))}


def augment_pairs(samples: list[Sample], copies: int, seed: int) -> list[Sample]:
    """``copies`` renamed variants of every sample (pairs renamed consistently)."""
    by_key: dict[str, list[Sample]] = {}
    for s in samples:
        by_key.setdefault(s.pair_id or f"solo:{s.id}", []).append(s)
    out: list[Sample] = []
    for key, members in by_key.items():
        names: list[str] = []
        for m in members:
            names += [n for n in local_names(m.code) if n not in names]
        if not names:
            continue
        for k in range(1, copies + 1):
            mapping = renaming_for(names, int(stable_id(seed, key, k), 16) % (2**31))
            for m in members:
                out.append(Sample(**{**m.to_dict(), "id": f"{m.id}~aug{k}", "code": rename(m.code, mapping),
                                     "pair_id": f"{m.pair_id}~aug{k}" if m.pair_id else None,
                                     "origin": f"{m.origin or 'sample'}+rename"}))
    return out
