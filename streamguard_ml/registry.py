"""The model registry: numbered versions, metrics, lineage, aliases and an audit log.

Layout under the store (a local directory or S3: the same code, the same behaviour)::

    registry/<model>/versions/000001/entry.json   one immutable record per version
    registry/<model>/artifacts/000001/model.tar.gz
    registry/<model>/log/000001/entry.json        every change, in order: registered, status,
                                                  decision, promoted, rolled_back (the audit log)
    registry/<model>/cards/000001/                the version's model card (see model_card.py)

Both ``versions`` and ``log`` are :class:`~streamguard_ml.ledger.Ledger` s: a
number is claimed by a writer alone, so N processes registering at once get N
distinct versions, and nothing is ever rewritten, so no writer can lose
another's change.  Status, aliases (``champion``) and decisions are folded from
the log; a promotion or rollback is *one* log entry, computed from exactly the
entries before it, so it is atomic and names the champion it replaced.

A version is *visible* (``versions``, ``list``, ``latest``, ``get``, ``promote``,
``resolve``) only once its registration completed: its number is claimed in
``versions`` first, then its artifact is written whole (an atomic rename locally,
one PUT on S3), and only then is ``registered`` logged.  A registration killed in
between leaves an invisible, :meth:`Registry.incomplete` version (a retry with the
same idempotency key completes it) and, on a local store, a temporary file that
the next registration of that model removes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from . import layout
from .ledger import Ledger
from .store import Store, StoreError

log = logging.getLogger(__name__)

STATUSES = ("registered", "approved", "deployed", "archived")
CHAMPION = "champion"
#: The longest model name (it becomes a folder name, and part of SageMaker resource names).
MAX_MODEL_NAME = 100
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NAME_RULE = (f"use 1 to {MAX_MODEL_NAME} ASCII letters, digits, '-' or '_', starting with a letter or digit "
              "(e.g. taint-flow-gnn)")


class RegistryError(ValueError):
    """A registry request cannot be met; the message names the model/version."""


class RegistryConflict(RegistryError):
    """The registry is not in the state the caller expected (someone else moved the champion); nothing changed."""


#: ``Registry.promote(expected=...)`` left out: promote whichever version is the champion now.
ANY_CHAMPION = object()


_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


def validate_tag(tag: object) -> str:
    """A tag is 1-64 letters, digits and ``. _ : / -`` (starting with a letter or digit), so it
    reads the same in a URL filter, a table cell and a shell argument."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise RegistryError(f"tag {tag!r}: use 1-64 letters, digits and . _ : / - (starting with a letter or digit), "
                            "e.g. reviewed or ticket:SEC-12")
    return tag


def validate_model_name(name: object) -> str:
    """``name`` if it is a model name (:data:`_NAME_RULE`), else RegistryError naming it and the rule.

    The one check every registry path goes through: a name becomes a store folder, so
    spaces, newlines, dots or ``~`` would make folders that other tools trip on.
    """
    if isinstance(name, str) and len(name) <= MAX_MODEL_NAME and _MODEL_NAME.fullmatch(name):
        return name
    if isinstance(name, str) and len(name) > MAX_MODEL_NAME:
        shown = f"{name[:40]!r}... ({len(name)} characters, at most {MAX_MODEL_NAME})"
    else:
        shown = repr(name)
    raise RegistryError(f"invalid model name {shown}: {_NAME_RULE}")


