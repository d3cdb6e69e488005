"""The generate stage: N seeds per prompt through a diffusers pipeline, each saved as an mp4, its final
latents (safetensors) and one manifest row; resumable.

Layout of an output folder:

    manifest.jsonl                 one row per finished candidate (paths relative to the folder); a sharded
                                   run's shards each write manifest.shard-I-of-N.jsonl
                                   (engine.stages.sharding) and readers take the union of them all
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
The prompt file is streamed (engine.data.prompts.PromptFile) and the batches formed as it goes by, so a
process holds a batch of prompts at a time, never the list.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.data.prompts import PromptFile, PromptItem
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


def _digest(value) -> bytes:
    return hashlib.blake2b(json.dumps(value).encode(), digest_size=16).digest()


class DoneCandidates:
    """The candidates already in out_dir's manifests (any shard's), held as what checking a candidate of this
    run needs: per video stem its manifest, digests of its row's prompt and image, the settings keys that
    differ from this run's, and its file names (never the rows' prompts: a resume holds little beside the
    stems)."""

    def __init__(self, out_dir: Path, settings: dict):
        self.out_dir = out_dir
        self.rows: dict[str, list[tuple]] = {}
        for manifest, _, row in sharded_rows(out_dir / MANIFEST):
            other = tuple(k for k in settings if row.get(k) != settings[k])
            record = (
                manifest,
                _digest(row.get("prompt")),
                _digest(row.get("image")),
                other,
                {key: row.get(key) for key in ("video", "latents")},
            )
            self.rows.setdefault(Path(row.get("video", "")).stem, []).append(record)

    def check(self, cand: CandidateSpec) -> bool:
        """Whether `cand` is done; ValueError when its row was made with other settings or lost its files."""
        records = self.rows.get(cand.stem, ())
        mine = {"prompt": _digest(cand.item.prompt), "image": _digest(_image_field(cand.item))}
        for manifest, prompt, image, other, files in records:
            diff = sorted(
                [k for k, theirs in (("prompt", prompt), ("image", image)) if theirs != mine[k]] + list(other)
            )
            if diff:
                raise ValueError(
                    f"{manifest}: {cand.stem} was generated with other {diff} than this run's; "
                    "use a new output folder (nothing is overwritten)"
                )
            for key, rel in files.items():
                if rel is None or not (self.out_dir / rel).is_file():
                    raise ValueError(
                        f"{manifest}: {cand.stem}'s {key} file {self.out_dir / str(rel)} is missing"
                    )
        return bool(records)


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


def _batches(
    candidates: Iterable[CandidateSpec], batch_size: int, per_prompt: bool
) -> Iterator[list[CandidateSpec]]:
    """Consecutive candidates in batches of batch_size, formed lazily; per_prompt: never two prompts in one
    batch (a prompt's candidates are consecutive)."""
    batch: list[CandidateSpec] = []
    for c in candidates:
        if len(batch) == batch_size or (
            per_prompt and batch and c.item.prompt_id != batch[-1].item.prompt_id
        ):
            yield batch
            batch = []
        batch.append(c)
    if batch:
        yield batch


def shard_batches(
    adapter: ModelAdapter, items: Iterable[PromptItem], seeds: list[int], batch_size: int, shard: Shard
) -> Iterator[list[CandidateSpec]]:
    """`shard`'s batches of the full candidate list (prompt order × seeds, in fixed batches of batch_size;
    image-to-video with one image per call: never two prompts in a batch), formed as `items` streams by, so
    one batch is held at a time. The prompts have an image each or none (load_items checks): the first
    tells."""
    candidates = (CandidateSpec(item, s) for item in items for s in seeds)
    first = next(candidates, None)
    if first is None:
        return iter(())
    per_prompt = first.item.image is not None and not adapter.image_per_video
    return shard.stream(_batches(itertools.chain([first], candidates), batch_size, per_prompt))


def _todo_batches(
    adapter: ModelAdapter,
    items: Iterable[PromptItem],
    seeds: list[int],
    batch_size: int,
    shard: Shard,
    done: DoneCandidates,
    summary: GenerationSummary,
) -> Iterator[list[CandidateSpec]]:
    """`shard`'s batches less their done candidates (each checked against this run; empty batches dropped),
    streamed; the prompts, the shard's candidates and its done ones are counted into `summary`."""

    def counted():
        for item in items:
            summary.prompts += 1
            yield item

    for batch in shard_batches(adapter, counted(), seeds, batch_size, shard):
        todo = [c for c in batch if not done.check(c)]
        summary.candidates += len(batch)
        summary.skipped += len(batch) - len(todo)
        if todo:
            yield todo


def generate_candidates(
    pipe,
    adapter: ModelAdapter,
    items: Iterable[PromptItem],
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
    family `adapter`'s pipeline `pipe`, which already carries the LoRA when `lora` is given (path/scale
    recorded in the rows), and with the step cache `step_cache` describes (recorded in the rows) when given;
    the rows go to the shard's manifest file. `items` (a list, or a PromptFile that streams the prompt file)
    is read twice and never held: the process holds one batch of prompts and the stems already done."""
    if batch_size < 1:
        raise ValueError(f"generation batch size: expected ≥ 1, got {batch_size}")
    if iter(items) is items:
        raise TypeError(
            "generate_candidates: items must be re-iterable (a list or a PromptFile), not an iterator"
        )
    start = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    manifest = shard.path(out_dir / MANIFEST)
    settings = _row_settings(model, sampler, lora and str(lora), lora_scale, step_cache)
    done = DoneCandidates(out_dir, settings)
    work = (adapter, items, seeds, batch_size, shard, done)
    # two passes over the prompts (streamed when items is a PromptFile): one to count and check the done
    # candidates before anything is generated, one to generate
    summary = GenerationSummary(out_dir / MANIFEST)
    todo = sum(len(batch) for batch in _todo_batches(*work, summary))
    bar = tqdm(
        total=todo,
        desc=f"generating{f' (shard {shard})' if shard.sharded else ''}",
        unit="video",
        disable=not progress,
    )
    encode_image = _clean_image_latent(pipe, adapter, sampler.max_sequence_length)
    for batch in _todo_batches(*work, GenerationSummary(summary.manifest)):
        images = {
            c.item.prompt_id: _load_image(c.item.image, sampler.width, sampler.height)
            for c in batch
            if c.item.image is not None
        }
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
            row = {
                "video": video_rel,
                "latents": latents_rel,
                "prompt_id": item.prompt_id,
                "prompt": item.prompt,
                "image": _image_field(item),
                "seed": cand.seed,
                **{k: v for k, v in settings.items() if v is not None or k != "step_cache"},
            }
            append_jsonl(manifest, row)
            summary.generated += 1
        bar.update(len(batch))
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def sampler_settings(cfg: GenerationConfig) -> SamplerSettings:
    """The config's sampler fields over the model family's published defaults."""
    defaults = adapter_class(cfg.model).sampler_defaults
    given = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(SamplerSettings)
        if getattr(cfg, f.name, None) is not None
    }
    return dataclasses.replace(defaults, **given)


def load_items(cfg: GenerationConfig, prompts: str | os.PathLike | None = None) -> tuple[PromptFile, bool]:
    """The prompts to generate from (camera-motion rewritten if asked), streamed from their file on every
    iteration, and whether this is image-to-video. The whole file is checked here, one line at a time, so a
    bad line is an error before any pipeline is loaded."""
    path = prompts or cfg.prompts
    if path is None:
        raise ValueError("generation: no prompt file given (prompts)")
    spec = adapter_class(cfg.model).pipelines
    image_to_video = spec.requires_image
    kind = None  # whether the first prompt has an image: every other must be of its kind (image-to-video)
    for item in PromptFile(Path(path), require_images=spec.requires_image):
        if kind is None:
            kind = item.image is not None
            image_to_video = spec.requires_image or (spec.image_to_video is not None and kind)
        elif spec.image_to_video is not None and (item.image is not None) != kind:
            raise ValueError(
                f"{path}: some prompts have an 'image' and some do not; image-to-video needs one per prompt"
            )
    if image_to_video and not spec.requires_image:
        collections.deque(PromptFile(Path(path), require_images=True), maxlen=0)  # every image must exist
    seed = cfg.seed if cfg.camera_motion else None
    return PromptFile(Path(path), require_images=image_to_video, camera_motion_seed=seed), image_to_video


@one_process_per_shard
def run(
    cfg: GenerationConfig,
    prompts: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    shard: Shard,
) -> GenerationSummary:
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
        pipe,
        get_adapter(cfg.model),
        items,
        out_dir,
        seeds=seeds,
        sampler=sampler,
        model=cfg.model,
        batch_size=cfg.batch_size,
        lora=cfg.lora and str(Path(cfg.lora).resolve()),
        lora_scale=cfg.lora_scale,
        progress=progress,
        shard=shard,
        step_cache=step_cache_record(cfg),
    )
