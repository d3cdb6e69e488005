"""One loop per output folder: a live owner's lock is an error, a dead owner's lock is taken over."""

import os
import subprocess
import sys

import pytest
from pipeline_helpers import REPO

from videogpa.engine.generation.loop import Loop, load_loop_config


def test_loop_folder_lock(tmp_path):
    loop = Loop(
        load_loop_config(REPO / "recipes" / "configs" / "tiny.yaml"), tmp_path, REPO / "recipes" / "dpo.py"
    )
    lock = tmp_path / ".loop.lock"
    with loop.lock():
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(ValueError, match=f"in use by another loop \\(pid {os.getpid()}"):
            with loop.lock():
                pass
    assert not lock.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock.write_text(dead.stdout.strip())  # a killed loop's lock
    with loop.lock():
        assert lock.read_text() == str(os.getpid())