def _is_model_name(name: str) -> bool:
    try:
        validate_model_name(name)
    except RegistryError:
        return False
    return True


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
    #: The decision threshold the version ships with (``thresholds.OperatingPoint``) and its calibration.
    operating_point: dict[str, Any] | None = None
    aliases: list[str] = field(default_factory=list)
    #: Labels people attach (``registry tag``), e.g. ``reviewed`` or ``ticket:SEC-12``; kept in the audit log.
    tags: list[str] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        from .thresholds import DEFAULT_THRESHOLD

        return float((self.operating_point or {}).get("threshold", DEFAULT_THRESHOLD))

    @property
    def smoke(self) -> bool:
        """Trained by a smoke run (shrunk data and epochs): a pipeline check, never a model to ship."""
        return bool((self.lineage or {}).get("smoke"))

    @property
    def evaluated_on(self) -> str | None:
        """The content hash of the test split its metrics come from (None: registered before it was recorded)."""
        return ((self.metrics or {}).get("test_data") or {}).get("content_hash")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _State:
    """What the log says about a model's versions at some point.

    ``champions`` is the champion *stack*: a promotion pushes its version (unless it is
    already the champion), a rollback pops, so the top is always the champion and a
    rollback goes back to the one below.  Promote 1, 2, 3 then roll back twice: 2, then
    1.  Promote 1, 2, 3, roll back (2), promote 4, roll back: 2 again (4's move is
    undone), then 1.  The stack is folded from the log, so every reader agrees on it.
    """

    status: dict[int, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # champion moves
    registered: set[int] = field(default_factory=set)
    champions: list[int] = field(default_factory=list)  # the champion stack (top last)
    tags: dict[int, set[str]] = field(default_factory=dict)

    def apply(self, e: dict[str, Any]) -> None:
        v = e.get("version")
        if e["event"] == "registered":
            self.registered.add(v)
        elif e["event"] in ("tagged", "untagged"):
            tags = self.tags.setdefault(v, set())
            (tags.add if e["event"] == "tagged" else tags.discard)(e["tag"])
        elif e["event"] == "status":
            self.status[v] = e["status"]
        elif e["event"] == "decision":
            self.decisions[v] = e["decision"]
        elif e["event"] in ("promoted", "rolled_back"):
            previous = self.aliases.get(CHAMPION)
            if previous is not None and previous != v:
                self.status[previous] = "archived"
            self.aliases[CHAMPION] = v
            self.status[v] = "deployed"
            self._move(e["event"], v)
            self.history.append({"alias": CHAMPION, "from": previous, "to": v, "at": e["at"],
                                 "reason": e.get("reason", ""), "event": e["event"]})

    def _move(self, event: str, version: int) -> None:
        stack = self.champions
        if event == "promoted":
            if not stack or stack[-1] != version:
                stack.append(version)
            return
        if stack:
            stack.pop()
        if not stack or stack[-1] != version:  # a log written before the stack (rollbacks went one step only)
            below = [i for i, v in enumerate(stack) if v == version]
            stack[:] = stack[: below[-1] + 1] if below else [version]


class Registry:
    def __init__(self, store: Store, prefix: str = "registry"):
        self.store = store
        self.prefix = prefix.strip("/")
        self._ledgers: dict[str, Ledger] = {}

    # -- keys -------------------------------------------------------------------
    def _m(self, model: str) -> str:
        return f"{self.prefix}/{validate_model_name(model)}"

    def _ledger(self, model: str, name: str) -> Ledger:
        key = f"{self._m(model)}/{name}"
        if key not in self._ledgers:
            self._ledgers[key] = Ledger(self.store, key)
        return self._ledgers[key]

    def artifact_key(self, model: str, version: int) -> str:
        return f"{self._m(model)}/artifacts/{version:06d}/model.tar.gz"

    def card_prefix(self, model: str, version: int) -> str:
        return f"{self._m(model)}/cards/{version:06d}"

    def _relative(self, uri: str | None) -> str | None:
        """``uri`` as a store key when it lies inside this store (so it moves with the store), else unchanged."""
        if not uri:
            return uri
        try:
            return self.store.key_of(uri)
        except StoreError:
            return uri

    def _absolute(self, ref: str | None) -> str | None:
        """A key written by :meth:`_relative` as a URI of this store; an outside path or URI unchanged."""
        return self.store.uri(ref) if ref and layout.store_relative(ref) == ref else ref

    # -- reading ----------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the models in the registry, sorted.

        A folder under the registry that is not a model (a name the rule refuses, such as
        ``.trash``, or no ``versions`` and ``log`` entries) is skipped with a warning, so a
        stray folder never breaks a listing or the registry page.
        """
        found: dict[str, set[str]] = {}
        for key in self.store.list(self.prefix):
            parts = key[len(self.prefix) + 1 :].split("/")
            found.setdefault(parts[0], set())
            if len(parts) == 4 and parts[1] in ("versions", "log") and parts[3] == "entry.json":
                found[parts[0]].add(parts[1])
        models = []
        for name, ledgers in sorted(found.items()):
            if not _is_model_name(name):
                log.warning("skipped %r under %s: not a model name (%s)", name, self.store.uri(self.prefix),
                            _NAME_RULE)
            elif ledgers != {"versions", "log"}:
                log.warning("skipped %r under %s: it holds no registry versions and log (not a model, or its "
                            "first registration is not complete)", name, self.store.uri(self.prefix))
            else:
                models.append(name)
        return models

    def versions(self, model: str, state: _State | None = None) -> list[int]:
        """Versions whose registration completed (artifact written, then logged), ascending."""
        registered = (state or self._state(model)).registered
        return [v for v in self._ledger(model, "versions").slots() if v in registered]

    def incomplete(self, model: str) -> list[int]:
        """Version numbers claimed by a registration that never completed (killed, or still running)."""
        registered = self._state(model).registered
        return [v for v in self._ledger(model, "versions").slots() if v not in registered]

    def _state(self, model: str, before: int | None = None) -> _State:
        state = _State()
        for _, entry in self._ledger(model, "log").entries(before):
            state.apply(entry)
        return state

    def aliases(self, model: str) -> dict[str, int]:
        return dict(self._state(model).aliases)

    def _version(self, model: str, version: int, state: _State) -> ModelVersion:
        ledger = self._ledger(model, "versions")
        entry = dict(ledger.read(version))
        entry.pop("artifact_key", None)  # always artifact_key(model, version): found wherever the store now lies
        entry["artifact_uri"] = self.store.uri(self.artifact_key(model, version))
        entry["source_artifact_uri"] = self._absolute(entry.get("source_artifact_uri"))
        entry["lineage"] = relative_lineage(entry.get("lineage") or {})
        try:
            mv = ModelVersion(**entry)
        except TypeError as exc:
            raise RegistryError(f"{self.store.uri(f'{ledger.prefix}/{version:06d}/entry.json')} is not a registry "
                                f"version entry ({exc}): restore it or move the folder out of the registry") from None
        mv.status = state.status.get(version, mv.status)
        mv.decision = state.decisions.get(version, mv.decision)
        mv.aliases = sorted(a for a, v in state.aliases.items() if v == version)
        mv.tags = sorted(state.tags.get(version, ()))
        return mv

    def get(self, model: str, version: int) -> ModelVersion:
        state = self._state(model)
        self._require(model, version, state)
        return self._version(model, version, state)

    def _require(self, model: str, version: int, state: _State | None = None) -> None:
        """Fail clearly on an unknown (or not yet completely registered) version."""
        known = self.versions(model, state)
        if version not in known:
            raise RegistryError(f"{model} has no version {version} (known: {known or 'none'})")

    def list(self, model: str | None = None) -> list[ModelVersion]:
        """Every visible version of ``model``, or of every model.

        Listing every model skips (with a warning) one whose entries cannot be read, so one
        damaged folder does not hide the rest; asking for that model by name raises.
        """
        out = []
        for name in [model] if model else self.models():
            try:
                out += self._list_one(name)
            except (RegistryError, StoreError) as exc:
                if model:
                    raise
                log.warning("skipped model %r: %s", name, exc)
        return out

    def _list_one(self, model: str) -> list[ModelVersion]:
        state = self._state(model)
        return [self._version(model, v, state) for v in self.versions(model, state)]

    def latest(self, model: str) -> ModelVersion:
        state = self._state(model)
        versions = self.versions(model, state)
        if not versions:
            raise RegistryError(f"no versions of {model} are registered yet: run the training DAG first")
        return self._version(model, versions[-1], state)

    def best(self, model: str, metric: str, lower_is_better: bool = False, data: str | None = None) -> ModelVersion:
        """The version with the best ``metric`` among those evaluated on the same test data.

        Figures from different test splits do not compare (1.000 on synthetic functions is
        not better than 0.61 on real fixes), so only versions evaluated on ``data`` (a content
        hash or its prefix) compete — by default the data the newest version was evaluated on.
        Smoke versions never compete.
        """
        scored = [mv for mv in self.list(model) if isinstance(mv.metrics.get(metric), (int, float)) and not mv.smoke]
        if not scored:
            raise RegistryError(f"no version of {model} has metric {metric!r} (smoke versions do not count)")
        if data is None:
            data = scored[-1].evaluated_on
            others = sorted({mv.version for mv in scored if mv.evaluated_on != data})
            if others:
                log.warning("best %s of %s: only versions evaluated on the same test data as v%d (%s) compete; "
                            "v%s were evaluated on other data", metric, model, scored[-1].version,
                            (data or "unrecorded")[:12], ", v".join(map(str, others)))
            scored = [mv for mv in scored if mv.evaluated_on == data]
        else:
            scored = [mv for mv in scored if (mv.evaluated_on or "").startswith(data)]
            if not scored:
                raise RegistryError(f"no version of {model} with metric {metric!r} was evaluated on data {data!r}")
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
        """Metric deltas from ``a`` to ``b`` — only where both figures come from the same test data.

        Same evaluated data: the registered metrics compare directly (``basis: "same_data"``).
        Otherwise, when one version's gate scored the other on its own test split, those
        paired numbers are the comparison (``basis: "gate"``).  Else nothing is compared and
        ``why_not`` says why and how to get comparable figures.
        """
        va, vb = self.get(model, a), self.get(model, b)
        doc: dict[str, Any] = {"model": model, "a": a, "b": b, "lineage": {"a": va.lineage, "b": vb.lineage},
                               "evaluated_on": {"a": va.evaluated_on, "b": vb.evaluated_on},
                               "smoke": {"a": va.smoke, "b": vb.smoke}}
        paired = _paired(va, vb)
        if va.evaluated_on and va.evaluated_on == vb.evaluated_on:
            doc.update(comparable=True, why_not=None, basis="same_data", metrics=_deltas(va.metrics, vb.metrics))
        elif paired is not None:
            first, second, split = paired
            doc.update(comparable=True, why_not=None, basis="gate", paired_on=split,
                       metrics=_deltas(first, second))
        else:
            doc.update(comparable=False, basis=None, metrics={}, why_not=(
                f"v{a} and v{b} were evaluated on different test data ({_data_of(va)} vs {_data_of(vb)}) and "
                "neither's gate scored the other; score both on one split, e.g. `streamguard-ml evaluate "
                f"--run {vb.lineage.get('run') or 'RUN'} --model {model} --model-version {a}`"))
        return doc

    def events(self, model: str) -> list[dict[str, Any]]:
        """The audit log, oldest first."""
        return [{"seq": seq, **entry} for seq, entry in self._ledger(model, "log").entries()]

    # -- writing ----------------------------------------------------------------
    def register(self, model: str, artifact_uri: str, metrics: dict[str, Any], params: dict[str, Any] | None = None,
                 lineage: dict[str, Any] | None = None, idempotency_key: str | None = None,
                 decision: dict[str, Any] | None = None) -> ModelVersion:
        """A new version (or the one this idempotency key already created, completed if a retry found it half done).

        The operating point (threshold, policy, calibration) is read from the artifact itself,
        so a version registered by hand decides exactly as the pipeline's would.
        """
        if idempotency_key:
            existing = self._version_for_key(model, idempotency_key)
            if existing is not None:
                return self._complete(model, existing)
        source = _checked_artifact(artifact_uri)  # fail before claiming a number: unreadable or refused
        operating_point = archive_operating_point(source)

        if (lineage or {}).get("smoke") and (decision or {}).get("promote"):
            raise RegistryError(f"{model}: a smoke run's decision cannot say promote (smoke versions are never "
                                "promoted); the gate refuses them")

        def record(v: int) -> dict[str, Any]:
            mv = ModelVersion(model, v, "", metrics, params or {}, relative_lineage(lineage or {}),
                              idempotency_key=idempotency_key, decision=decision,
                              source_artifact_uri=self._relative(artifact_uri), operating_point=operating_point)
            body = mv.to_dict()
            body.pop("aliases")
            body.pop("artifact_uri")
            body["artifact_key"] = self.artifact_key(model, v)  # store-relative: a copied store keeps working
            return body

        version, _ = self._ledger(model, "versions").append(record)
        first = self._version_for_key(model, idempotency_key) if idempotency_key else version
        if first != version:  # a twin with the same key registered at the same moment and got a lower number
            self._append(model, lambda _: {"event": "status", "version": version, "status": "archived",
                                           "reason": f"duplicate of v{first} (idempotency key {idempotency_key})"})
            return self._complete(model, first)
        return self._complete(model, version, source)

    def _version_for_key(self, model: str, key: str) -> int | None:
        ledger = self._ledger(model, "versions")
        return next((v for v in ledger.slots() if ledger.read(v).get("idempotency_key") == key), None)

    def _complete(self, model: str, version: int, source: bytes | None = None) -> ModelVersion:
        """Copy the artifact in and log the registration, unless that already happened."""
        if version in self._state(model).registered:
            return self.get(model, version)
        key = self.artifact_key(model, version)
        self.store.sweep_partial_writes(f"{self._m(model)}/artifacts")  # what killed registrations left
        if source is not None or not self.store.exists(key):
            uri = self._absolute(self._ledger(model, "versions").read(version)["source_artifact_uri"])
            self.store.write_bytes(key, source if source is not None else _checked_artifact(uri))
        self._append(model, lambda _: {"event": "registered", "version": version})
        return self.get(model, version)

    def _append(self, model: str, make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        return self._ledger(model, "log").append(lambda seq: {"at": _now(), **make(seq)})[1]

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        if status not in STATUSES:
            raise RegistryError(f"status {status!r}: use one of {STATUSES}")
        self._require(model, version)
        self._append_once(model, {"event": "status", "version": version, "status": status, "reason": reason})
        return self.get(model, version)

    def tag(self, model: str, version: int, tag: str, remove: bool = False) -> ModelVersion:
        """Attach ``tag`` to a version (or take it off): a label to find versions by, never a gate.

        Tagging a version that already has the tag (or untagging one that has not) writes
        nothing, so a repeated command leaves one audit entry.
        """
        tag = validate_tag(tag)
        state = self._state(model)
        self._require(model, version, state)
        if (tag in state.tags.get(version, set())) != remove:
            return self._version(model, version, state)
        self._append(model, lambda _: {"event": "untagged" if remove else "tagged", "version": version, "tag": tag})
        return self.get(model, version)

    def record_decision(self, model: str, version: int, decision: dict[str, Any]) -> ModelVersion:
        self._require(model, version)
        self._append_once(model, {"event": "decision", "version": version, "decision": decision})
        return self.get(model, version)

    def _append_once(self, model: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` unless the log already says it and nothing since has changed what it sets.

        A retried task (or a re-run) repeating a status note or decision then leaves one audit
        entry, not two.  The same note after the version's status changed (another status, a
        promotion or a rollback), or a decision after a different one, is appended again.  (Two
        attempts of one task running at the same moment could still both append.)
        """
        if not self._restates(model, entry):
            self._append(model, lambda _: entry)

    def _restates(self, model: str, entry: dict[str, Any]) -> bool:
        version = entry["version"]
        for _, e in reversed(list(self._ledger(model, "log").entries())):
            if all(e.get(k) == v for k, v in entry.items()):
                return True
            if entry["event"] == "decision":
                changed = e.get("event") == "decision" and e.get("version") == version
            else:
                touched = version in (e.get("version"), e.get("previous"))
                moved = e.get("event") in ("promoted", "rolled_back") and touched
                changed = moved or (e.get("event") == "status" and e.get("version") == version
                                    and e.get("status") != entry["status"])
            if changed:
                return False
        return False

    def promote(self, model: str, version: int, reason: str = "manual",
                expected: int | None | object = ANY_CHAMPION) -> ModelVersion:
        """Make ``version`` the champion (what serving reads); the previous one is archived.

        ``expected`` is the champion the caller believes is current (``None``: no champion
        yet).  If another promotion or rollback moved it first, this raises
        :class:`RegistryConflict` and changes nothing; checked and written as one log entry
        (compare-and-append, as in :meth:`rollback`), so of two people promoting from the same
        view only the first moves the champion; promoting the expected champion itself is a
        conflict too (nothing would move).  Left out, the promotion is unconditional.
        """
        mv = self.get(model, version)
        if mv.smoke:
            raise RegistryError(f"{model} v{version} was trained by a smoke run (shrunk data and epochs): smoke "
                                "versions are never promoted or deployed; train without smoke=true")

        def entry(seq: int) -> dict[str, Any]:
            current = self._state(model, seq).aliases.get(CHAMPION)
            if expected is not ANY_CHAMPION and current != expected:
                now = f"the champion is v{current}" if current is not None else "there is no champion"
                was = f"v{expected}" if expected is not None else "no champion"
                raise RegistryConflict(f"promotion of {model} v{version}: {now}, not {was} as expected (someone "
                                       "else moved it); nothing was changed: check `streamguard-ml registry show "
                                       f"{model} deployed` and decide again")
            if expected is not ANY_CHAMPION and current == version:
                raise RegistryConflict(f"{model} v{version} is the champion already; nothing was changed")
            return {"event": "promoted", "version": version, "reason": reason, "previous": current}

        self._append(model, entry)
        return self.get(model, version)

    def rollback(self, model: str, reason: str = "rollback", expected: int | None = None) -> ModelVersion:
        """Undo the latest champion move that is not undone yet: back to the champion before it.

        The champions form a stack (see :class:`_State`): a promotion pushes, a rollback
        pops, so rolling back again walks further back (1→2→3: 2, then 1), never forward
        to the version just rolled away from.  ``expected`` is the version the caller
        believes is the champion: if another rollback or promotion moved it first, this
        raises :class:`RegistryConflict` and changes nothing, so a repeated or concurrent
        rollback cannot walk back a step too far.  Checked and written as one log entry
        (compare-and-append), so two callers with the same ``expected`` move it once.
        """

        def entry(seq: int) -> dict[str, Any]:
            state = self._state(model, seq)
            current = state.aliases.get(CHAMPION)
            if expected is not None and current != expected:
                now = f"the champion is v{current}" if current is not None else "there is no champion"
                retry = f", then retry with --expect-current {current}" if current is not None else ""
                raise RegistryConflict(f"rollback of {model}: {now}, not v{expected} as expected (someone else "
                                       "moved it); nothing was changed: check `streamguard-ml registry show "
                                       f"{model} deployed`{retry}")
            if current is None:
                raise RegistryError(f"{model} has never had a champion: nothing to roll back")
            if len(state.champions) < 2:
                raise RegistryError(f"{model} v{current} has no earlier champion to roll back to (every "
                                    "earlier move is rolled back already): promote a version instead")
            return {"event": "rolled_back", "version": state.champions[-2], "previous": current,
                    "reason": reason}

        return self.get(model, self._append(model, entry)["version"])


def _deltas(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, float]]:
    keys = sorted(k for k in set(a) | set(b) if _number(a.get(k)) and _number(b.get(k)))
    return {k: {"a": a[k], "b": b[k], "delta": b[k] - a[k]} for k in keys}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _paired(va: ModelVersion, vb: ModelVersion) -> tuple[dict[str, Any], dict[str, Any], str | None] | None:
    """(a's figures, b's figures, split hash) from the gate of whichever version was judged against the other."""
    for older, newer, flip in ((va, vb, False), (vb, va, True)):
        decision = newer.decision or {}
        if decision.get("champion_version") == older.version and decision.get("champion"):
            pair = (decision["champion"], decision["challenger"])
            return (*(pair[::-1] if flip else pair), newer.evaluated_on)
    return None


