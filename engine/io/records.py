"""JSON/JSONL records: strict reading with named errors, durable appends and atomic whole-file writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from videogpa.engine.io.atomic import write_atomic


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, bool]]:
    """(number, line, unterminated) of every line of a UTF-8 text file, numbered and split as
    `read_text().splitlines()` does, read lazily (one physical line at a time); unterminated: the file's last
    line, not ended by a newline. A decoding error is the UnicodeDecodeError of decoding the whole file."""
    number = 0
    with open(path, "rb") as f:
        for raw in f:  # split at b"\n", which is never part of a multi-byte UTF-8 sequence
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                f.seek(0)
                f.read().decode("utf-8")  # raises the error with its position in the file (error path only)
                raise
            lines = text.splitlines()  # \r, \r\n and the other separators str.splitlines knows
            ended = raw.endswith((b"\n", b"\r"))
            for k, line in enumerate(lines):
                number += 1
                yield number, line, not ended and k == len(lines) - 1


def iter_numbered_jsonl(
    path: str | os.PathLike, allow_truncated_tail: bool = True
) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every object of a JSONL file (blank lines skipped), read lazily. A last line
    cut short by a killed writer is dropped when allow_truncated_tail; any other bad line is a ValueError
    naming file and line (raised when the reader reaches it)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        for number, line, unterminated in text_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                if allow_truncated_tail and unterminated:
                    continue
                raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None


def numbered_jsonl(path: str | os.PathLike, allow_truncated_tail: bool = True) -> list[tuple[int, dict]]:
    """Every (line number, object) of a JSONL file (see iter_numbered_jsonl)."""
    return list(iter_numbered_jsonl(path, allow_truncated_tail))


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
