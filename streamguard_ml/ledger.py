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
behind.  Its key names its owner (``<millis>-<nonce>-<owner>``, the owner as
:func:`~streamguard_ml.store.process_owner` writes it: host, machine id, pid and
process start time), so a writer on the same machine sees at once that the
owner is dead and takes the slot over.  A proposal whose owner cannot be checked
(another machine's, or one written before owners were recorded) is taken over
once this writer has watched it for ``stale_after`` seconds (:data:`STALE_AFTER_S`;
measured on this writer's clock, so clocks need not agree): a live writer holds
a proposal only for one listing and one write.  Taking over means deleting the
stale proposal and claiming the same slot; should its owner wake up after all,
``put_if_absent`` decides between the two where it is atomic (local stores,
Amazon S3): one entry, never two, and no gap in the numbering.  A
writer gives up with :class:`LedgerError` after ``give_up_after`` seconds
(:data:`GIVE_UP_AFTER_S`), which must be at least twice ``stale_after``, so a
crashed writer never makes the others give up.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Callable

from .store import Store, json_bytes, owner_alive, process_owner

ENTRY = "entry.json"
#: How long a writer watches a proposal it cannot check before taking its slot over (seconds).
STALE_AFTER_S: float = 15.0
#: How long a writer keeps trying for a slot before it gives up (seconds); at least 2 x staleness.
GIVE_UP_AFTER_S: float = 120.0


class LedgerError(RuntimeError):
    """A slot could not be claimed; the message names the log."""


class Ledger:
    """Numbered, immutable JSON entries under ``prefix`` of ``store``."""

    def __init__(self, store: Store, prefix: str, stale_after: float = STALE_AFTER_S,
                 give_up_after: float = GIVE_UP_AFTER_S):
        if give_up_after < 2 * stale_after:
            raise ValueError(f"ledger {prefix}: give_up_after ({give_up_after} s) must be at least twice "
                             f"stale_after ({stale_after} s), or a crashed writer makes the others give up")
        self.store = store
        self.prefix = prefix.strip("/")
        self.stale_after = stale_after
        self.give_up_after = give_up_after
        self._cache: dict[int, dict[str, Any]] = {}  # entries never change once committed
        self._first_seen: dict[str, float] = {}  # proposal key -> when this writer first saw it (monotonic)

    def _slot(self, seq: int) -> str:
        return f"{self.prefix}/{seq:06d}"

    # -- reading ----------------------------------------------------------------
    def slots(self) -> list[int]:
        """Committed slot numbers, ascending (there may be gaps: slots skipped by older versions of this code)."""
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
        An exception from ``make`` (a precondition that no longer holds) ends the
        append with nothing written.
        """
        slots = self.slots()
        seq = start if start is not None else (slots[-1] + 1 if slots else 1)
        deadline = time.monotonic() + self.give_up_after
        attempt = 0
        while True:
            outcome, others = self._try_slot(seq, make(seq))
            if outcome == "committed":
                return seq, self._cache[seq]
            if outcome == "taken":
                seq += 1
                continue
            if self._take_over(others):
                continue  # only dead writers' claims were in the way: try the same slot again now
            if time.monotonic() >= deadline:
                raise LedgerError(f"{self.store.uri(self.prefix)}: slot {seq} stayed claimed by other writers for "
                                  f"{self.give_up_after} s (claims are taken over after {self.stale_after} s); "
                                  "retry, and look for a writer that hangs")
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))  # contention: back off, look again
            attempt += 1

    def _try_slot(self, seq: int, entry: dict[str, Any]) -> tuple[str, list[str]]:
        """``committed``, ``taken`` (an entry exists) or ``contended``, and the other proposals seen."""
        slot = self._slot(seq)
        mine = f"{slot}/proposals/{int(time.time() * 1000):013d}-{uuid.uuid4().hex}-{process_owner()}"
        self.store.write_bytes(mine, b"")
        seen = self.store.list(slot)
        try:
            if f"{slot}/{ENTRY}" in seen:
                return "taken", []
            others = [k for k in seen if k != mine]
            if others:
                return "contended", others
            # Alone at this slot: the splitter guarantees no other live writer can commit it.
            if self.store.put_if_absent(f"{slot}/{ENTRY}", json_bytes(entry)):
                self._cache[seq] = json.loads(json_bytes(entry))
                return "committed", []
            return "taken", []
        finally:
            self.store.delete(mine)

    def _take_over(self, others: list[str]) -> bool:
        """Delete the proposals in ``others`` if every one is stale; whether it did.

        Stale: its owner is known dead (same machine), or this writer has watched it
        for ``stale_after`` seconds.  A live writer's proposal is never deleted here
        while it is fresh, and any fresh one means real contention: back off instead.
        """
        now = time.monotonic()
        slot = others[0].split("/proposals/")[0] if others else ""
        for gone in [k for k in self._first_seen if k.startswith(f"{slot}/") and k not in others]:
            del self._first_seen[gone]  # withdrawn since: forget it
        stale = []
        for key in others:
            first = self._first_seen.setdefault(key, now)
            owner = key.rsplit("/", 1)[1].split("-", 2)[2:]  # <millis>-<nonce>-<owner>; older keys have none
            if (owner and owner_alive(owner[0]) is False) or now - first >= self.stale_after:
                stale.append(key)
        if not others or len(stale) < len(others):
            return False
        for key in stale:
            self.store.delete(key)
            self._first_seen.pop(key, None)
        return True
