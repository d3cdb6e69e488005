"""Candidate generation: N seeds per prompt through a diffusers pipeline, each saved as an mp4, its final
latents (safetensors) and one manifest row; resumable.

Layout of an output folder:

    manifest.jsonl                 one row per finished candidate (paths relative to the folder)
    videos/<prompt_id>_s<seed>.mp4
    latents/<prompt_id>_s<seed>.safetensors   tensor "latents": the pipeline's final latents of that video
                                              (the model's native layout without the batch dim, VAE
                                              scaling applied), so training never re-encodes them
    failures.jsonl                 candidates that could not be made (e.g. non-finite latents); retried

Files are written atomically and a row is appended only once both exist, so a killed run resumes where it
stopped. A rerun with other settings for an already generated candidate is an error, never an overwrite.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from videogpa.engine.data.encode import PipelineEncoder
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.data.records import append_jsonl, read_jsonl
from videogpa.engine.data.video import write_video
from videogpa.engine.generation.pipelines import default_device, image_argument, takes_image_list

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"


@dataclass(frozen=True)
class SamplerSettings:
    num_frames: int
    height: int
    width: int
    steps: int = 50
    guidance_scale: float = 6.0
    max_sequence_length: int = 226
    negative_prompt: str | None = None
    fps: int = 8

    def __post_init__(self):
        for name in ("num_frames", "height", "width", "steps", "max_sequence_length", "fps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(
                    f"sampler setting {name!r}: expected a positive integer, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class Candidate:
    """One video to generate: a prompt and a seed."""

    item: PromptItem
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.item.prompt_id}_s{self.seed}"


@dataclass
class GenerationSummary:
    prompts: int = 0
    candidates: int = 0
    generated: int = 0
    skipped: int = 0  # already in the manifest
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.candidates} candidates for {self.prompts} prompts: {self.generated} generated, "
            f"{self.skipped} already done, {len(self.failed)} failed ({self.seconds:.1f} s)"
        )


def candidate_seeds(n: int, base_seed: int) -> list[int]:
    """The seeds of a prompt's n candidates: base_seed, base_seed + 1, ... (the same for every prompt)."""
    if n < 1:
        raise ValueError(f"number of candidates per prompt: expected ≥ 1, got {n}")
    return [base_seed + k for k in range(n)]


def _row_settings(model: str, sampler: SamplerSettings, lora: str | None, lora_scale: float) -> dict:
    return {
        "model": model,
        "sampler": asdict(sampler),
        "lora": lora,
        "lora_scale": lora_scale if lora else None,
    }


def _image_field(item: PromptItem) -> str | None:
    """The manifest's `image`: an absolute path (the manifest is read from other folders)."""
    return None if item.image is None else str(item.image.resolve())


def _check_done(rows: list[dict], out_dir: Path, settings: dict, wanted: dict[str, Candidate]) -> set[str]:
    """Stems already generated; ValueError when a row was made with other settings or lost its files."""
    done = set()
    for row in rows:
        stem = Path(row.get("video", "")).stem
        if stem not in wanted:
            continue
        item = wanted[stem].item
        mine = {"prompt": item.prompt, "image": _image_field(item), **settings}
        theirs = {k: row.get(k) for k in mine}
        if theirs != mine:
            diff = sorted(k for k in mine if theirs[k] != mine[k])
            raise ValueError(
                f"{out_dir / MANIFEST}: {stem} was generated with other {diff} than this run's; "
                "use a new output folder (nothing is overwritten)"
            )
        for key in ("video", "latents"):
            if not (out_dir / row[key]).is_file():
                raise ValueError(f"{out_dir / MANIFEST}: {stem}'s {key} file {out_dir / row[key]} is missing")
        done.add(stem)
    return done


def _load_image(path: Path, width: int, height: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB").resize((width, height))
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"image {path} could not be read: {err}") from err


def _save_atomic_video(path: Path, frames: torch.Tensor, fps: int) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(tmp, frames, fps=fps)
    os.replace(tmp, path)


