"""Nothing half-done looks done in the registry (issue 17, items 2, 3, 8 and 11).

- Rollback walks back through the champion history (a stack: a promotion pushes, a
  rollback pops), and ``expected=`` / ``--expect-current`` turns a repeated or concurrent
  rollback into a conflict instead of a redeploy.
- A registration killed (``SIGKILL``, a real process) while its artifact is written leaves
  no version that list / latest / get / promote can see, and its temporary file is gone
  after the next registration.
- A ledger writer killed while it holds a slot does not block the next writer for longer
  than the documented staleness, which is well below the time writers give up.
- A stray folder under ``registry/`` is skipped (and logged); model names follow one rule,
  the one their message states; a missing S3 bucket is a one-line error naming the bucket.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import string
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from streamguard_ml.cli import main as cli_main
from streamguard_ml.inference import pack_archive
from streamguard_ml.ledger import GIVE_UP_AFTER_S, STALE_AFTER_S, Ledger, LedgerError
from streamguard_ml.registry import MAX_MODEL_NAME, Registry, RegistryConflict, RegistryError, validate_model_name
from streamguard_ml.store import LocalStore, S3Store, StoreError


@pytest.fixture(params=["local", "s3"])
def any_store(request):
    return request.getfixturevalue("store" if request.param == "local" else "s3_store")


def _archive(tmp_path: Path, name: str = "model.tar.gz", size: int = 0) -> str:
    """A model archive the registry accepts; ``size`` bytes of incompressible weights make it big."""
    folder = tmp_path / f"{name}.d"
    folder.mkdir()
    (folder / "streamguard_model.json").write_text(json.dumps({"model_type": "gnn"}))
    (folder / "model.safetensors").write_bytes(os.urandom(size) if size else b"weights")
    path = tmp_path / name
    path.write_bytes(pack_archive(folder))
    return str(path)


@pytest.fixture
def artifact(tmp_path):
    return _archive(tmp_path)


def _registry_with(store, artifact: str, n: int) -> Registry:
    reg = Registry(store)
    for _ in range(n):
        reg.register("m", artifact, {"accuracy": 0.5})
    return reg


# -- item 2: rollback walks back, with an optional precondition ---------------------------------
def test_rollback_walks_back_through_the_champion_history(any_store, artifact):
    reg = _registry_with(any_store, artifact, 3)
    for v in (1, 2, 3):
        reg.promote("m", v)
    assert reg.rollback("m").version == 2
    assert reg.rollback("m").version == 1  # not 3: the second rollback goes further back
    assert reg.champion("m").version == 1 and reg.get("m", 3).status == "archived"
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("m")
    assert reg.champion("m").version == 1
    events = [(e["event"], e.get("previous"), e["version"]) for e in reg.events("m") if e["event"] != "registered"]
    assert events[-2:] == [("rolled_back", 3, 2), ("rolled_back", 2, 1)]


def test_a_promotion_between_rollbacks_is_undone_first(store, artifact):
    """1→2→3, rollback (2), promote 4, rollback (2 again: 4's move is undone), rollback (1)."""
    reg = _registry_with(store, artifact, 4)
    for v in (1, 2, 3):
        reg.promote("m", v)
    assert reg.rollback("m").version == 2
    reg.promote("m", 4)
    assert reg.rollback("m").version == 2
    assert reg.rollback("m").version == 1
    reg.promote("m", 1)  # promoting the champion again is no move: nothing new to undo
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback("m")


def test_a_repeated_rollback_with_the_precondition_is_a_conflict_not_a_redeploy(any_store, artifact):
    reg = _registry_with(any_store, artifact, 2)
    reg.promote("m", 1)
    reg.promote("m", 2)  # the bad version
    assert reg.rollback("m", expected=2).version == 1
    with pytest.raises(RegistryConflict, match=r"champion is v1, not v2") as caught:
        reg.rollback("m", expected=2)
    assert "m" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(RegistryError, match="no earlier champion"):  # without it: never back to v2 either
        reg.rollback("m")
    assert reg.champion("m").version == 1
    assert [e["event"] for e in reg.events("m")].count("rolled_back") == 1


def _race(store_root: str, n: int, change=lambda reg, i, **kw: reg.rollback("m", **kw), **kwargs) -> list:
    """``n`` registry changes (rollbacks unless ``change`` says otherwise) at the same moment,
    each through its own Registry on its own store object."""
    from streamguard_ml.store import open_store

    registries = [Registry(open_store(store_root)) for _ in range(n)]
    for reg in registries:
        getattr(reg.store, "client", None)  # create boto3 clients before the threads start
    barrier, results = threading.Barrier(n), [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = change(registries[i], i, **kwargs).version
        except RegistryError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_rollbacks_with_the_precondition_move_once(any_store, artifact):
    reg = _registry_with(any_store, artifact, 3)
    for v in (1, 2, 3):
        reg.promote("m", v)
    results = _race(any_store.root, 3, expected=3)
    assert sorted(r for r in results if isinstance(r, int)) == [2]
    assert all(isinstance(r, RegistryConflict) for r in results if not isinstance(r, int))
    assert Registry(any_store).champion("m").version == 2


def test_concurrent_rollbacks_without_the_precondition_walk_back_never_forward(any_store, artifact):
    reg = _registry_with(any_store, artifact, 2)
    reg.promote("m", 1)
    reg.promote("m", 2)
    results = _race(any_store.root, 2)
    moved, refused = [r for r in results if isinstance(r, int)], [r for r in results if not isinstance(r, int)]
    assert moved == [1] and len(refused) == 1 and "no earlier champion" in str(refused[0])  # never back to 2
    assert Registry(any_store).champion("m").version == 1


def test_two_concurrent_rollbacks_from_three_champions_end_on_the_first(store, artifact):
    reg = _registry_with(store, artifact, 3)
    for v in (1, 2, 3):
        reg.promote("m", v)
    assert sorted(_race(store.root, 2)) == [1, 2]
    assert reg.champion("m").version == 1
    moves = [(e["previous"], e["version"]) for e in reg.events("m") if e["event"] == "rolled_back"]
    assert moves == [(3, 2), (2, 1)]  # each computed from the log before it


def test_cli_rollback_expect_current(store, artifact, capsys):
    reg = _registry_with(store, artifact, 2)
    reg.promote("m", 1)
    reg.promote("m", 2)
    args = ["registry", "rollback", "m", "--expect-current", "2", "--store", store.root]
    assert cli_main(args) == 0 and "rolled back to v1" in capsys.readouterr().out
    assert cli_main(args) == 3  # a conflict: its own exit code, one line, nothing changed
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "champion is v1, not v2" in err and "--expect-current" in err
    assert Registry(store).champion("m").version == 1


def test_promote_with_expected_champion_is_compare_and_append(store, artifact, capsys):
    reg = _registry_with(store, artifact, 3)
    with pytest.raises(RegistryConflict, match="there is no champion, not v1"):
        reg.promote("m", 2, expected=1)
    reg.promote("m", 1, expected=None)  # None: "no champion yet", as a page on an empty model shows
    with pytest.raises(RegistryConflict, match="the champion is v1, not no champion"):
        reg.promote("m", 2, expected=None)
    assert reg.champion("m").version == 1 and [e["event"] for e in reg.events("m")].count("promoted") == 1
    args = ["registry", "promote", "m", "3", "--expect-current", "2", "--store", store.root]
    assert cli_main(args) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "champion is v1, not v2" in err
    assert cli_main(args[:-4] + ["--expect-current", "1", "--store", store.root]) == 0
    assert reg.champion("m").version == 3


def test_concurrent_promotions_from_one_view_move_the_champion_once(any_store, artifact):
    _registry_with(any_store, artifact, 3)
    results = _race(any_store.root, 2, change=lambda reg, i: reg.promote("m", i + 2, expected=None))
    moved = [r for r in results if isinstance(r, int)]
    assert len(moved) == 1 and sum(isinstance(r, RegistryConflict) for r in results) == 1
    assert Registry(any_store).champion("m").version == moved[0]


# -- item 3: a registration killed mid-write leaves nothing visible ----------------------------
_HANG_LOCAL = """
import os, time
real = os.replace
def replace(src, dst, *a, **k):  # the artifact is written to its temporary file, not yet renamed
    if str(dst).endswith("model.tar.gz"):
        open(MARKER, "w").close()
        time.sleep(600)
    return real(src, dst, *a, **k)
os.replace = replace
"""
_HANG_S3 = """
import time
from streamguard_ml.store import S3Store
real = S3Store.write_bytes
def write_bytes(self, key, data):  # the artifact's PUT is on the wire
    if key.endswith("model.tar.gz"):
        open(MARKER, "w").close()
        time.sleep(600)
    return real(self, key, data)
S3Store.write_bytes = write_bytes
"""


def _kill_when(marker: Path, script: str, *args: str) -> None:
    """Run ``script`` in a real process, wait for it to write ``marker``, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, f"the writer exited early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the writer never reached the point to kill it at"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _partial_files(store) -> list[Path]:
    if not isinstance(store, LocalStore):
        return []
    return [p for p in (store.path / "registry").rglob(".*") if p.is_file() and not p.name.endswith(".lock")]


def test_a_registration_killed_while_writing_its_artifact_leaves_no_phantom(any_store, tmp_path):
    reg = Registry(any_store)
    reg.register("m", _archive(tmp_path, "small.tar.gz"), {"accuracy": 0.5})
    big = _archive(tmp_path, "big.tar.gz", size=4 << 20)
    marker = tmp_path / "writing"
    hook = _HANG_LOCAL if isinstance(any_store, LocalStore) else _HANG_S3
    script = f"MARKER = {str(marker)!r}\n" + textwrap.dedent(hook) + textwrap.dedent("""
        import sys
        from streamguard_ml.registry import Registry
        from streamguard_ml.store import open_store
        Registry(open_store(sys.argv[1])).register("m", sys.argv[2], {"accuracy": 0.9})
    """)
    _kill_when(marker, script, any_store.root, big)

    reg = Registry(any_store)
    assert reg._ledger("m", "versions").slots() == [1, 2]  # the number was claimed before the kill ...
    assert reg.versions("m") == [1] and [mv.version for mv in reg.list()] == [1]  # ... and is invisible
    assert reg.latest("m").version == 1 and reg.resolve("m", "latest").version == 1
    with pytest.raises(RegistryError, match="no version 2"):
        reg.get("m", 2)
    with pytest.raises(RegistryError, match="no version 2"):
        reg.promote("m", 2)
    assert reg.incomplete("m") == [2]
    if isinstance(any_store, LocalStore):
        partial = _partial_files(any_store)
        assert partial and max(p.stat().st_size for p in partial) > 4 << 20  # the big temporary file is there

    mv = reg.register("m", _archive(tmp_path, "next.tar.gz"), {"accuracy": 0.7})
    assert mv.version == 3 and reg.versions("m") == [1, 3]
    assert _partial_files(any_store) == []  # the next registration removed what the killed one left
    reg.promote("m", 3)
    assert reg.resolve("m", "deployed").version == 3


def test_a_failed_write_removes_its_temporary_file(store, monkeypatch):
    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        store.write_bytes("registry/m/artifacts/000001/model.tar.gz", b"x" * 1000)
    monkeypatch.undo()
    assert [p.name for p in (store.path / "registry/m/artifacts/000001").iterdir()] == []


def test_the_sweep_keeps_a_live_writers_temporary_file(store):
    """Only files whose writer process is gone are removed: a registration in progress keeps its file."""
    from streamguard_ml.store import process_owner

    folder = store.path / "registry/m/artifacts/000001"
    folder.mkdir(parents=True)
    live = folder / f".model.tar.gz.{process_owner()}.abcd1234.part"
    live.write_bytes(b"in progress")
    dead = folder / ".model.tar.gz.otherhost_0123456789ab_12345_1.abcd1234.part"
    dead.write_bytes(b"old")
    os.utime(dead, (0, 0))  # another machine's, and days old
    assert store.sweep_partial_writes("registry/m/artifacts") == ["registry/m/artifacts/000001/" + dead.name]
    assert live.exists() and not dead.exists()


# -- item 8: a crashed ledger writer blocks the next one briefly, never past the give-up time ----
def test_staleness_is_well_below_the_give_up_time():
    assert 2 * STALE_AFTER_S <= GIVE_UP_AFTER_S
    with pytest.raises(ValueError, match="stale_after"):
        Ledger(LocalStore("/tmp/x"), "log", stale_after=60, give_up_after=60)


_HOLD_SLOT = """
import sys, time
from streamguard_ml.ledger import Ledger
from streamguard_ml.store import open_store
root, marker = sys.argv[1:3]
class Holding(type(open_store(root))):  # proposes slot 2, then is killed before it looks and commits
    def list(self, prefix=""):
        if prefix.endswith("/000002"):
            open(marker, "w").close()
            time.sleep(600)
        return super().list(prefix)
Ledger(Holding(root), "log").append(lambda seq: {"who": "killed"})
"""


def test_a_killed_writers_slot_is_taken_over_at_once(any_store, tmp_path):
    store = any_store
    Ledger(store, "log").append(lambda seq: {"who": "first"})
    _kill_when(tmp_path / "holding", _HOLD_SLOT, store.root, str(tmp_path / "holding"))
    assert [k for k in store.list("log/000002") if "/proposals/" in k]  # the dead writer's claim is there

    ledger = Ledger(store, "log")
    started = time.monotonic()
    seq, entry = ledger.append(lambda seq: {"who": "next"})
    waited = time.monotonic() - started
    assert waited < 5 < ledger.stale_after  # its owner is known dead: no wait for staleness
    assert (seq, entry) == (2, {"who": "next"}) and ledger.slots() == [1, 2]  # taken over: no gap
    assert not [k for k in store.list("log") if "/proposals/" in k]


def test_another_machines_crashed_claim_blocks_only_for_the_staleness(tmp_path):
    store = LocalStore(tmp_path / "s")
    ledger = Ledger(store, "log", stale_after=0.6, give_up_after=30)
    ledger.append(lambda seq: {"n": 1})
    store.write_bytes(f"log/000002/proposals/{int(time.time() * 1000):013d}-dead-otherhost_0123456789ab_4242_7", b"")
    started = time.monotonic()
    seq, _ = ledger.append(lambda seq: {"n": 2})
    waited = time.monotonic() - started
    assert seq == 2 and ledger.slots() == [1, 2]
    assert 0.5 <= waited < 0.6 + 3  # it waited for staleness, and not much longer


def test_a_slot_that_never_frees_up_gives_up_with_a_clear_error(tmp_path):
    class EverBusy(LocalStore):  # every look at the slot finds a fresh claim by someone else
        def list(self, prefix=""):
            seen = super().list(prefix)
            if prefix.endswith("/000001"):
                seen.append(f"{prefix}/proposals/{int(time.time() * 1000):013d}-{time.monotonic_ns()}")
            return seen

    ledger = Ledger(EverBusy(tmp_path / "s"), "log", stale_after=0.2, give_up_after=0.6)
    started = time.monotonic()
    with pytest.raises(LedgerError, match=r"log.*slot 1.*0\.6 s") as caught:
        ledger.append(lambda seq: {"n": 1})
    assert time.monotonic() - started < 5 and "\n" not in str(caught.value)


# -- item 11: stray folders, names, a missing bucket ---------------------------------------------
def test_a_stray_folder_under_the_registry_is_skipped_and_logged(any_store, artifact, caplog):
    reg = _registry_with(any_store, artifact, 1)
    entry = any_store.read_bytes("registry/m/versions/000001/entry.json")
    any_store.write_bytes("registry/.trash/versions/000001/entry.json", entry)  # a model moved "to the bin"
    any_store.write_bytes("registry/my backup/versions/000001/entry.json", entry)
    any_store.write_bytes("registry/half/versions/000001/entry.json", entry)  # a valid name, but no log
    any_store.write_bytes("registry/notes/README.txt", b"hello")
    with caplog.at_level(logging.WARNING, logger="streamguard_ml.registry"):
        assert reg.models() == ["m"]
        assert [(mv.model, mv.version) for mv in reg.list()] == [("m", 1)]
    logged = caplog.text
    assert "'.trash'" in logged and "'my backup'" in logged and "half" in logged


def test_a_model_with_a_damaged_entry_is_skipped_when_listing_all_and_named_when_asked_for(store, artifact, caplog):
    reg = _registry_with(store, artifact, 1)
    store.write_bytes("registry/broken/versions/000001/entry.json", b'{"not": "a version"}')
    store.write_bytes("registry/broken/log/000001/entry.json", b'{"event": "registered", "version": 1}')
    with caplog.at_level(logging.WARNING, logger="streamguard_ml.registry"):
        assert [(mv.model, mv.version) for mv in reg.list()] == [("m", 1)]
    assert "broken" in caplog.text
    with pytest.raises(RegistryError, match=r"registry/broken/versions/000001/entry.json"):
        reg.list("broken")  # asked for by name: a clear error, not a skip


def test_a_stray_folder_does_not_break_the_cli_list(store, artifact, capsys):
    _registry_with(store, artifact, 1)
    store.write_bytes("registry/.trash/versions/000001/entry.json", b"{}")
    assert cli_main(["registry", "list", "--json", "--store", store.root]) == 0
    assert [d["model"] for d in json.loads(capsys.readouterr().out)] == ["m"]


ALLOWED = set(string.ascii_letters + string.digits + "-_")


@pytest.mark.parametrize("char", sorted(set(string.printable) | {"é", "\u00a0", "\u2028"}))
def test_the_name_rule_accepts_exactly_what_its_message_says(char):
    name = f"a{char}b"
    if char in ALLOWED:
        assert validate_model_name(name) == name
        return
    with pytest.raises(RegistryError) as caught:
        validate_model_name(name)
    message = str(caught.value)
    assert repr(name) in message and "letters, digits, '-' or '_'" in message


@pytest.mark.parametrize("name", ["", ".hidden", "-dash-first", "_under", "a" * (MAX_MODEL_NAME + 1), None, 5])
def test_names_that_break_the_rule_elsewhere(name):
    with pytest.raises(RegistryError, match="invalid model name"):
        validate_model_name(name)


def test_the_longest_allowed_name_works_and_a_300_character_name_is_one_line(store, artifact, capsys):
    longest = "a" * MAX_MODEL_NAME
    assert Registry(store).register(longest, artifact, {}).model == longest
    metrics = Path(artifact).with_name("metrics.json")
    metrics.write_text("{}")
    code = cli_main(["registry", "register", "--model", "x" * 300, "--artifact", artifact,
                     "--metrics", str(metrics), "--store", store.root])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"at most {MAX_MODEL_NAME}" in err and "300" in err
    assert len(err) < 400  # the name is shown cut short


def test_a_missing_bucket_is_one_line_naming_the_bucket_and_the_fix(aws_env, capsys):
    store = S3Store("s3://sg-no-such-bucket-17/streamguard")
    for call in (lambda: store.list("registry"), lambda: store.read_bytes("k"),
                 lambda: store.write_bytes("k", b"x"), lambda: store.exists("k"),
                 lambda: store.put_if_absent("k", b"x")):
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert "sg-no-such-bucket-17" in message and "does not exist" in message and "create" in message
        assert "\n" not in message
    assert cli_main(["registry", "list", "--store", "s3://sg-no-such-bucket-17/streamguard"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sg-no-such-bucket-17" in err and "STREAMGUARD_STORE" in err
