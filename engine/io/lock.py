"""One process per output folder: an exclusive lock file holding the owner's pid and host."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, owned by another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str = ".lock") -> Iterator[Path]:
    """Hold folder/name while the block runs. A lock whose owner is alive on this host is a ValueError naming
    it; a lock left by a dead process on this host is taken over with a warning naming it; one from another
    host is reported as an error, not taken (its owner may be alive there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (json.JSONDecodeError, OSError):
                owner = {}
            pid, host = owner.get("pid"), owner.get("host")
            if host not in (None, me["host"]):
                raise ValueError(
                    f"{folder} is locked by pid {pid} on host {host} ({path}); remove the lock if that run is gone"
                ) from None
            if isinstance(pid, int) and _alive(pid):
                raise ValueError(f"{folder} is in use by another process (pid {pid}; lock {path})") from None
            print(
                f"warning: {path}: taking over a stale lock (pid {pid} on this host is gone)", file=sys.stderr
            )
            path.unlink(missing_ok=True)
    else:
        raise ValueError(f"could not take the lock {path}")
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def one_process_per_folder(run):
    """Decorator for a stage's `run(config, inputs, out_dir, ...)`: it holds out_dir's lock while it runs."""

    @functools.wraps(run)
    def locked(cfg, inputs, out_dir, *args, **kwargs):
        with folder_lock(out_dir):
            return run(cfg, inputs, out_dir, *args, **kwargs)

    return locked
