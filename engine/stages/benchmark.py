"""The authors' benchmark protocol: captions (their DL3DV captions JSON) and optional first frames become a
prompt file, then the evaluate stage generates every caption with the base model and with a LoRA at a chosen
strength (one seed each, 456 by default), scores both with the evaluation geometry model (T = 10 frames), and
writes the paper's table (PSNR, SSIM, LPIPS, MVCS, 3DCS, Epi) with per-prompt win rates and bootstrap CIs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from videogpa.engine.io.atomic import write_atomic

AUTHORS_SEED = 456
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def read_captions(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(id, caption) pairs of a captions JSON: a list of strings, a list of objects with `caption` or `prompt`
    (and an optional `id`), or an object mapping ids to captions. A one-line ValueError names the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"captions file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"captions file {str(path)!r} is not valid JSON: {err}") from None
    entries = (
        list(data.items())
        if isinstance(data, dict)
        else list(enumerate(data) if isinstance(data, list) else [])
    )
    if not entries:
        raise ValueError(f"captions file {str(path)!r}: expected a non-empty list or object of captions")
    out, seen = [], set()
    for key, value in entries:
        caption, given = value, None
        if isinstance(value, dict):
            caption, given = value.get("caption", value.get("prompt")), value.get("id")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"captions file {str(path)!r}: entry {key!r} has no caption string")
        raw = str(given if given is not None else (key if isinstance(key, str) else f"c{key:05d}"))
        caption_id = _UNSAFE.sub("_", raw)
        if caption_id in seen:
            raise ValueError(f"captions file {str(path)!r}: id {caption_id!r} appears twice")
        seen.add(caption_id)
        out.append((caption_id, caption.strip()))
    return out


def first_frame(folder: Path, caption_id: str, index: int, files: list[Path]) -> Path:
    """The first frame of a caption: FOLDER/<id>.<png|jpg|jpeg|webp>, else the index-th image of the
    folder."""
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{caption_id}{suffix}").is_file():
            return folder / f"{caption_id}{suffix}"
    if index < len(files):
        return files[index]
    raise ValueError(
        f"first frames {str(folder)!r}: no image for caption {caption_id!r} (nor an {index + 1}th image)"
    )


def write_prompt_file(
    captions: str | os.PathLike, first_frames: str | os.PathLike | None, out_dir: str | os.PathLike
) -> Path:
    """OUT/benchmark_prompts.jsonl from the captions (and first frames for image-to-video); an existing file
    with other contents is an error (a finished benchmark is never mixed with another caption set)."""
    items = read_captions(captions)
    rows = [{"id": caption_id, "prompt": caption} for caption_id, caption in items]
    if first_frames is not None:
        folder = Path(first_frames)
        if not folder.is_dir():
            raise ValueError(f"first frames folder {str(folder)!r} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for index, row in enumerate(rows):
            row["image"] = str(first_frame(folder, row["id"], index, files).resolve())
    text = "".join(json.dumps(row) + "\n" for row in rows)
    path = Path(out_dir) / "benchmark_prompts.jsonl"
    if path.is_file() and path.read_text() != text:
        raise ValueError(f"{path} holds another caption set: use another --out-dir")
    write_atomic(path, text)
    return path
