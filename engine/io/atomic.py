"""Atomic writes: whatever a writer puts at a temporary path beside the target is renamed onto the target only
when the writer finished, so a killed process leaves the old file (or none), never half of a new one."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by it still work) for a file or a
    folder; renamed onto `path` when the block succeeds, removed when it raises. A temporary left by a killed
    run is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if tmp.exists() or tmp.is_symlink():
        _remove(tmp)
    try:
        yield tmp
    except BaseException:
        if tmp.exists():
            _remove(tmp)
        raise
    commit(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def share_as_umask_allows(path: str | os.PathLike) -> None:
    """Give a file (or every file in a folder) the read/write bits the umask allows, as open() would: some
    writers (safetensors' save_file) create their files 0600, unreadable by the user's group."""
    allowed = 0o666 & ~_umask()
    root = Path(path)
    files = [root] if not root.is_dir() else [p for p in root.rglob("*") if p.is_file()]
    for file in files:
        if not file.is_symlink():
            os.chmod(file, file.stat().st_mode | allowed)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a finished temporary file or folder onto `path` (its files readable as the umask allows) and
    make the rename durable (the parent folder is fsynced). For writers that cannot use atomic_path, e.g.
    several ranks filling one folder."""
    share_as_umask_allows(tmp)
    os.replace(tmp, path)
    fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a whole file atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
