"""Prompt files for generation, and the camera-motion prompt builder of VideoGPA.

Two file formats:

- plain text (any suffix but .jsonl): one prompt per line; blank lines and lines starting with `#` are
  skipped;
- JSONL (`.jsonl`): one object per line with a string `prompt`, optionally a string `id` (default: the
  prompt's position, `p00000`, ...) and `image` (the first frame for image-to-video, relative to the file).

Every problem is a ValueError that names the file, the line and the field. A file is read lazily, line by
line (iter_prompts, PromptFile), so a long prompt list is never held in memory.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from videogpa.engine.io.records import iter_numbered_jsonl, text_lines

# The paper's builder: a fixed prefix that asks for a static scene, then 2-3 random camera motions.
CAMERA_PREFIX = "A completely static scene where nothing moves; only the camera moves."
CAMERA_MOTIONS = (
    "the camera pans slowly to the left",
    "the camera pans slowly to the right",
    "the camera tilts up",
    "the camera tilts down",
    "the camera dollies forward",
    "the camera pulls back",
    "the camera orbits around the scene",
    "the camera trucks sideways to the left",
    "the camera trucks sideways to the right",
    "the camera cranes up",
    "the camera cranes down",
    "the camera arcs around the centre of the scene",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # ids become file names


@dataclass(frozen=True)
class PromptItem:
    """One prompt to generate from; `image` is the conditioning first frame (image-to-video only)."""

    prompt_id: str
    prompt: str
    image: Path | None = None

    def to_row(self) -> dict:
        return {"prompt_id": self.prompt_id, "prompt": self.prompt, "image": self.image and str(self.image)}


def _jsonl_item(path: Path, number: int, row: dict, index: int) -> PromptItem:
    where = f"{path}:{number}"
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: field 'prompt' must be a non-empty string, got {prompt!r}")
    prompt_id = row.get("id", f"p{index:05d}")
    if not isinstance(prompt_id, str) or not _ID.match(prompt_id):
        raise ValueError(
            f"{where}: field 'id' must be a string of letters, digits, '_', '-', '.', got {prompt_id!r}"
        )
    image = row.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise ValueError(f"{where}: field 'image' must be a path string, got {image!r}")
    return PromptItem(prompt_id, prompt.strip(), None if image is None else path.parent / image)


def _entries(path: Path) -> Iterator[tuple[int, PromptItem]]:
    """(line number, item) of every prompt of the file, parsed line by line as the reader reaches it."""
    if path.suffix.lower() == ".jsonl":
        rows = iter_numbered_jsonl(path, allow_truncated_tail=False)
        for k, (number, row) in enumerate(rows):
            yield number, _jsonl_item(path, number, row, k)
        return
    try:
        k = 0
        for number, line, _ in text_lines(path):
            line = line.strip()
            if line and not line.startswith("#"):
                yield number, PromptItem(f"p{k:05d}", line)
                k += 1
    except UnicodeDecodeError as err:
        raise ValueError(f"prompt file {path} is not UTF-8 text: {err}") from None


def iter_prompts(path: str | os.PathLike, require_images: bool = False) -> Iterator[PromptItem]:
    """Read a prompt file lazily, validating each line as it comes (a bad line is a ValueError when the reader
    reaches it). require_images (image-to-video): every prompt needs an existing `image` file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    # every id seen (for the duplicate check) with its line: ids are small; the prompts are not kept
    first_line: dict[str, int] = {}
    for number, item in _entries(path):
        if item.prompt_id in first_line:
            raise ValueError(
                f"{path}:{number}: duplicate id {item.prompt_id!r} "
                f"(first used on line {first_line[item.prompt_id]})"
            )
        first_line[item.prompt_id] = number
        if require_images:
            if item.image is None:
                raise ValueError(
                    f"{path}:{number}: image-to-video needs an 'image' field per prompt (a JSONL prompt file)"
                )
            if not item.image.is_file():
                raise ValueError(f"{path}:{number}: field 'image': file {item.image} does not exist")
        yield item
    if not first_line:
        raise ValueError(f"prompt file {path} holds no prompts")


def load_prompts(path: str | os.PathLike, require_images: bool = False) -> list[PromptItem]:
    """Every prompt of a file (iter_prompts), as a list."""
    return list(iter_prompts(path, require_images))


@dataclass(frozen=True)
class PromptFile:
    """A prompt file that every iteration streams anew (iter_prompts), camera-motion rewritten with
    camera_motion_seed when given: a reader that passes over the prompts more than once never holds them."""

    path: Path
    require_images: bool = False
    camera_motion_seed: int | None = None

    def __iter__(self) -> Iterator[PromptItem]:
        items = iter_prompts(self.path, self.require_images)
        seed = self.camera_motion_seed
        return items if seed is None else (camera_motion_item(it, seed) for it in items)


def camera_motion_prompt(scene: str, rng: random.Random, min_motions: int = 2, max_motions: int = 3) -> str:
    """The prefix, the scene, then min..max distinct camera motions drawn from CAMERA_MOTIONS."""
    if not 1 <= min_motions <= max_motions <= len(CAMERA_MOTIONS):
        bounds = f"1 ≤ min ({min_motions}) ≤ max ({max_motions}) ≤ {len(CAMERA_MOTIONS)}"
        raise ValueError(f"camera motions: need {bounds}")
    motions = rng.sample(CAMERA_MOTIONS, rng.randint(min_motions, max_motions))
    return f"{CAMERA_PREFIX} {scene.strip().rstrip('.')}. {', then '.join(motions).capitalize()}."


def camera_motion_item(item: PromptItem, seed: int) -> PromptItem:
    """The item's prompt rewritten by camera_motion_prompt; the draw depends only on (seed, its id)."""
    return replace(item, prompt=camera_motion_prompt(item.prompt, random.Random(f"{seed}:{item.prompt_id}")))


def with_camera_motion(items: list[PromptItem], seed: int) -> list[PromptItem]:
    """Each prompt rewritten by camera_motion_item (so a list and a stream of the same prompts agree)."""
    return [camera_motion_item(it, seed) for it in items]
