"""The ledger's slot claims under the interleavings that break naive designs."""

from __future__ import annotations

import threading
import time

from streamguard_ml.ledger import Ledger
from streamguard_ml.store import LocalStore


class Recording(LocalStore):
    """A local store that remembers what each listing of a slot saw, and can run a hook
    the first time a slot is listed: after its writer proposed, before it decides."""

    def __init__(self, root, hook=None):
        super().__init__(root)
        self.hook, self.listings, self.listed = hook, [], threading.Event()

    def list(self, prefix=""):
        is_slot = prefix.rsplit("/", 1)[-1].isdigit()
        if is_slot and self.hook:
            hook, self.hook = self.hook, None
            hook()
        seen = super().list(prefix)
        if is_slot:
            self.listings.append(seen)
            self.listed.set()
        return seen


def test_a_writer_that_sneaks_in_between_propose_and_list_never_shares_a_slot(tmp_path):
    root = tmp_path / "s"
    b_store = Recording(root)
    results = {}

    def b_writes_now():  # A has proposed slot 1 and not yet looked: B arrives
        worker = threading.Thread(target=lambda: results.setdefault(
            "b", Ledger(b_store, "log").append(lambda seq: {"who": "b", "seq": seq})))
        worker.start()
        b_store.listed.wait(10)
        results["worker"] = worker

    results["a"] = Ledger(Recording(root, b_writes_now), "log").append(lambda seq: {"who": "a", "seq": seq})
    results["worker"].join(30)
    assert any("/proposals/" in k for k in b_store.listings[0]), "B must have seen A's claim on slot 1"
    ledger = Ledger(LocalStore(root), "log")
    assert sorted([results["a"][0], results["b"][0]]) == ledger.slots() == [1, 2]
    assert {e["who"] for _, e in ledger.entries()} == {"a", "b"}
    assert all(e["seq"] == seq for seq, e in ledger.entries())  # each entry was made for the slot it holds
    assert not [k for k in LocalStore(root).list("log") if "/proposals/" in k]  # nothing left behind


def test_a_crashed_writers_proposal_blocks_its_slot_only_until_it_is_stale(tmp_path):
    """A claim whose owner cannot be checked (here: written before owners were recorded) is
    taken over once stale; killed writers of this machine: tests/test_registry_integrity.py."""
    store = LocalStore(tmp_path / "s")
    ledger = Ledger(store, "log", stale_after=0.3, give_up_after=5)
    ledger.append(lambda seq: {"n": 1})
    store.write_bytes(f"log/000002/proposals/{int(time.time() * 1000):013d}-crashed", b"")
    started = time.perf_counter()
    seq, _ = ledger.append(lambda seq: {"n": 2})
    assert seq == 2 and ledger.slots() == [1, 2]  # taken over: no gap, never a shared or lost slot
    assert time.perf_counter() - started >= 0.25  # it waited for the proposal to go stale first
    assert not [k for k in store.list("log") if "/proposals/" in k]


def test_a_live_writers_fresh_claim_is_never_taken_over(tmp_path):
    """A claim of a live process of this machine is contention, not a crash: the writer waits."""
    from streamguard_ml.store import process_owner

    store = LocalStore(tmp_path / "s")
    claim = f"log/000001/proposals/{int(time.time() * 1000):013d}-live-{process_owner()}"
    store.write_bytes(claim, b"")
    ledger = Ledger(store, "log", stale_after=0.4, give_up_after=5)
    threading.Timer(0.2, lambda: store.write_json("log/000001/entry.json", {"n": "other"})).start()
    seq, entry = ledger.append(lambda seq: {"n": "mine"})
    assert (seq, entry) == (2, {"n": "mine"}) and store.exists(claim)  # it moved on; the claim was left alone


def test_make_sees_exactly_the_entries_before_its_slot(tmp_path):
    ledger = Ledger(LocalStore(tmp_path / "s"), "log")
    for _ in range(3):
        ledger.append(lambda seq: {"before": [e["before"] for _, e in ledger.entries(seq)]})
    assert [e["before"] for _, e in ledger.entries()] == [[], [[]], [[], [[]]]]
