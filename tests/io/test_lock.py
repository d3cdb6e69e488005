"""One process per output folder: a live owner is an error naming it, a dead owner's lock is taken over, a
lock from another host is reported and left alone."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from videogpa.engine.io.lock import folder_lock


def test_live_owner_is_an_error_and_the_lock_is_released(tmp_path):
    with folder_lock(tmp_path) as lock:
        owner = json.loads(lock.read_text())
        assert {k: owner[k] for k in ("pid", "host")} == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(
            ValueError, match=f"in use by another process \\(pid {os.getpid()}; lock .*\\.lock"
        ):
            with folder_lock(tmp_path):
                pass
    assert not lock.exists()


def test_a_dead_owners_lock_is_taken_over_and_reported(tmp_path, capsys):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = tmp_path / ".lock"
    # a killed run's lock
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with folder_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    expected = f"{lock}: taking over a stale lock (its process (pid {int(dead.stdout)}) has exited)"
    assert expected in capsys.readouterr().err


def test_a_killed_owner_not_yet_reaped_or_a_reused_pid_is_stale(tmp_path, capsys):
    """Audit: right after kill -9 the owner is a zombie until its parent reaps it, and os.kill(pid, 0) still
    succeeds: the lock read as held. The owner's start time tells a dead or replaced owner apart."""
    from videogpa.engine.io.lock import _started

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = tmp_path / ".lock"
    lock.write_text(
        json.dumps({"pid": killed.pid, "host": socket.gethostname(), "started": _started(killed.pid)})
    )
    with pytest.raises(ValueError, match=f"in use by another process \\(pid {killed.pid}"):
        with folder_lock(tmp_path):
            pass
    killed.kill()  # kill -9; not reaped (no wait) until the end of the test: a zombie
    deadline = time.time() + 10
    while _started(killed.pid) is not None and time.time() < deadline:
        time.sleep(0.01)
    with folder_lock(tmp_path):
        pass
    assert f"taking over a stale lock (its process (pid {killed.pid}) has exited)" in capsys.readouterr().err
    killed.wait()
    lock.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "1"})
    )  # pid reused
    with folder_lock(tmp_path):
        pass
    assert f"pid {os.getpid()} now belongs to another process" in capsys.readouterr().err


def test_another_hosts_lock_is_reported_not_taken(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    with pytest.raises(ValueError, match="locked by pid 1 on host some-other-node"):
        with folder_lock(tmp_path):
            pass
    assert json.loads(lock.read_text())["host"] == "some-other-node"
