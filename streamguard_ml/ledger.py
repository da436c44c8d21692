"""An append-only, numbered log on any store, safe for concurrent writers.

The registry keeps every fact (a version, a status change, a promotion) as one
entry of such a log.  Entries are claimed slot by slot with a *splitter*
(Moir & Anderson) built from plain writes of unique keys and a listing — no
lock, and no reliance on the atomicity of conditional PUTs::

    <prefix>/000007/proposals/<millis>-<nonce>   a writer's claim on slot 7 (empty)
    <prefix>/000007/entry.json                   the committed entry (immutable)

A writer proposes, lists the slot, and commits only when it sees no other
proposal and no entry; otherwise it withdraws and backs off.  Because each
writer writes *before* it lists, of two overlapping writers at least one sees
the other, so at most one can commit a slot (a winner deletes its proposal only
after its entry exists).  This needs read-after-write consistency for writes,
deletes and listings, which local directories, Amazon S3 (since 2020) and
moto's server all give.  Conditional writes would be simpler, but moto checks
``If-None-Match``/``If-Match`` and then writes without a lock, so concurrent
writers there can both "win" (see scripts/probe_moto_conditional_puts.py);
many S3-compatible stores lack them altogether.  The commit itself still uses
``put_if_absent``, as a second guard where the store offers it.

A writer that crashed between proposing and committing leaves a proposal
behind; once it is older than ``stale_after`` seconds the slot is skipped (a
gap in the numbering, never a lost or doubled entry).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Callable

from .store import Store, json_bytes

ENTRY = "entry.json"


class LedgerError(RuntimeError):
    """A slot could not be claimed; the message names the log."""


class Ledger:
    """Numbered, immutable JSON entries under ``prefix`` of ``store``."""

    def __init__(self, store: Store, prefix: str, stale_after: float = 120.0, max_attempts: int = 200):
        self.store = store
        self.prefix = prefix.strip("/")
        self.stale_after = stale_after
        self.max_attempts = max_attempts
        self._cache: dict[int, dict[str, Any]] = {}  # entries never change once committed

    def _slot(self, seq: int) -> str:
        return f"{self.prefix}/{seq:06d}"

    # -- reading ----------------------------------------------------------------
    def slots(self) -> list[int]:
        """Committed slot numbers, ascending (gaps are slots abandoned by crashed writers)."""
        out = []
        for key in self.store.list(self.prefix):
            parts = key[len(self.prefix) + 1 :].split("/")
            if len(parts) == 2 and parts[1] == ENTRY and parts[0].isdigit():
                out.append(int(parts[0]))
        return sorted(out)

    def read(self, seq: int) -> dict[str, Any]:
        if seq not in self._cache:
            self._cache[seq] = self.store.read_json(f"{self._slot(seq)}/{ENTRY}")
        return self._cache[seq]

    def entries(self, before: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, entry)`` pairs in log order (only those below ``before`` when given)."""
        return [(s, self.read(s)) for s in self.slots() if before is None or s < before]

    # -- writing ----------------------------------------------------------------
    def append(self, make: Callable[[int], dict[str, Any]], start: int | None = None) -> tuple[int, dict[str, Any]]:
        """Commit ``make(seq)`` at the first free slot; returns ``(seq, entry)``.

        ``make`` is called again for every slot tried, so an entry that depends on
        the log before it (a promotion naming the previous champion) is always
        computed from exactly the entries that precede it — compare-and-append.
        """
        slots = self.slots()
        seq = start if start is not None else (slots[-1] + 1 if slots else 1)
        for attempt in range(self.max_attempts):
            entry = make(seq)
            outcome = self._try_slot(seq, entry)
            if outcome == "committed":
                self._cache[seq] = json.loads(json_bytes(entry))
                return seq, self._cache[seq]
            if outcome == "taken":
                seq += 1
                continue
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))  # contention: back off, look again
            if self._settled(seq):
                seq += 1
        raise LedgerError(f"{self.store.uri(self.prefix)}: no free slot after {self.max_attempts} attempts")

    def _try_slot(self, seq: int, entry: dict[str, Any]) -> str:
        """``committed``, ``taken`` (an entry exists) or ``contended`` (another writer is here)."""
        slot = self._slot(seq)
        mine = f"{slot}/proposals/{int(time.time() * 1000):013d}-{uuid.uuid4().hex}"
        self.store.write_bytes(mine, b"")
        seen = self.store.list(slot)
        try:
            if f"{slot}/{ENTRY}" in seen:
                return "taken"
            if any(k != mine for k in seen):
                return "contended"
            # Alone at this slot: the splitter guarantees no other writer can commit it.
            return "committed" if self.store.put_if_absent(f"{slot}/{ENTRY}", json_bytes(entry)) else "taken"
        finally:
            self.store.delete(mine)

    def _settled(self, seq: int) -> bool:
        """Whether slot ``seq`` is lost to us: committed by another, or held by a crashed writer."""
        slot = self._slot(seq)
        seen = self.store.list(slot)
        if f"{slot}/{ENTRY}" in seen:
            return True
        now_ms = time.time() * 1000
        ages = [now_ms - int(k.rsplit("/", 1)[1].split("-")[0]) for k in seen if "/proposals/" in k]
        return bool(ages) and min(ages) > self.stale_after * 1000
