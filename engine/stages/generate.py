"""The generate stage: N seeds per prompt through a diffusers pipeline, each saved as an mp4, its final
latents (safetensors) and one manifest row; resumable.

Layout of an output folder:

    manifest.jsonl                 one row per finished candidate (paths relative to the folder); a sharded
                                   run's shards each write manifest.shard-I-of-N.jsonl (engine.stages.sharding)
                                   and readers take the union of them all
    videos/<prompt_id>_s<seed>.mp4
    latents/<prompt_id>_s<seed>.safetensors   tensor "latents": the pipeline's final latents of that video
                                              (the model's native layout without the batch dim, VAE
                                              scaling applied), so training never re-encodes them
    failures.jsonl                 candidates that could not be made (e.g. non-finite latents); retried
                                   (failures.shard-I-of-N.jsonl per shard)

Files are written atomically and a row is appended only once both exist, so a killed run resumes where it
stopped. A rerun with other settings for an already generated candidate is an error, never an overwrite.

Candidates are made in fixed batches of the full candidate list (prompt-file order × seeds) and a shard takes
every count-th batch, so a batch holds the same candidates whatever the number of shards: N processes write
bit-identical latents to one process's. A resumed batch runs with the candidates it still lacks: a smaller
batch, which on a CPU can change the last bits of a batched computation, as any other batch size does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from videogpa.engine.config import GenerationConfig
from videogpa.engine.data.prompts import PromptItem, load_prompts, with_camera_motion
from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.io.records import append_jsonl
from videogpa.engine.io.sharded import sharded_rows
from videogpa.engine.io.video import write_video
from videogpa.engine.models import ModelAdapter, adapter_class, get_adapter
from videogpa.engine.models.base import SamplerSettings
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.pipelines import attach_lora, load_pipeline
from videogpa.engine.stages.fast_sampling import apply_sampling_options, step_cache_record
from videogpa.engine.stages.sharding import WHOLE, Shard, one_process_per_shard, shard_device
from videogpa.engine.types import DTYPES, default_device

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"


@dataclass(frozen=True)
class CandidateSpec:
    """One video to generate: a prompt and a seed."""

    item: PromptItem
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.item.prompt_id}_s{self.seed}"


@dataclass
class GenerationSummary:
    manifest: Path  # the stage's output: one row per finished candidate
    prompts: int = 0
    candidates: int = 0
    generated: int = 0
    skipped: int = 0  # already in the manifest (any shard's)
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


def _row_settings(
    model: str, sampler: SamplerSettings, lora: str | None, lora_scale: float, step_cache: dict | None
) -> dict:
    return {
        "model": model,
        "sampler": asdict(sampler),
        "lora": lora,
        "lora_scale": lora_scale if lora else None,
        "step_cache": step_cache,  # in a row only when used (engine.stages.fast_sampling)
    }


def _image_field(item: PromptItem) -> str | None:
    """The manifest's `image`: an absolute path (the manifest is read from other folders)."""
    return None if item.image is None else str(item.image.resolve())


def _check_done(out_dir: Path, settings: dict, wanted: dict[str, CandidateSpec]) -> set[str]:
    """Stems already generated (in any shard's manifest); ValueError when a row was made with other settings or
    lost its files."""
    done = set()
    for manifest, _, row in sharded_rows(out_dir / MANIFEST):
        stem = Path(row.get("video", "")).stem
        if stem not in wanted:
            continue
        item = wanted[stem].item
        mine = {"prompt": item.prompt, "image": _image_field(item), **settings}
        theirs = {k: row.get(k) for k in mine}
        if theirs != mine:
            diff = sorted(k for k in mine if theirs[k] != mine[k])
            raise ValueError(
                f"{manifest}: {stem} was generated with other {diff} than this run's; "
                "use a new output folder (nothing is overwritten)"
            )
        for key in ("video", "latents"):
            if not (out_dir / row[key]).is_file():
                raise ValueError(f"{manifest}: {stem}'s {key} file {out_dir / row[key]} is missing")
        done.add(stem)
    return done


