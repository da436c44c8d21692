"""The SageMaker real-time inference handler (``sagemaker_inference.py`` re-exports it).

SageMaker's PyTorch serving container unpacks the version's ``model.tar.gz``
into ``/opt/ml/model`` and calls, per request, ``input_fn`` → ``predict_fn`` →
``output_fn`` on the model ``model_fn`` loaded once.  The model is loaded from
its safetensors weights and JSON config (never unpickled), and raw code goes
through the same graph/token featurisation as training.

Request (``application/json``): ``{"instances": [{"id": "a", "code": "def f(): ..."}]}``,
a bare list of such objects, or one object; ``application/jsonlines``: one per
line.  Response: ``{"predictions": [{"id", "score", "label"[, "anomaly", "anomalous"]}],
"model_type", "threshold", "errors"}``, in request order (the rows ``streamguard-ml predict`` writes); label 1
means vulnerable.  ``score`` is the version's calibrated probability and ``label`` is decided at
the version's own threshold (chosen on its validation split, stored in the archive); the
endpoint's environment variable ``STREAMGUARD_THRESHOLD`` overrides it.

An instance that cannot be scored (no code, NUL bytes, over the per-function limits, no
program graph) is an error row ``{"id", "instance", "score": null, "label": null, "reason",
"error"}`` and the others are still scored.  A request over the request limits is refused
whole with HTTP 413 before anything is featurised.  The limits are ``config.InferenceLimits``;
the environment variables ``STREAMGUARD_MAX_FUNCTION_CHARS``, ``_MAX_FUNCTION_LINES``,
``_MAX_REQUEST_FUNCTIONS`` and ``_MAX_REQUEST_BYTES`` override them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .config import InferenceLimits
from .records import Reason

JSON, JSON_LINES = "application/json", "application/jsonlines"
#: InferenceLimits field → the endpoint's environment variable that overrides it.
LIMIT_ENV = {f.name: "STREAMGUARD_" + f.name.upper() for f in dataclasses.fields(InferenceLimits)}

try:  # in SageMaker's serving container: its toolkit answers an error with the error's status code
    from sagemaker_inference.errors import BaseInferenceToolkitError as _StatusError
except ImportError:  # elsewhere (tests, a local server): the same attributes
    class _StatusError(Exception):  # type: ignore[no-redef]
        def __init__(self, status_code: int, message: str, phrase: str):
            self.status_code, self.message, self.phrase = status_code, message, phrase
            super().__init__(status_code, message, phrase)


class ServingError(_StatusError, ValueError):
    """A request the endpoint cannot score; the caller gets ``status_code`` (400 unless said) and the message."""

    def __init__(self, message: str, status_code: int = HTTPStatus.BAD_REQUEST):
        super().__init__(int(status_code), message, HTTPStatus(status_code).phrase)

    def __str__(self) -> str:
        return self.message


def model_fn(model_dir: str) -> Any:
    from .inference import LoadedModel

    return LoadedModel(Path(model_dir))


def limits() -> InferenceLimits:
    """:class:`InferenceLimits` with each ``STREAMGUARD_MAX_*`` the endpoint sets (a bad one: HTTP 500)."""
    values = {}
    for name, env in LIMIT_ENV.items():
        raw = os.environ.get(env, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise ServingError(f"the endpoint's {env}={raw!r} is not a whole number of at least 1: unset it or fix it",
                               HTTPStatus.INTERNAL_SERVER_ERROR)
        values[name] = int(raw)
    return InferenceLimits(**values)


def _too_large(what: str, limit: int, setting: str) -> ServingError:
    return ServingError(f"request of {what} is over the endpoint's limit of {limit} ({setting}): split it into "
                        "smaller requests", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)


def _instances(doc: Any, limit: InferenceLimits) -> list[Any]:
    from .inference import Item

    items = doc.get("instances", [doc]) if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ServingError('send {"instances": [{"id": ..., "code": ...}]}, a list of such objects, or one object')
    if len(items) > limit.max_request_functions:
        raise _too_large(f"{len(items)} functions", limit.max_request_functions, LIMIT_ENV["max_request_functions"])
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(Item(str(i), None, "instance", i, (Reason.NOT_AN_OBJECT, 'send {"id": ..., "code": ...}')))
            continue
        code = item.get("code")
        out.append(Item(str(item.get("id", i)), code if isinstance(code, str) else None, "instance", i))
    return out


def input_fn(body: bytes | str, content_type: str = JSON) -> list[Any]:
    """The request's instances as ``inference.Item``s; a request over the request limits: HTTP 413."""
    limit = limits()
    size = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", "surrogatepass"))
    if size > limit.max_request_bytes:  # before parsing: JSON of a few MB takes many times that in memory
        raise _too_large(f"{size} bytes", limit.max_request_bytes, LIMIT_ENV["max_request_bytes"])
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise ServingError(f"request body is not UTF-8 (byte {exc.start}): send UTF-8 JSON") from None
    kind = (content_type or JSON).split(";")[0].strip()
    try:
        if kind == JSON:
            return _instances(json.loads(text), limit)
        if kind in (JSON_LINES, "application/x-jsonlines"):
            return _instances([json.loads(line) for line in text.splitlines() if line.strip()], limit)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ServingError(f"request body is not valid JSON: {str(exc).splitlines()[0]}") from None
    raise ServingError(f"content type {content_type!r}: use {JSON} or {JSON_LINES}")


def threshold_for(model: Any) -> float:
    """``STREAMGUARD_THRESHOLD`` when the endpoint sets it, else the version's own threshold."""
    override = os.environ.get("STREAMGUARD_THRESHOLD", "").strip()
    if not override:
        return float(model.threshold)
    try:
        value = float(override)
    except ValueError:
        raise ServingError(f"STREAMGUARD_THRESHOLD={override!r} is not a number: unset it or give 0..1") from None
    if not 0 <= value <= 1:
        raise ServingError(f"STREAMGUARD_THRESHOLD={value} is outside 0..1: unset it or give 0..1")
    return value


def predict_fn(instances: list[Any], model: Any) -> dict[str, Any]:
    """One row per instance, in order; an instance that cannot be scored is an error row, not a failed request."""
    from .inference import predict_items

    threshold = threshold_for(model)
    rows = predict_items(model, instances, threshold, limits())
    return {"predictions": rows, "model_type": model.model_type, "threshold": threshold,
            "errors": sum(1 for r in rows if "error" in r)}


def output_fn(prediction: dict[str, Any], accept: str = JSON) -> tuple[str, str]:
    kind = (accept or JSON).split(";")[0].strip()
    if kind in (JSON, "*/*"):
        return json.dumps(prediction), JSON
    if kind == JSON_LINES:
        return "".join(json.dumps(r) + "\n" for r in prediction["predictions"]), JSON_LINES
    raise ServingError(f"accept {accept!r}: use {JSON} or {JSON_LINES}")