def _data_of(mv: ModelVersion) -> str:
    test = mv.metrics.get("test_data") or {}
    kind = "synthetic only" if test.get("synthetic_only") else "real code" if test.get("real") else "unknown kind"
    return f"{(mv.evaluated_on or 'unrecorded')[:12]}: {test.get('samples', '?')} functions, {kind}"


#: Lineage fields that name files of the store itself (kept as store-relative keys).
STORE_REFERENCES = ("dataset_card", "split_manifest", "reference_profile")


def relative_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """``lineage`` with every reference into the store as a store-relative key.

    What the pipeline writes is relative already; older entries held absolute paths of
    the store they were written in, which a copied or moved store must not follow.
    """
    out = dict(lineage)
    for name in STORE_REFERENCES:
        if isinstance(out.get(name), str):
            out[name] = layout.store_relative(out[name]) or out[name]
    if isinstance(out.get("members"), dict):
        out["members"] = {k: (layout.store_relative(v) or v) if isinstance(v, str) else v
                          for k, v in out["members"].items()}
    parent = out.get("fine_tuned_from")
    if isinstance(parent, dict) and isinstance(parent.get("artifact_uri"), str):
        out["fine_tuned_from"] = {**parent, "artifact_uri": layout.store_relative(parent["artifact_uri"])
                                  or parent["artifact_uri"]}
    return out


