"""A JSONL record set that several processes write at once: each writes only its own file, named by its shard
(`NAME.shard-I-of-N.jsonl` beside the unsharded `NAME.jsonl` of a one-process run), and every reader takes the
union of all of them. `path` below is always the set's logical name (`DIR/manifest.jsonl`), which need not
exist as a file."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from videogpa.engine.io.records import numbered_jsonl


def shard_path(path: str | os.PathLike, index: int, count: int) -> Path:
    """The file shard `index` of `count` writes: the logical path itself for one shard (count 1)."""
    path = Path(path)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}")


def _pattern(path: Path) -> re.Pattern:
    return re.compile(rf"{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix)}")


def shard_files(path: str | os.PathLike) -> list[Path]:
    """The existing files of the set: the unsharded file first, then the shard files by (count, index)."""
    path = Path(path)
    pattern = _pattern(path)
    found = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and p.is_file():
                found.append(((int(m[2]), int(m[1])), p))
    return ([path] if path.is_file() else []) + [p for _, p in sorted(found)]


def sharded_exists(path: str | os.PathLike) -> bool:
    return bool(shard_files(path))


def sharded_rows(
    path: str | os.PathLike, allow_truncated_tail: bool = True
) -> Iterator[tuple[Path, int, dict]]:
    """(file, line number, object) of every row of every file of the set, in shard_files order."""
    for file in shard_files(path):
        for number, row in numbered_jsonl(file, allow_truncated_tail):
            yield file, number, row


def read_sharded(path: str | os.PathLike, allow_truncated_tail: bool = True) -> list[dict]:
    """Every row of the set ([] when no file of it exists)."""
    return [row for _, _, row in sharded_rows(path, allow_truncated_tail)]
