"""The sample record every stage agrees on, and the record of a rejected input.

Connectors turn their own formats into plain dicts in the raw-record shape of
``interfaces.md``; :func:`streamguard_ml.quality.normalise` turns those into
:class:`Sample` or :class:`Rejected`.  Nothing is dropped without a
:class:`Rejected` saying why and where it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

CWE_NAMES = {
    "CWE-89": "sql_injection",
    "CWE-78": "command_injection",
    "CWE-22": "path_traversal",
    "CWE-79": "xss",
    "CWE-94": "code_injection",
    "CWE-502": "deserialization",
    "CWE-611": "xxe",
    "CWE-918": "ssrf",
    "CWE-601": "open_redirect",
    "CWE-1336": "template_injection",
}
VULN_TYPE_TO_CWE = {v: k for k, v in CWE_NAMES.items()}


def code_fingerprint(code: str) -> str:
    """A short identity of a function's code that ignores indentation and blank lines.

    A model keeps the fingerprints of what it trained (and selected its epoch) on, so
    an evaluation can say how many test functions it had already seen — the same code
    re-indented or copied into another project counts as seen.
    """
    lines = (line.strip() for line in str(code).splitlines())
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()[:16]


def fingerprints(*codes: Any) -> list[str]:
    """Sorted, distinct :func:`code_fingerprint` s of every code column given."""
    return sorted({code_fingerprint(c) for column in codes for c in column})


class Reason:
    """Quarantine reasons (strings, so they read well in JSON and logs)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_CODE = "missing_code"
    MISSING_LABEL = "missing_label"
    INVALID_LABEL = "invalid_label"
    NON_UTF8 = "non_utf8"
    TOO_LONG = "too_long"
    TOO_SHORT = "too_short"
    PARSE_ERROR = "parse_error"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "normalised_duplicate"
    LABEL_CONFLICT = "label_conflict"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    INVALID_FIELD = "invalid_field"
    MALFORMED_DIFF = "malformed_diff"


@dataclass
class Sample:
    """One labelled function.  ``label``: 1 vulnerable, 0 safe."""

    id: str
    code: str
    label: int
    language: str = "python"
    cwe: str | None = None
    vulnerability_type: str | None = None
    source: str = "unknown"
    pair_id: str | None = None
    vulnerable_lines: list[int] = field(default_factory=list)
    origin: str | None = None
    group: str | None = None
    source_ref: str = ""
    cve: str | None = None
    severity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Sample":
        names = cls.__dataclass_fields__  # not dataclasses.fields(): this runs once per sample read
        values = {k: v for k, v in row.items() if k in names}
        values["vulnerable_lines"] = [int(x) for x in (values.get("vulnerable_lines") or [])]
        return cls(**values)

    @property
    def split_group(self) -> str:
        """What must stay inside one split: repository/commit, else the pair, else itself."""
        return self.group or (f"pair:{self.pair_id}" if self.pair_id else f"sample:{self.id}")


@dataclass
class Rejected:
    """An input that could not be used, with enough context to find and fix it."""

    source: str
    reason: str
    detail: str
    line: int | None = None
    id: str | None = None
    raw: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["raw"] = d["raw"][:2000]
        return d


#: How much of an unparsable input line the quarantine keeps: enough to recognise it, never a whole file.
EXCERPT_CHARS = 200
#: Largest line number a sample may name (the samples file stores them as int32).
MAX_LINE_NUMBER = 2 ** 31 - 1

#: Raw-record fields and what each may hold; anything else is quarantined by :func:`record_fault`.
#: ``text``: a string (or null); ``ident``: a string or integer (or null), made a string later.
TEXT_FIELDS = ("code", "counterfactual", "language", "vulnerability_type", "source", "origin", "cve",
               "severity", "commit")
IDENT_FIELDS = ("id", "pair_id", "group", "cwe")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of ``text`` and its length: what a quarantine entry keeps of an unusable line."""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text)} characters]"


def describe(value: Any) -> str:
    """A short, always-printable account of a JSON value (for quarantine details)."""
    if value is None:
        return "missing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return f"a JSON object of {len(value)} items"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, str):
        return f"the text {ascii(excerpt(value, 40))}"
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10 ** 30 else "an integer of over 30 digits"
    return f"{excerpt(repr(value), 40)} (a {type(value).__name__})"


def utf8_fault(name: str, value: str) -> str | None:
    """Why ``value`` cannot be stored as UTF-8 (a lone surrogate, e.g. JSON's ``"\\ud800"``), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"field '{name}' holds a lone surrogate {ascii(value[exc.start])} at character {exc.start}, "
                "which is not UTF-8: fix the producer's encoding")
    return None