def _load_image(path: Path, width: int, height: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB").resize((width, height))
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"image {path} could not be read: {err}") from err


def _save_video(path: Path, frames: torch.Tensor, fps: int) -> None:
    with atomic_path(path) as tmp:
        write_video(tmp, frames, fps=fps)


def _save_latents(path: Path, latents: torch.Tensor, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file({"latents": latents.detach().float().cpu().contiguous()}, str(tmp), metadata=metadata)


def _run_pipeline(
    pipe, adapter: ModelAdapter, batch: list[CandidateSpec], sampler: SamplerSettings, images: dict
):
    """(frames [B, F, 3, H, W] in [0, 1], final latents [B, ...]) of a batch of candidates."""
    final = {}

    def keep_latents(_pipe, step, _t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    n = len(batch)
    extra = {}
    if batch[0].item.image is not None:
        extra["image"] = adapter.image_argument([images[c.item.prompt_id] for c in batch])
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


def _clean_image_latent(pipe, adapter: ModelAdapter, max_sequence_length: int):
    """A PIL first frame → its clean latent through the pipeline's own VAE (for finalize_latents)."""
    encoder = PipelineEncoder(pipe, adapter.latent_convention, max_sequence_length)

    def encode(image) -> torch.Tensor:
        pixels = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, 3]
        return encoder.encode_image(torch.from_numpy(pixels).permute(2, 0, 1))

    return encode


def _batches(todo: list[CandidateSpec], batch_size: int, per_prompt: bool) -> list[list[CandidateSpec]]:
    """Consecutive candidates in batches of batch_size; per_prompt: never two prompts in one batch."""
    if not per_prompt:
        return [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    groups: dict[str, list[CandidateSpec]] = {}
    for c in todo:
        groups.setdefault(c.item.prompt_id, []).append(c)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def shard_batches(
    adapter: ModelAdapter, items: list[PromptItem], seeds: list[int], batch_size: int, shard: Shard
) -> list[list[CandidateSpec]]:
    """`shard`'s batches of the full candidate list (prompt-file order × seeds, in fixed batches of
    batch_size; image-to-video with one image per call: never two prompts in a batch)."""
    wanted = {c.stem: c for c in (CandidateSpec(item, s) for item in items for s in seeds)}
    image_to_video = any(c.item.image is not None for c in wanted.values())
    per_prompt = image_to_video and not adapter.image_per_video
    return shard.select(_batches(list(wanted.values()), batch_size, per_prompt))


def generate_candidates(
    pipe,
    adapter: ModelAdapter,
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
    shard: Shard = WHOLE,
    step_cache: dict | None = None,
) -> GenerationSummary:
    """Generate every (prompt, seed) candidate of `shard`'s batches not yet in out_dir's manifests with the
    family `adapter`'s pipeline `pipe`, which already carries the LoRA when `lora` is given (path/scale recorded
    in the rows), and with the step cache `step_cache` describes (recorded in the rows) when given; the rows go to
    the shard's manifest file."""
    if batch_size < 1:
        raise ValueError(f"generation batch size: expected ≥ 1, got {batch_size}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    manifest = shard.path(out_dir / MANIFEST)
    settings = _row_settings(model, sampler, lora and str(lora), lora_scale, step_cache)
    batches = shard_batches(adapter, items, seeds, batch_size, shard)
    done = _check_done(out_dir, settings, {c.stem: c for batch in batches for c in batch})
    batches = [b for b in ([c for c in batch if c.stem not in done] for batch in batches) if b]
    todo = [c for batch in batches for c in batch]
    summary = GenerationSummary(out_dir / MANIFEST, prompts=len(items), candidates=len(todo) + len(done),
                                skipped=len(done))  # fmt: skip
    bar = tqdm(total=len(todo), desc=f"generating{f' (shard {shard})' if shard.sharded else ''}", unit="video",
               disable=not progress)  # fmt: skip
    encode_image = _clean_image_latent(pipe, adapter, sampler.max_sequence_length)
    for batch in batches:
        images = {c.item.prompt_id: _load_image(c.item.image, sampler.width, sampler.height)
                  for c in batch if c.item.image is not None}  # fmt: skip
        frames, latents = _run_pipeline(pipe, adapter, batch, sampler, images)
        latents = adapter.finalize_latents(
            pipe, latents, [images[c.item.prompt_id] for c in batch if c.item.image is not None], encode_image
        )
        for cand, video, latent in zip(batch, frames, latents):
            item = cand.item
            if not torch.isfinite(latent).all() or not torch.isfinite(video).all():
                log.error("%s: non-finite latents or frames; not saved (retried on the next run)", cand.stem)
                append_jsonl(
                    shard.path(out_dir / FAILURES), {"candidate": cand.stem, "error": "non-finite latents"}
                )
                summary.failed.append(cand.stem)
                continue
            video_rel, latents_rel = f"videos/{cand.stem}.mp4", f"latents/{cand.stem}.safetensors"
            _save_video(out_dir / video_rel, video.float().cpu(), sampler.fps)
            meta = {"model": model, "prompt_id": item.prompt_id, "seed": str(cand.seed)}
            _save_latents(out_dir / latents_rel, latent, meta)
            row = {"video": video_rel, "latents": latents_rel, "prompt_id": item.prompt_id,
                   "prompt": item.prompt, "image": _image_field(item), "seed": cand.seed,
                   **{k: v for k, v in settings.items() if v is not None or k != "step_cache"}}  # fmt: skip
            append_jsonl(manifest, row)
            summary.generated += 1
        bar.update(len(batch))
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def sampler_settings(cfg: GenerationConfig) -> SamplerSettings:
    """The config's sampler fields over the model family's published defaults."""
    defaults = adapter_class(cfg.model).sampler_defaults
    given = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SamplerSettings)
             if getattr(cfg, f.name, None) is not None}  # fmt: skip
    return dataclasses.replace(defaults, **given)


def load_items(
    cfg: GenerationConfig, prompts: str | os.PathLike | None = None
) -> tuple[list[PromptItem], bool]:
    """The prompts to generate from (camera-motion rewritten if asked) and whether this is image-to-video."""
    path = prompts or cfg.prompts
    if path is None:
        raise ValueError("generation: no prompt file given (prompts)")
    spec = adapter_class(cfg.model).pipelines
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


@one_process_per_shard
def run(cfg: GenerationConfig, prompts: str | os.PathLike | None, out_dir: str | os.PathLike,
        progress: bool = True, *, shard: Shard) -> GenerationSummary:  # fmt: skip
    """The generate stage: load the pipeline (and LoRA), generate every missing candidate of the prompt file
    (`prompts`, else cfg.prompts) of this process's shard (engine.stages.sharding) into out_dir."""
    device = shard_device(cfg.device, default_device())
    dtype = cfg.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"generation dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    if cfg.pipeline is None:
        raise ValueError("generation: no pipeline folder given (pipeline)")
    items, image_to_video = load_items(cfg, prompts)
    sampler = sampler_settings(cfg)
    seeds = candidate_seeds(cfg.num_candidates, cfg.seed)
    pipe = load_pipeline(
        cfg.model, cfg.pipeline, image_to_video=image_to_video, device=device, dtype=DTYPES[dtype]
    )
    if cfg.lora is not None:
        attach_lora(pipe, cfg.lora, cfg.lora_scale)
    apply_sampling_options(pipe, get_adapter(cfg.model), cfg, device)
    return generate_candidates(
        pipe, get_adapter(cfg.model), items, out_dir, seeds=seeds, sampler=sampler, model=cfg.model,
        batch_size=cfg.batch_size, lora=cfg.lora and str(Path(cfg.lora).resolve()), lora_scale=cfg.lora_scale,
        progress=progress, shard=shard, step_cache=step_cache_record(cfg),
    )  # fmt: skip
