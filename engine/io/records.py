"""JSON/JSONL records: strict reading with named errors, durable appends and atomic whole-file writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from videogpa.engine.io.atomic import write_atomic


def numbered_jsonl(path: str | os.PathLike, allow_truncated_tail: bool = True) -> list[tuple[int, dict]]:
    """(line number, object) of every object of a JSONL file (blank lines skipped). A last line cut short by a
    killed writer is dropped when allow_truncated_tail; any other bad line is a ValueError naming file and
    line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if allow_truncated_tail and number == len(lines) and not text.endswith("\n"):
                continue
            raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def read_jsonl(path: str | os.PathLike, allow_truncated_tail: bool = True) -> list[dict]:
    """Every object of a JSONL file (see numbered_jsonl)."""
    return [row for _, row in numbered_jsonl(path, allow_truncated_tail)]


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row durably; a partial last line left by a killed writer (never a complete row) is cut off
    first, so the file stays valid JSONL."""
    path = Path(path)
    with path.open("a+b") as f:
        if f.tell() > 0:
            f.seek(0)
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
        f.write((json.dumps(row) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
