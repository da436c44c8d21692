"""The SageMaker real-time inference handler (``sagemaker_inference.py`` re-exports it).

SageMaker's PyTorch serving container unpacks the version's ``model.tar.gz``
into ``/opt/ml/model`` and calls, per request, ``input_fn`` → ``predict_fn`` →
``output_fn`` on the model ``model_fn`` loaded once.  The model is loaded from
its safetensors weights and JSON config (never unpickled), and raw code goes
through the same graph/token featurisation as training.

Request (``application/json``): ``{"instances": [{"id": "a", "code": "def f(): ..."}]}``,
a bare list of such objects, or one object; ``application/jsonlines``: one per
line.  Response: ``{"predictions": [{"id", "score", "label"[, "anomaly", "anomalous"]}],
"model_type", "threshold"}``, in request order (the rows ``streamguard-ml predict`` writes); label 1
means vulnerable.  ``score`` is the version's calibrated probability and ``label`` is decided at
the version's own threshold (chosen on its validation split, stored in the archive); the
endpoint's environment variable ``STREAMGUARD_THRESHOLD`` overrides it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JSON, JSON_LINES = "application/json", "application/jsonlines"


class ServingError(ValueError):
    """A request the endpoint cannot score; SageMaker returns the message to the caller."""


def model_fn(model_dir: str) -> Any:
    from .inference import LoadedModel

    return LoadedModel(Path(model_dir))


def _instances(doc: Any) -> list[dict[str, Any]]:
    items = doc.get("instances", [doc]) if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ServingError('send {"instances": [{"id": ..., "code": ...}]}, a list of such objects, or one object')
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("code"), str) or not item["code"].strip():
            raise ServingError(f"instance {i} needs a non-empty string 'code'")
        out.append({"id": str(item.get("id", i)), "code": item["code"]})
    return out


def input_fn(body: bytes | str, content_type: str = JSON) -> list[dict[str, Any]]:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    kind = (content_type or JSON).split(";")[0].strip()
    try:
        if kind == JSON:
            return _instances(json.loads(text))
        if kind in (JSON_LINES, "application/x-jsonlines"):
            return _instances([json.loads(line) for line in text.splitlines() if line.strip()])
    except json.JSONDecodeError as exc:
        raise ServingError(f"request body is not valid JSON: {exc}") from None
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


def predict_fn(instances: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    threshold = threshold_for(model)
    scores = model.score(model.featurize([r["code"] for r in instances]))
    return {"predictions": scores.rows([r["id"] for r in instances], threshold), "model_type": model.model_type,
            "threshold": threshold}


def output_fn(prediction: dict[str, Any], accept: str = JSON) -> tuple[str, str]:
    kind = (accept or JSON).split(";")[0].strip()
    if kind in (JSON, "*/*"):
        return json.dumps(prediction), JSON
    if kind == JSON_LINES:
        return "".join(json.dumps(r) + "\n" for r in prediction["predictions"]), JSON_LINES
    raise ServingError(f"accept {accept!r}: use {JSON} or {JSON_LINES}")