def _checked_artifact(uri: str) -> bytes:
    """The artifact's bytes once :func:`packaging.check_archive` passed them (links, escapes,
    unknown members, bombs are refused) — also when a retry re-reads the source."""
    from .packaging import check_archive

    data = _read_artifact(uri)
    check_archive(data, uri)
    return data


def archive_operating_point(archive: bytes) -> dict[str, Any] | None:
    """``{"threshold", "policy", ..., "calibration"}`` from a ``model.tar.gz``'s config, read in memory.

    Only the config member is read (nothing is extracted); an archive that is not a
    model of this pipeline, or one saved before operating points, gives None (threshold 0.5).
    """
    import io
    import json
    import tarfile

    from .kinds import CONFIG_FILE

    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./") == CONFIG_FILE), None)
            handle = tar.extractfile(member) if member is not None else None
            config = json.loads(handle.read()) if handle is not None else {}
    except (tarfile.TarError, OSError, ValueError):
        return None
    point = config.get("operating_point")
    if not isinstance(point, dict):
        return None
    return {**point, "calibration": (config.get("calibration") or {}).get("method", "none")}


def _read_artifact(uri: str) -> bytes:
    from .store import read_uri_bytes

    try:
        return read_uri_bytes(uri)
    except StoreError as exc:
        raise RegistryError(f"artifact {uri} cannot be read: {exc}") from exc
