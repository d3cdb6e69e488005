"""One process per output folder (or per shard of one): an exclusive lock file holding the owner's pid, host
and process start time (so a lock whose owner was killed, even one not yet reaped or whose pid was reused, is
reliably stale; it is created with its content in one step, so it never reads as empty). Shards of one stage
share a folder: each holds its own lock (e.g. `.lock.generate.shard-I-of-N`), and a lock refuses every other
live lock of the folder (`.lock`, `.lock.*`) but those it may share it with."""

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


def _started(pid: int) -> str | None:
    """When a process started (clock ticks since boot, /proc/<pid>/stat field 22); None when it does not exist
    or has exited (a zombie: killed, not yet reaped) or where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return None if fields[0] in ("Z", "X") else fields[19]


def _gone(pid: int, started: str | None) -> str | None:
    """Why the owner `pid` (which started at `started`, when known) is gone, or None while it runs."""
    if Path("/proc/self/stat").is_file():
        now = _started(pid)
        if now is None:
            return f"its process (pid {pid}) has exited"
        if started is not None and now != started:
            return (
                f"pid {pid} now belongs to another process (the owner started at {started}, "
                f"this one at {now})"
            )
        return None
    try:
        os.kill(pid, 0)  # PermissionError: alive, owned by another user
    except ProcessLookupError:
        return f"its process (pid {pid}) has exited"
    except PermissionError:
        pass
    return None


def _me() -> dict:
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    started = _started(os.getpid())
    return {**me, "started": started} if started is not None else me


def _check_owner(folder: Path, path: Path, me: dict) -> str | None:
    """ValueError naming the owner of the lock file `path` when it is alive or on another host; else why the
    lock is stale (None when it was just released)."""
    try:
        owner = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        owner = {}
    if not isinstance(owner, dict):
        owner = {}
    pid, host = owner.get("pid"), owner.get("host")
    if host not in (None, me["host"]):
        raise ValueError(
            f"{folder} is locked by pid {pid} on host {host} ({path}); remove the lock if that run is gone"
        )
    if not isinstance(pid, int):
        return "it names no owner"
    reason = _gone(pid, owner.get("started"))
    if reason is None:
        raise ValueError(f"{folder} is in use by another process (pid {pid}; lock {path})")
    return reason


def _create(path: Path, me: dict) -> bool:
    """Create the lock file with its content in one step (False when it exists): written beside it, then
    hard-linked into place, which fails when the name is taken (where hard links are not supported: created
    exclusively, then written)."""
    tmp = path.with_name(f".tmp{path.name}.{me['pid']}")
    tmp.write_text(json.dumps(me))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FUSE file systems)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _others(folder: Path, name: str, shares_with: str | None) -> list[Path]:
    """The folder's other lock files of this family (`.lock`, `.lock.*`) that this lock may not coexist
    with."""
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
    me = _me()
    for _ in range(2):
        if _create(path, me):
            break
        reason = _check_owner(folder, path, me)
        if reason is not None:
            print(f"warning: {path}: taking over a stale lock ({reason})", file=sys.stderr)
        path.unlink(missing_ok=True)
    else:
        raise ValueError(f"could not take the lock {path}")
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