def code_fault(code: Any, name: str = "code") -> tuple[str, str] | None:
    """(reason, detail) when ``code`` is no function text a model may read; None when it is.

    The content rule ingest and scoring share (``quality.normalise`` quarantines such a record,
    ``predict`` and the endpoint answer an error row), so nothing is scored that ingest rejects:
    a non-empty string, UTF-8-encodable, without NUL bytes.  Sizes are each stage's own
    setting (``QualityLimits`` for training data, ``InferenceLimits`` for scoring).
    """
    if not isinstance(code, str) or not code.strip():
        return Reason.MISSING_CODE, f"field '{name}' is missing or empty: add the function source"
    if fault := utf8_fault(name, code):
        return Reason.NON_UTF8, fault
    if "\x00" in code:
        return Reason.NON_UTF8, (f"field '{name}' contains NUL bytes (the first at character {code.index(chr(0))}): "
                                 "send source text, not a binary file")
    return None


def text_fault(name: str, value: Any, ident: bool = False) -> tuple[str, str] | None:
    """(reason, detail) when ``value`` is not a storable string (or, for ``ident``, integer); None if fine."""
    if value is None:
        return None
    if isinstance(value, str):
        fault = utf8_fault(name, value)
        return (Reason.NON_UTF8, fault) if fault else None
    if ident and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10 ** 30:
        return None
    wanted = "a string or an integer" if ident else "a string"
    return Reason.INVALID_FIELD, f"field '{name}' is {describe(value)}: give {wanted} (or leave it out)"


def label_fault(value: Any, name: str = "label") -> str | None:
    """Why ``value`` is not a label: only the integers 0 and 1 are (not true/false, "1" or 1.0)."""
    if type(value) is int and value in (0, 1):
        return None
    return f"field '{name}' is {describe(value)}: use 1 (vulnerable) or 0 (safe)"


def lines_fault(value: Any, name: str = "vulnerable_lines") -> str | None:
    """Why ``value`` is not a list of line numbers (integers from 1), or None."""
    if value is None:
        return None
    if not isinstance(value, list):
        return f"field '{name}' is {describe(value)}: give a list of line numbers, e.g. [3, 4]"
    for index, number in enumerate(value):
        if type(number) is not int or not 1 <= number <= MAX_LINE_NUMBER:
            return (f"field '{name}' item {index} is {describe(number)}: line numbers are integers "
                    f"from 1 to {MAX_LINE_NUMBER}")
    return None


def record_fault(rec: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) for the first field of a raw record that cannot become part of a :class:`Sample`.

    The one place raw-record types are judged, before anything else touches the record
    (the advisory join, :func:`~streamguard_ml.quality.normalise`, the Parquet write), so
    that a malformed field is a quarantine entry naming it and never an exception that
    ends the ingest.  Presence and content (missing code, too long, unparsable) are
    judged later, by ``normalise``.
    """
    if "label" in rec and (fault := label_fault(rec["label"])):
        return Reason.INVALID_LABEL, fault
    if "label" not in rec and "vulnerable" in rec:  # the seed-era flag; the JSONL connector maps true/false
        return Reason.INVALID_LABEL, (f"field 'vulnerable' is {describe(rec['vulnerable'])}: use true or false "
                                      "(or a 'label' of 1 or 0)")
    if fault := lines_fault(rec.get("vulnerable_lines")):
        return Reason.INVALID_FIELD, fault
    for name in TEXT_FIELDS:
        if found := text_fault(name, rec.get(name)):
            return found
    for name in IDENT_FIELDS:
        if found := text_fault(name, rec.get(name), ident=True):
            return found
    return None


def reject_record(rec: dict[str, Any], reason: str, detail: str) -> Rejected:
    """A raw record as a quarantine entry, keeping where it came from (and its id and code when printable)."""
    ident, code = rec.get("id"), rec.get("code")
    printable = ident is not None and text_fault("id", ident, ident=True) is None
    return Rejected(str(rec.get("_source", "?")), reason, detail, rec.get("_line"),
                    id=str(ident) if printable else None, raw=code[:2000] if isinstance(code, str) else "")


def stable_id(*parts: object) -> str:
    """A short id that is the same in every process (unlike ``hash()``)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return h.hexdigest()


def cwe_of(value: Any) -> str | None:
    """Normalise 'cwe-089', '89', 'CWE-89' → 'CWE-89'."""
    if value in (None, ""):
        return None
    text = str(value).strip().upper().removeprefix("CWE-").removeprefix("CWE")
    digits = text.lstrip("0") or "0"
    return f"CWE-{digits}" if digits.isdigit() else str(value)
