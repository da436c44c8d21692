"""Analyst feedback on the scanner's findings, kept under ``feedback/`` in the store.

Each record says what a deployed model predicted for a function and what an
analyst concluded::

    {"id", "code" | "code_hash", "model", "version", "score", "predicted",
     "verdict": "true_positive" | "false_positive" | "false_negative" | "true_negative", "ts"}

Records are validated one by one and appended as a batch to
``feedback/date=YYYY-MM-DD/<batch>.jsonl`` (partitioned by the records' date).
A batch is named by the hash of its content, so adding the same file twice
stores it once.  Feedback carrying code becomes labelled training data: the
verdict gives the true label (TP/FN → vulnerable, FP/TN → safe).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Sequence

from .records import Reason, Rejected, stable_id, utf8_fault
from .store import Store

PREFIX = "feedback"
VERDICTS = {"true_positive": (1, 1), "false_positive": (1, 0), "false_negative": (0, 1), "true_negative": (0, 0)}
ALIASES = {"tp": "true_positive", "fp": "false_positive", "fn": "false_negative", "tn": "true_negative"}


class FeedbackError(ValueError):
    """A feedback file cannot be accepted as it is; the message lists what to fix."""


@dataclass
class Feedback:
    id: str
    model: str
    version: int
    score: float
    predicted: int
    verdict: str
    ts: str
    code: str | None = None
    code_hash: str | None = None

    @property
    def true_label(self) -> int:
        return VERDICTS[self.verdict][1]

    @property
    def timestamp(self) -> datetime:
        return parse_ts(self.ts)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def validate(obj: dict[str, Any]) -> Feedback:
    """One record → :class:`Feedback`, or ValueError naming the field and the fix.

    Types are checked, not coerced: a null id must not become the string "None" (three
    such verdicts would count as one in drift) and ``version: 1.9`` must not become 1.
    """
    missing = [k for k in ("id", "model", "version", "score", "predicted", "verdict", "ts") if k not in obj]
    if missing:
        raise ValueError(f"missing {missing}")
    code, code_hash = _optional_text(obj, "code"), _optional_text(obj, "code_hash")
    if not code and not code_hash:
        raise ValueError("needs 'code' (preferred: it becomes training data) or 'code_hash'")
    verdict = ALIASES.get(str(obj["verdict"]).lower(), str(obj["verdict"]).lower())
    if not isinstance(obj["verdict"], str) or verdict not in VERDICTS:
        raise ValueError(f"verdict {obj['verdict']!r}: use one of {sorted(VERDICTS)} (or tp/fp/fn/tn)")
    pred = obj["predicted"]
    if pred not in (0, 1, "0", "1") or isinstance(pred, float):
        raise ValueError(f"predicted {pred!r}: use 1 (flagged) or 0 (not flagged)")
    predicted = int(pred)
    if predicted != VERDICTS[verdict][0]:
        raise ValueError(f"verdict {verdict} contradicts predicted={predicted}")
    score = obj["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"score {score!r} is not a probability in [0, 1]")
    if not isinstance(obj["ts"], str):
        raise ValueError(f"ts {obj['ts']!r} is not an ISO-8601 time string, e.g. 2026-11-23T10:00:00Z")
    try:
        ts = parse_ts(obj["ts"]).isoformat()
    except ValueError:
        raise ValueError(f"ts {obj['ts']!r} is not an ISO-8601 time, e.g. 2026-11-23T10:00:00Z") from None
    code_hash = code_hash or (hashlib.sha256(code.encode("utf-8")).hexdigest() if code else None)
    return Feedback(_identifier(obj, "id"), _identifier(obj, "model"), _version(obj["version"]), float(score),
                    predicted, verdict, ts, code, code_hash)


def _identifier(obj: dict[str, Any], field: str) -> str:
    """A non-empty string or an integer id, as text; null, booleans and floats are refused."""
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{field} {value!r}: give a non-empty string (or an integer id)")
    return str(value)


def _version(value: Any) -> int:
    """A registry version: a positive integer (or its decimal string), never a rounded float."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"version {value!r}: give the registry version as a positive integer, e.g. 3")
    return value


