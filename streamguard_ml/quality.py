"""Validation, counterfactual expansion, de-duplication and label conflicts.

Every decision here is recorded: an input either becomes a :class:`Sample` or a
:class:`Rejected` with a reason, so the quarantine file plus the accepted
samples always account for every input line.
"""

from __future__ import annotations

import hashlib
import io
import re
import textwrap
import tokenize
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Iterable

from .config import QualityLimits
from .records import CWE_NAMES, VULN_TYPE_TO_CWE, Reason, Rejected, Sample, code_fault, cwe_of, stable_id
from .sources.synthetic import changed_lines

SUPPORTED_LANGUAGES = {"python", "py", "python3"}
_TRUE = {True, 1, "1", "true", "True", "yes", "vulnerable"}
_FALSE = {False, 0, "0", "false", "False", "no", "safe"}


def parse_label(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    return None


def _reject(rec: dict, reason: str, detail: str) -> Rejected:
    return Rejected(str(rec.get("_source", "?")), reason, detail, rec.get("_line"),
                    id=rec.get("id") and str(rec["id"]), raw=str(rec.get("code", ""))[:2000])


def _check_code(rec: dict, code: object, limits: QualityLimits) -> Rejected | str:
    if not isinstance(code, str) or not code.strip():
        return _reject(rec, Reason.MISSING_CODE, "field 'code' is missing or empty: add the function source")
    if len(code) > limits.max_code_chars or code.count("\n") + 1 > limits.max_lines:
        return _reject(rec, Reason.TOO_LONG,
                       f"{len(code)} chars / {code.count(chr(10)) + 1} lines exceeds "
                       f"{limits.max_code_chars} chars / {limits.max_lines} lines: split the file into functions")
    if len(code.strip()) < limits.min_code_chars:
        return _reject(rec, Reason.TOO_SHORT, f"only {len(code.strip())} characters of code")
    if fault := code_fault(code):  # NUL bytes etc.: the content rule `predict` shares
        return _reject(rec, *fault)
    return textwrap.dedent(code.expandtabs(4))


def normalise(rec: dict, limits: QualityLimits) -> list[Sample | Rejected]:
    """One raw record → samples (two when it carries an inline counterfactual)."""
    language = str(rec.get("language") or "python").lower()
    if language not in SUPPORTED_LANGUAGES:
        return [_reject(rec, Reason.UNSUPPORTED_LANGUAGE, f"language {language!r}: only Python is supported")]
    code = _check_code(rec, rec.get("code"), limits)
    if isinstance(code, Rejected):
        return [code]
    if "label" not in rec:
        return [_reject(rec, Reason.MISSING_LABEL, "no 'label' (1 vulnerable / 0 safe) or 'vulnerable' field")]
    label = parse_label(rec["label"])
    if label is None:
        return [_reject(rec, Reason.INVALID_LABEL, f"label {rec['label']!r}: use 1 (vulnerable) or 0 (safe)")]
    source_ref = f"{rec.get('_source', '?')}:{rec.get('_line', '?')}"
    sample_id = str(rec.get("id") or stable_id(source_ref))
    cwe = cwe_of(rec.get("cwe")) or VULN_TYPE_TO_CWE.get(str(rec.get("vulnerability_type")))
    sample = Sample(
        id=sample_id, code=code, label=label, cwe=cwe,
        vulnerability_type=rec.get("vulnerability_type") or CWE_NAMES.get(cwe or ""),
        source=str(rec.get("source") or rec.get("_source") or "unknown"),
        pair_id=rec.get("pair_id") and str(rec["pair_id"]),
        vulnerable_lines=[int(x) for x in rec.get("vulnerable_lines") or []],
        origin=rec.get("origin"), group=rec.get("group") and str(rec["group"]), source_ref=source_ref,
        cve=rec.get("cve") and str(rec["cve"]), severity=rec.get("severity") and str(rec["severity"]),
    )
    out: list[Sample | Rejected] = [sample]
    if rec.get("counterfactual"):
        out.extend(_expand_counterfactual(rec, sample, limits))
    return out


def _expand_counterfactual(rec: dict, sample: Sample, limits: QualityLimits) -> list[Sample | Rejected]:
    """An inline fixed version becomes its own safe sample sharing a ``pair_id``."""
    fixed = _check_code(rec, rec["counterfactual"], limits)
    if isinstance(fixed, Rejected):
        fixed.detail = "counterfactual: " + fixed.detail
        return [fixed]
    sample.pair_id = sample.pair_id or stable_id("pair", sample.id)
    if sample.label == 1 and not sample.vulnerable_lines:
        sample.vulnerable_lines = changed_lines(sample.code, fixed)
    twin = Sample(**{**sample.to_dict(), "id": f"{sample.id}-cf", "code": fixed, "label": 1 - sample.label,
                     "vulnerable_lines": [], "origin": "counterfactual"})
    return [twin]


_WS = re.compile(r"\s+")


def normalised_code(code: str) -> str:
    """Code without comments and with whitespace collapsed (for near-duplicates)."""
    try:
        toks = [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                  tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)]
        return " ".join(toks)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        no_comments = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
        return _WS.sub(" ", no_comments).strip()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1 << 16)
def fingerprint(code: str) -> str:
    """What makes two samples the same code: the digest of :func:`normalised_code`.

    Cached: daily ingestion asks for the same sample's fingerprint three times (corpus
    lookup, de-duplication, the corpus row), and tokenizing a function is the cost.
    """
    return _digest(normalised_code(code))


def deduplicate(samples: Iterable[Sample]) -> tuple[list[Sample], list[Rejected], Counter]:
    """Keep the first of each code; quarantine duplicates and label conflicts.

    Identical code (after normalisation) carrying both labels cannot be learned
    from: every copy is quarantined as a label conflict.
    """
    samples = list(samples)
    by_norm: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_norm[fingerprint(s.code)].append(s)
    kept: list[Sample] = []
    rejected: list[Rejected] = []
    counts: Counter = Counter()
    seen_ids: set[str] = set()
    for group in by_norm.values():
        if len({s.label for s in group}) > 1:
            others = ", ".join(s.id for s in group)
            for s in group:
                rejected.append(Rejected(s.source_ref, Reason.LABEL_CONFLICT,
                                         f"same code labelled both ways: {others}", id=s.id, raw=s.code))
            counts[Reason.LABEL_CONFLICT] += len(group)
            continue
        first, *rest = group
        for s in rest:
            exact = s.code == first.code
            reason = Reason.DUPLICATE if exact else Reason.NEAR_DUPLICATE
            rejected.append(Rejected(s.source_ref, reason, f"duplicate of {first.id}", id=s.id, raw=s.code))
            counts[reason] += 1
        if first.id in seen_ids:
            first.id = f"{first.id}~{stable_id(first.source_ref)}"
        seen_ids.add(first.id)
        kept.append(first)
    order = {id(s): i for i, s in enumerate(samples)}
    kept.sort(key=lambda s: order[id(s)])
    return kept, rejected, counts