def _save_atomic_latents(path: Path, latents: torch.Tensor, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"latents": latents.detach().float().cpu().contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _run_pipeline(pipe, batch: list[Candidate], sampler: SamplerSettings, images: dict):
    """(frames [B, F, 3, H, W] in [0, 1], final latents [B, ...]) of a batch of candidates."""
    final = {}

    def keep_latents(_pipe, step, _t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    n = len(batch)
    extra = {}
    if batch[0].item.image is not None:
        extra["image"] = image_argument(pipe, [images[c.item.prompt_id] for c in batch])
    negative = None if sampler.negative_prompt is None else [sampler.negative_prompt] * n
    out = pipe(
        prompt=[c.item.prompt for c in batch],
        negative_prompt=negative,
        generator=[torch.Generator().manual_seed(c.seed) for c in batch],
        num_frames=sampler.num_frames,
        height=sampler.height,
        width=sampler.width,
        num_inference_steps=sampler.steps,
        guidance_scale=sampler.guidance_scale,
        max_sequence_length=sampler.max_sequence_length,
        output_type="pt",
        callback_on_step_end=keep_latents,
        **extra,
    )
    frames = out.frames
    if isinstance(frames, torch.Tensor) and frames.ndim == 5 and frames.shape[-3] != 3:
        frames = frames.permute(0, 1, 4, 2, 3)  # [B, F, H, W, 3] → [B, F, 3, H, W]
    return frames, final["latents"]


def _with_clean_first_frame(pipe, batch: list[Candidate], images: dict, latents: torch.Tensor, max_seq: int):
    """Pipelines with `expand_timesteps` (Wan 2.2 TI2V) paste the clean image latent into latent frame 0
    only after their last step callback; do the same to the latents we keep, so they decode to the video."""
    if not getattr(pipe.config, "expand_timesteps", False) or batch[0].item.image is None:
        return latents
    encoder = PipelineEncoder(pipe, max_seq)
    latents = latents.clone()
    for i, cand in enumerate(batch):
        pixels = np.asarray(images[cand.item.prompt_id], dtype=np.float32) / 255.0  # [H, W, 3]
        clean = encoder.encode_image(torch.from_numpy(pixels).permute(2, 0, 1))  # [C, 1, h, w]
        latents[i, :, :1] = clean.to(latents.device, latents.dtype)
    return latents


def _batches(todo: list[Candidate], batch_size: int, per_prompt: bool) -> list[list[Candidate]]:
    """Consecutive candidates in batches of batch_size; per_prompt: never two prompts in one batch."""
    if not per_prompt:
        return [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    groups: dict[str, list[Candidate]] = {}
    for c in todo:
        groups.setdefault(c.item.prompt_id, []).append(c)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def generate_candidates(
    pipe,
    items: list[PromptItem],
    out_dir: str | os.PathLike,
    *,
    seeds: list[int],
    sampler: SamplerSettings,
    model: str,
    batch_size: int = 1,
    lora: str | None = None,
    lora_scale: float = 1.0,
    progress: bool = True,
) -> GenerationSummary:
    """Generate every (prompt, seed) candidate not yet in out_dir's manifest; `pipe` already carries the
    LoRA when `lora` is given (the path/scale are recorded in the rows)."""
    if batch_size < 1:
        raise ValueError(f"generation batch size: expected ≥ 1, got {batch_size}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    settings = _row_settings(model, sampler, lora and str(lora), lora_scale)
    wanted = {c.stem: c for c in (Candidate(item, s) for item in items for s in seeds)}
    done = _check_done(read_jsonl(manifest) if manifest.is_file() else [], out_dir, settings, wanted)
    summary = GenerationSummary(prompts=len(items), candidates=len(wanted), skipped=len(done))
    todo = [c for c in wanted.values() if c.stem not in done]
    bar = tqdm(total=len(todo), desc="generating", unit="video", disable=not progress)
    image_to_video = any(c.item.image is not None for c in todo)
    for batch in _batches(todo, batch_size, per_prompt=image_to_video and not takes_image_list(pipe)):
        images = {c.item.prompt_id: _load_image(c.item.image, sampler.width, sampler.height)
                  for c in batch if c.item.image is not None}  # fmt: skip
        frames, latents = _run_pipeline(pipe, batch, sampler, images)
        latents = _with_clean_first_frame(pipe, batch, images, latents, sampler.max_sequence_length)
        for cand, video, latent in zip(batch, frames, latents):
            item = cand.item
            if not torch.isfinite(latent).all() or not torch.isfinite(video).all():
                log.error("%s: non-finite latents or frames; not saved (retried on the next run)", cand.stem)
                append_jsonl(out_dir / FAILURES, {"candidate": cand.stem, "error": "non-finite latents"})
                summary.failed.append(cand.stem)
                continue
            video_rel, latents_rel = f"videos/{cand.stem}.mp4", f"latents/{cand.stem}.safetensors"
            _save_atomic_video(out_dir / video_rel, video.float().cpu(), sampler.fps)
            meta = {"model": model, "prompt_id": item.prompt_id, "seed": str(cand.seed)}
            _save_atomic_latents(out_dir / latents_rel, latent, meta)
            row = {"video": video_rel, "latents": latents_rel, "prompt_id": item.prompt_id,
                   "prompt": item.prompt, "image": _image_field(item), "seed": cand.seed, **settings}  # fmt: skip
            append_jsonl(manifest, row)
            summary.generated += 1
        bar.update(len(batch))
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class GenerationConfig:
    """What the generate stage needs besides an output folder; sampler fields left None take the model's
    defaults (pipelines.SAMPLER_DEFAULTS)."""

    model: str = "tiny"
    pipeline: str | None = None  # local diffusers pipeline folder
    prompts: str | None = None  # prompt file (plain text or JSONL)
    num_candidates: int = 4
    seed: int = 0  # candidate k of every prompt uses seed + k
    camera_motion: bool = False  # rewrite prompts with the camera-motion builder (seeded by `seed`)
    batch_size: int = 2
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # fp32 / bf16 / fp16; None: bf16 on cuda, fp32 on cpu
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    max_sequence_length: int | None = None
    negative_prompt: str | None = None
    fps: int = 8

    def sampler(self) -> SamplerSettings:
        from videogpa.engine.generation.pipelines import SAMPLER_DEFAULTS, pipeline_spec

        pipeline_spec(self.model)
        given = {k: getattr(self, k) for k in SAMPLER_DEFAULTS[self.model] if getattr(self, k) is not None}
        return SamplerSettings(
            **{**SAMPLER_DEFAULTS[self.model], **given}, negative_prompt=self.negative_prompt, fps=self.fps
        )


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_items(
    cfg: GenerationConfig, prompts: str | os.PathLike | None = None
) -> tuple[list[PromptItem], bool]:
    """The prompts to generate from (camera-motion rewritten if asked) and whether this is image-to-video."""
    from videogpa.engine.data.prompts import load_prompts, with_camera_motion
    from videogpa.engine.generation.pipelines import pipeline_spec

    path = prompts or cfg.prompts
    if path is None:
        raise ValueError("generation: no prompt file given (prompts)")
    spec = pipeline_spec(cfg.model)
    items = load_prompts(path, require_images=spec.requires_image)
    with_image = [it.image is not None for it in items]
    image_to_video = spec.requires_image or (spec.image_to_video is not None and any(with_image))
    if image_to_video and not all(with_image):
        raise ValueError(
            f"{path}: some prompts have an 'image' and some do not; image-to-video needs one per prompt"
        )
    if image_to_video:
        items = load_prompts(path, require_images=True)  # every image must exist
    if cfg.camera_motion:
        items = with_camera_motion(items, cfg.seed)
    return items, image_to_video


def run_generation(
    cfg: GenerationConfig,
    out_dir: str | os.PathLike,
    *,
    prompts: str | os.PathLike | None = None,
    lora: str | os.PathLike | None = None,
    lora_scale: float = 1.0,
    progress: bool = True,
) -> GenerationSummary:
    """Load the pipeline (and LoRA), generate every missing candidate of the prompt file into out_dir."""
    from videogpa.engine.generation.pipelines import attach_lora, load_pipeline

    device = cfg.device or default_device()
    dtype = cfg.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"generation dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    if cfg.pipeline is None:
        raise ValueError("generation: no pipeline folder given (pipeline)")
    items, image_to_video = load_items(cfg, prompts)
    sampler = cfg.sampler()
    seeds = candidate_seeds(cfg.num_candidates, cfg.seed)
    pipe = load_pipeline(
        cfg.model, cfg.pipeline, image_to_video=image_to_video, device=device, dtype=DTYPES[dtype]
    )
    if lora is not None:
        attach_lora(pipe, lora, lora_scale)
    return generate_candidates(
        pipe, items, out_dir, seeds=seeds, sampler=sampler, model=cfg.model, batch_size=cfg.batch_size,
        lora=lora and str(Path(lora).resolve()), lora_scale=lora_scale, progress=progress,
    )  # fmt: skip