def _optional_text(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string (got {type(value).__name__})")
    if fault := utf8_fault(field, value):
        raise ValueError(fault)
    return value or None


def parse_file(data: bytes, source: str) -> tuple[list[Feedback], list[Rejected]]:
    good, bad = [], []
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 BOM (spreadsheet exports) is not part of line 1
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            good.append(validate(obj))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
            bad.append(Rejected(source, "invalid_feedback", str(exc), number, raw=raw.decode("utf-8", "replace")))
    return good, bad


def add(store: Store, records: Sequence[Feedback]) -> list[str]:
    """Append records, one batch object per date partition; idempotent for identical input."""
    by_day: dict[date, list[Feedback]] = {}
    for r in records:
        by_day.setdefault(r.timestamp.date(), []).append(r)
    uris = []
    for day, rows in sorted(by_day.items()):
        body = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in rows).encode()
        key = f"{PREFIX}/date={day.isoformat()}/{hashlib.sha256(body).hexdigest()[:16]}.jsonl"
        store.put_if_absent(key, body)
        uris.append(store.uri(key))
    return uris


def add_file(store: Store, data: bytes, source: str, skip_invalid: bool = False) -> dict[str, Any]:
    """Validate a JSONL file and append it; all-or-nothing unless ``skip_invalid``."""
    good, bad = parse_file(data, source)
    if bad and not skip_invalid:
        first = "; ".join(f"line {b.line}: {b.detail}" for b in bad[:3])
        raise FeedbackError(f"{source}: {len(bad)} invalid record(s) ({first}); fix them or pass --skip-invalid")
    if not good:
        raise FeedbackError(f"{source}: no valid feedback records")
    uris = add(store, good)
    rejected_uri = None
    if bad:
        key = f"{PREFIX}/rejected/{stable_id(source, len(data))}.jsonl"
        store.write_jsonl(key, (b.to_dict() for b in bad))
        rejected_uri = store.uri(key)
    return {"accepted": len(good), "rejected": len(bad), "partitions": uris, "rejected_file": rejected_uri}


def partitions(store: Store, since: date | None = None) -> list[str]:
    """Batch keys, oldest first, optionally from ``since`` (inclusive) on."""
    keys = [k for k in store.list(PREFIX) if "/date=" in k and k.endswith(".jsonl")]
    if since is not None:
        keys = [k for k in keys if k.split("/date=")[1][:10] >= since.isoformat()]
    return sorted(keys)


def read(store: Store, keys: Iterable[str]) -> list[Feedback]:
    """Records of the given batches, de-duplicated by (model, id): the latest verdict wins."""
    latest: dict[tuple[str, str], Feedback] = {}
    for key in keys:
        for obj in store.read_jsonl(key):
            fb = validate(obj)
            current = latest.get((fb.model, fb.id))
            if current is None or fb.timestamp >= current.timestamp:
                latest[(fb.model, fb.id)] = fb
    return sorted(latest.values(), key=lambda f: (f.ts, f.model, f.id))


def since(store: Store, when: datetime, model: str | None = None) -> tuple[list[Feedback], list[str]]:
    """Feedback newer than ``when`` (for one model), and the batch keys it came from."""
    keys = partitions(store, when.date())
    records = [f for f in read(store, keys) if f.timestamp > when and (model is None or f.model == model)]
    return records, keys


def as_raw_records(records: Iterable[Feedback], source: str) -> Iterable[dict[str, Any] | Rejected]:
    """Feedback → raw training records (the ``feedback:`` source kind)."""
    for n, f in enumerate(records, start=1):
        if not f.code:
            yield Rejected(source, Reason.MISSING_CODE, f"feedback {f.id} has only a code_hash: it cannot be "
                           "trained on (send 'code' with feedback to use it)", n, id=f.id)
            continue
        yield {"id": f"fb-{f.model}-{f.id}", "code": f.code, "label": f.true_label, "source": "feedback",
               "origin": f"analyst:{f.verdict}", "_source": source, "_line": n}
