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
