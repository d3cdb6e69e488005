"""One process per output folder (or per shard of one): an exclusive lock file holding the owner's pid and
host. Shards of one stage share a folder: each holds its own lock (e.g. `.lock.generate.shard-I-of-N`), and
a lock refuses every other live lock of the folder (`.lock`, `.lock.*`) but those it may share it with."""

from __future__ import annotations

import contextlib
import fnmatch
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


def _check_owner(folder: Path, path: Path, me: dict) -> None:
    """ValueError naming the owner of the lock file `path` when it is alive or on another host; returns when
    the lock is stale (its process on this host is gone) or was just released."""
    try:
        owner = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return
    except (json.JSONDecodeError, OSError):
        owner = {}
    pid, host = owner.get("pid"), owner.get("host")
    if host not in (None, me["host"]):
        raise ValueError(
            f"{folder} is locked by pid {pid} on host {host} ({path}); remove the lock if that run is gone"
        )
    if isinstance(pid, int) and _alive(pid):
        raise ValueError(f"{folder} is in use by another process (pid {pid}; lock {path})")


def _others(folder: Path, name: str, shares_with: str | None) -> list[Path]:
    """The folder's other lock files of this family (`.lock`, `.lock.*`) that this lock may not coexist with."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.name != name
        and (p.name == ".lock" or p.name.startswith(".lock."))
        and not (shares_with and fnmatch.fnmatchcase(p.name, shares_with))
    )


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike, name: str = ".lock", shares_with: str | None = None
) -> Iterator[Path]:
    """Hold folder/name while the block runs. A lock whose owner is alive on this host is a ValueError naming
    it; a lock left by a dead process on this host is taken over with a warning naming it; one from another
    host is reported as an error, not taken (its owner may be alive there).
    With name `.lock` or `.lock.*`, every other live lock of that family in the folder is refused too, except
    those matching the glob `shares_with` (the other shards of one run): taken first, checked after, so of two
    runs that may not share the folder at most one goes on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            _check_owner(folder, path, me)
            print(
                f"warning: {path}: taking over a stale lock (its process on this host is gone)",
                file=sys.stderr,
            )
            path.unlink(missing_ok=True)
    else:
        raise ValueError(f"could not take the lock {path}")
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        if name == ".lock" or name.startswith(".lock."):
            for other in _others(folder, name, shares_with):
                _check_owner(folder, other, me)
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
