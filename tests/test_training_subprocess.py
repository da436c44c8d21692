"""Issue 17 item 9: a killed task must not leave its training subprocess running.

Real processes throughout: a "task" process starts a long-running child through the
local backend's ``_run_streaming`` (the child calls the entrypoint's own
``exit_with_parent``), then the task is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TASK = textwrap.dedent("""
    import sys
    from streamguard_ml.backends import _run_streaming
    child = ("from streamguard_ml.train import exit_with_parent; exit_with_parent(0.1); import os, time; "
             "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
    _run_streaming([sys.executable, "-c", child.replace("sys.argv[1]", repr(sys.argv[1]))], dict(__import__("os").environ))
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _start_task(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    marker = tmp_path / "child.pid"
    task = subprocess.Popen([sys.executable, "-c", TASK, str(marker)])
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()):
        assert task.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return task, int(marker.read_text())


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_training_subprocess_dies_with_its_task(tmp_path, sig):
    task, child = _start_task(tmp_path)
    try:
        assert _alive(child)
        task.send_signal(sig)
        task.wait(30)
        assert _gone_within(child, 10), f"training subprocess {child} outlived its task (signal {sig.name})"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_without_a_parent_pid_nothing_is_watched(monkeypatch):
    """On SageMaker the variable is unset: the entrypoint must not exit on its own."""
    import threading

    from streamguard_ml.train import PARENT_PID_ENV, exit_with_parent

    monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    before = {t.name for t in threading.enumerate()}
    exit_with_parent(0.01)
    assert "exit-with-parent" not in {t.name for t in threading.enumerate()} - before
