"""Prompt files for generation, and the camera-motion prompt builder of VideoGPA.

Two file formats:

- plain text (any suffix but .jsonl): one prompt per line; blank lines and lines starting with `#` are
  skipped;
- JSONL (`.jsonl`): one object per line with a string `prompt`, optionally a string `id` (default: the
  prompt's position, `p00000`, ...) and `image` (the first frame for image-to-video, relative to the file).

Every problem is a ValueError that names the file, the line and the field.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

from videogpa.engine.io.records import numbered_jsonl

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


def load_prompts(path: str | os.PathLike, require_images: bool = False) -> list[PromptItem]:
    """Read a prompt file. require_images (image-to-video): every prompt needs an existing `image` file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    if path.suffix.lower() == ".jsonl":
        rows = numbered_jsonl(path, allow_truncated_tail=False)
        entries = [(number, _jsonl_item(path, number, row, k)) for k, (number, row) in enumerate(rows)]
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"prompt file {path} is not UTF-8 text: {err}") from None
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
        lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
        entries = [(n, PromptItem(f"p{k:05d}", line)) for k, (n, line) in enumerate(lines)]
    items: list[PromptItem] = []
    first_line: dict[str, int] = {}
    for number, item in entries:
        if item.prompt_id in first_line:
            raise ValueError(
                f"{path}:{number}: duplicate id {item.prompt_id!r} (first used on line {first_line[item.prompt_id]})"
            )
        first_line[item.prompt_id] = number
        if require_images:
            if item.image is None:
                raise ValueError(
                    f"{path}:{number}: image-to-video needs an 'image' field per prompt (a JSONL prompt file)"
                )
            if not item.image.is_file():
                raise ValueError(f"{path}:{number}: field 'image': file {item.image} does not exist")
        items.append(item)
    if not items:
        raise ValueError(f"prompt file {path} holds no prompts")
    return items


def camera_motion_prompt(scene: str, rng: random.Random, min_motions: int = 2, max_motions: int = 3) -> str:
    """The prefix, the scene, then min..max distinct camera motions drawn from CAMERA_MOTIONS."""
    if not 1 <= min_motions <= max_motions <= len(CAMERA_MOTIONS):
        raise ValueError(
            f"camera motions: need 1 ≤ min ({min_motions}) ≤ max ({max_motions}) ≤ {len(CAMERA_MOTIONS)}"
        )
    motions = rng.sample(CAMERA_MOTIONS, rng.randint(min_motions, max_motions))
    return f"{CAMERA_PREFIX} {scene.strip().rstrip('.')}. {', then '.join(motions).capitalize()}."


def with_camera_motion(items: list[PromptItem], seed: int) -> list[PromptItem]:
    """Each prompt rewritten by camera_motion_prompt; a prompt's draw depends only on (seed, its id)."""
    return [
        replace(it, prompt=camera_motion_prompt(it.prompt, random.Random(f"{seed}:{it.prompt_id}")))
        for it in items
    ]
