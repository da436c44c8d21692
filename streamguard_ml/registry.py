"""The model registry: numbered versions, metrics, lineage, aliases and an audit log.

Layout under the store (local directory or S3, same behaviour)::

    registry/<model>/versions/000001.json    one object per version (created with put-if-absent)
    registry/<model>/artifacts/000001/model.tar.gz
    registry/<model>/aliases.json            {"aliases": {"champion": 3}, "history": [...]} (compare-and-swap)
    registry/<model>/keys/<key>.json         idempotency keys → version (a retried task re-uses its version)
    registry/<model>/events/<time>-<id>.json audit log: registered, promoted, rolled back, status changes

There is no shared index file to rewrite, so concurrent writers cannot lose each
other's registrations: a version number is claimed by creating its object with
a conditional write, and a writer that loses the race simply tries the next
number.  Aliases and status changes use compare-and-swap with retries.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from .store import Store, StoreError, json_bytes

STATUSES = ("registered", "approved", "deployed", "archived")
CHAMPION = "champion"


class RegistryError(ValueError):
    """A registry request cannot be met; the message names the model/version."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelVersion:
    model: str
    version: int
    artifact_uri: str
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    status: str = "registered"
    created_at: str = field(default_factory=_now)
    idempotency_key: str | None = None
    decision: dict[str, Any] | None = None
    source_artifact_uri: str | None = None
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Registry:
    def __init__(self, store: Store, prefix: str = "registry"):
        self.store = store
        self.prefix = prefix.strip("/")

    # -- keys -------------------------------------------------------------------
    def _m(self, model: str) -> str:
        if not model or "/" in model or model.startswith("."):
            raise RegistryError(f"invalid model name {model!r}")
        return f"{self.prefix}/{model}"

    def _version_key(self, model: str, version: int) -> str:
        return f"{self._m(model)}/versions/{version:06d}.json"

    # -- reading ----------------------------------------------------------------
    def models(self) -> list[str]:
        names = {k.split("/")[1] for k in self.store.list(self.prefix) if k.count("/") >= 3 and "/versions/" in k}
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        keys = self.store.list(f"{self._m(model)}/versions")
        return sorted(int(k.rsplit("/", 1)[1].split(".")[0]) for k in keys if k.endswith(".json"))

    def aliases(self, model: str) -> dict[str, int]:
        key = f"{self._m(model)}/aliases.json"
        return self.store.read_json(key)["aliases"] if self.store.exists(key) else {}

    def get(self, model: str, version: int) -> ModelVersion:
        key = self._version_key(model, version)
        if not self.store.exists(key):
            known = self.versions(model)
            raise RegistryError(f"{model} has no version {version} (known: {known or 'none'})")
        mv = ModelVersion(**self.store.read_json(key))
        mv.aliases = sorted(a for a, v in self.aliases(model).items() if v == version)
        return mv

    def list(self, model: str | None = None) -> list[ModelVersion]:
        out = []
        for name in [model] if model else self.models():
            aliases = self.aliases(name)
            for v in self.versions(name):
                mv = ModelVersion(**self.store.read_json(self._version_key(name, v)))
                mv.aliases = sorted(a for a, n in aliases.items() if n == v)
                out.append(mv)
        return out

    def latest(self, model: str) -> ModelVersion:
        versions = self.versions(model)
        if not versions:
            raise RegistryError(f"no versions of {model} are registered yet: run the training DAG first")
        return self.get(model, versions[-1])

    def best(self, model: str, metric: str, lower_is_better: bool = False) -> ModelVersion:
        scored = [mv for mv in self.list(model) if isinstance(mv.metrics.get(metric), (int, float))]
        if not scored:
            raise RegistryError(f"no version of {model} has metric {metric!r}")
        pick = min if lower_is_better else max
        return pick(scored, key=lambda mv: (mv.metrics[metric], mv.version) if not lower_is_better
                    else (mv.metrics[metric], -mv.version))

    def champion(self, model: str) -> ModelVersion | None:
        v = self.aliases(model).get(CHAMPION)
        return self.get(model, v) if v is not None else None

    def resolve(self, model: str, ref: str | int) -> ModelVersion:
        """A version number, ``latest``, ``champion``/``deployed`` or ``best:<metric>``."""
        ref = str(ref)
        if ref.isdigit():
            return self.get(model, int(ref))
        if ref == "latest":
            return self.latest(model)
        if ref in (CHAMPION, "deployed"):
            mv = self.champion(model)
            if mv is None:
                raise RegistryError(f"{model} has no deployed (champion) version yet")
            return mv
        if ref.startswith("best:"):
            return self.best(model, ref[5:], lower_is_better=ref[5:] in ("fpr", "loss"))
        raise RegistryError(f"version {ref!r}: use a number, latest, deployed or best:<metric>")

    def compare(self, model: str, a: int, b: int) -> dict[str, Any]:
        va, vb = self.get(model, a), self.get(model, b)
        keys = sorted(k for k in set(va.metrics) | set(vb.metrics)
                      if isinstance(va.metrics.get(k), (int, float)) and isinstance(vb.metrics.get(k), (int, float)))
        return {"model": model, "a": a, "b": b,
                "metrics": {k: {"a": va.metrics[k], "b": vb.metrics[k], "delta": vb.metrics[k] - va.metrics[k]}
                            for k in keys},
                "lineage": {"a": va.lineage, "b": vb.lineage}}

    # -- writing ----------------------------------------------------------------
    def register(self, model: str, artifact_uri: str, metrics: dict[str, Any], params: dict[str, Any] | None = None,
                 lineage: dict[str, Any] | None = None, idempotency_key: str | None = None,
                 decision: dict[str, Any] | None = None) -> ModelVersion:
        """A new version (or the one this idempotency key already created)."""
        if idempotency_key:
            existing = self._version_for_key(model, idempotency_key)
            if existing is not None:
                return self.get(model, existing)
        source_bytes = _read_artifact(self.store, artifact_uri)
        version = self._claim_version(model, artifact_uri, metrics, params or {}, lineage or {},
                                      idempotency_key, decision)
        if idempotency_key:
            key = f"{self._m(model)}/keys/{_safe(idempotency_key)}.json"
            if not self.store.put_if_absent(key, json_bytes({"version": version.version})):
                self.store.delete(self._version_key(model, version.version))  # lost a race with a twin retry
                return self.get(model, self._version_for_key(model, idempotency_key))
        archive = f"{self._m(model)}/artifacts/{version.version:06d}/model.tar.gz"
        self.store.write_bytes(archive, source_bytes)
        version = self._update(model, version.version, lambda d: d.update(artifact_uri=self.store.uri(archive),
                                                                          source_artifact_uri=artifact_uri))
        self._event(model, "registered", version=version.version, key=idempotency_key)
        return version

    def _version_for_key(self, model: str, key: str) -> int | None:
        k = f"{self._m(model)}/keys/{_safe(key)}.json"
        return self.store.read_json(k)["version"] if self.store.exists(k) else None

    def _claim_version(self, model: str, artifact_uri: str, metrics: dict, params: dict, lineage: dict,
                       key: str | None, decision: dict | None) -> ModelVersion:
        candidate = (self.versions(model) or [0])[-1] + 1
        for _ in range(1000):
            mv = ModelVersion(model, candidate, artifact_uri, metrics, params, lineage, idempotency_key=key,
                              decision=decision)
            body = mv.to_dict()
            body.pop("aliases")
            if self.store.put_if_absent(self._version_key(model, candidate), json_bytes(body)):
                return mv
            candidate += 1
        raise RegistryError(f"could not claim a version number for {model} after 1000 attempts")

    def _update(self, model: str, version: int, change: Callable[[dict], Any]) -> ModelVersion:
        key = self._version_key(model, version)
        for _ in range(100):
            got = self.store.read_versioned(key)
            if got is None:
                raise RegistryError(f"{model} has no version {version}")
            doc = json.loads(got[0])
            change(doc)
            if self.store.replace_if(key, json_bytes(doc), got[1]):
                return self.get(model, version)
            time.sleep(0.01)
        raise RegistryError(f"{model} v{version}: too many concurrent updates, try again")

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        if status not in STATUSES:
            raise RegistryError(f"status {status!r}: use one of {STATUSES}")
        mv = self._update(model, version, lambda d: d.update(status=status))
        self._event(model, "status", version=version, status=status, reason=reason)
        return mv

    def record_decision(self, model: str, version: int, decision: dict[str, Any]) -> ModelVersion:
        return self._update(model, version, lambda d: d.update(decision=decision))

    def _move_alias(self, model: str, alias: str, version: int, reason: str) -> int | None:
        key = f"{self._m(model)}/aliases.json"
        for _ in range(100):
            got = self.store.read_versioned(key)
            doc = json.loads(got[0]) if got else {"aliases": {}, "history": []}
            previous = doc["aliases"].get(alias)
            doc["aliases"][alias] = version
            doc["history"].append({"alias": alias, "from": previous, "to": version, "at": _now(), "reason": reason})
            if self.store.replace_if(key, json_bytes(doc), got[1] if got else None):
                return previous
            time.sleep(0.01)
        raise RegistryError(f"{model}: could not move alias {alias}, too many concurrent updates")

    def promote(self, model: str, version: int, reason: str = "manual") -> ModelVersion:
        """Make ``version`` the champion (what serving reads); the previous one is archived."""
        self.get(model, version)
        previous = self._move_alias(model, CHAMPION, version, reason)
        if previous is not None and previous != version:
            self.set_status(model, previous, "archived", f"superseded by v{version}")
        mv = self.set_status(model, version, "deployed", reason)
        self._event(model, "promoted", version=version, previous=previous, reason=reason)
        return mv

    def rollback(self, model: str, reason: str = "rollback") -> ModelVersion:
        """Move the champion back to the version it pointed to before the current one."""
        key = f"{self._m(model)}/aliases.json"
        if not self.store.exists(key):
            raise RegistryError(f"{model} has never had a champion: nothing to roll back")
        doc = self.store.read_json(key)
        current = doc["aliases"].get(CHAMPION)
        moves = [h for h in doc["history"] if h["alias"] == CHAMPION and h["to"] == current and h["from"]]
        if not moves:
            raise RegistryError(f"{model} v{current} has no earlier champion to roll back to")
        target = moves[-1]["from"]
        self._move_alias(model, CHAMPION, target, reason)
        self.set_status(model, current, "archived", f"rolled back to v{target}")
        mv = self.set_status(model, target, "deployed", reason)
        self._event(model, "rolled_back", version=target, previous=current, reason=reason)
        return mv

    def events(self, model: str) -> list[dict[str, Any]]:
        return [self.store.read_json(k) for k in self.store.list(f"{self._m(model)}/events")]

    def _event(self, model: str, kind: str, **details: Any) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self.store.write_bytes(f"{self._m(model)}/events/{stamp}-{uuid.uuid4().hex[:8]}.json",
                               json_bytes({"event": kind, "at": _now(), **details}))


def _safe(key: str) -> str:
    from .layout import run_key

    return run_key(key)


def _read_artifact(store: Store, uri: str) -> bytes:
    from .store import read_uri_bytes

    try:
        return read_uri_bytes(uri)
    except StoreError as exc:
        raise RegistryError(f"artifact {uri} cannot be read: {exc}") from exc
