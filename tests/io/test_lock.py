"""One process per output folder: a live owner is an error naming it, a dead owner's lock is taken over, a
lock from another host is reported and left alone."""

import json
import os
import socket
import subprocess
import sys

import pytest

from videogpa.engine.io.lock import folder_lock


def test_live_owner_is_an_error_and_the_lock_is_released(tmp_path):
    with folder_lock(tmp_path) as lock:
        owner = json.loads(lock.read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname()}
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
    assert f"{lock}: taking over a stale lock (its process on this host is gone)" in capsys.readouterr().err


def test_another_hosts_lock_is_reported_not_taken(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    with pytest.raises(ValueError, match="locked by pid 1 on host some-other-node"):
        with folder_lock(tmp_path):
            pass
    assert json.loads(lock.read_text())["host"] == "some-other-node"
