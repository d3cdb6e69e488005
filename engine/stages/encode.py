"""The encode stage: preference pairs → training shards (latents, text embeddings, image latents).

Latents of a generated video are its generation's final latents when stored (no re-encoding); otherwise the
video is encoded with the model's own pipeline (engine.models.pipeline_encoder: its VAE and the family's
latent convention, in the model's native layout). Text embeddings come from the pipeline's own text encoder
at the generation's max_sequence_length; image-to-video pairs carry the first frame's image latent.

Encoded tensors are cached per video/prompt (safetensors, atomic) so a killed run resumes; the shard folder
is written to a temporary folder and renamed when complete, so it is either whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from videogpa.engine.config import EncodeConfig
from videogpa.engine.data.preference import INDEX_NAME, PreferenceShardWriter
from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.io.lock import one_process_per_folder
from videogpa.engine.io.records import read_jsonl, write_json_atomic
from videogpa.engine.io.video import read_frames
from videogpa.engine.models import adapter_class
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.types import default_device


def _key(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:20]


def _load_tensor(path: Path, name: str, what: str) -> torch.Tensor:
    try:
        tensor = load_file(str(path))[name]
    except (SafetensorError, OSError, KeyError) as err:
        raise ValueError(f"{what} {path}: not a safetensors file with a tensor {name!r} ({err})") from err
    if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
        raise ValueError(f"{what} {path}: tensor {name!r} is not finite floating point (NaN/inf?)")
    return tensor


class EncodeCache:
    """Encoded tensors by key in a folder (one safetensors file each, written atomically)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def get(self, key: str, make) -> torch.Tensor:
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            self.hits += 1
            return _load_tensor(path, "t", "encode cache file")
        self.misses += 1
        tensor = make().contiguous()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"encoding gave non-finite values (cache key {key})")
        with atomic_path(path) as tmp:
            save_file({"t": tensor}, str(tmp))
        return tensor


@dataclass
class EncodeSummary:
    out_dir: Path  # the stage's output: out_dir/train (and out_dir/heldout) shard folders
    train: int = 0
    heldout: int = 0
    reused_latents: int = 0  # generation latents used as they are
    encoded_videos: int = 0  # videos encoded with the VAE (or read back from the cache)
    skipped: bool = False  # the shard folders were already complete

    def __str__(self) -> str:
        if self.skipped:
            return "shards already complete; nothing to do"
        return (
            f"{self.train} training + {self.heldout} held-out pairs; latents: {self.reused_latents} reused from "
            f"generation, {self.encoded_videos} encoded with the VAE"
        )


def split_pairs(rows: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, heldout): round(fraction·n) pairs drawn with `seed` are held out (never trained on)."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction: expected a value in [0, 1), got {heldout_fraction}")
    held = set(random.Random(seed).sample(range(len(rows)), round(heldout_fraction * len(rows))))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


class PairEncoder:
    """The tensors of one pair row (pairs.jsonl), through the cache."""

    def __init__(self, encoder: PipelineEncoder, cache: EncodeCache, summary: EncodeSummary):
        self.encoder, self.cache, self.summary = encoder, cache, summary

    def latents(self, side: dict, where: str) -> torch.Tensor:
        stored = side.get("extra", {}).get("latents")
        if stored and Path(stored).is_file():
            self.summary.reused_latents += 1
            return _load_tensor(Path(stored), "latents", f"{where}: generation latents")
        video = Path(side["video"])
        if not video.exists():
            raise ValueError(f"{where}: video {video} does not exist (and it has no stored latents)")
        self.summary.encoded_videos += 1

        def encode() -> torch.Tensor:
            frames = read_frames(video).permute(0, 3, 1, 2).float() / 255
            if (frames.shape[0] - 1) % 4:
                raise ValueError(f"{where}: video {video} has {frames.shape[0]} frames; the VAE needs 4k+1")
            return self.encoder.encode_video(frames)

        return self.cache.get(_key("video", str(video.resolve()), str(video.stat().st_mtime_ns)), encode)

    def image(self, path: str, size: tuple[int, int], where: str, num_frames: int, kind: str = "latents"):
        """The first frame's image latents (the family's image condition for a num_frames video), or with
        kind="embeds" the pipeline's image-encoder embeddings."""
        image_path = Path(path)
        if not image_path.is_file():
            raise ValueError(f"{where}: image {image_path} does not exist")

        def encode() -> torch.Tensor:
            from PIL import Image

            with Image.open(image_path) as im:  # resized as the generation pipeline did
                pixels = np.asarray(im.convert("RGB").resize((size[1], size[0])), dtype=np.float32)
            image = torch.from_numpy(pixels).permute(2, 0, 1) / 255
            if kind == "embeds":
                return self.encoder.encode_image_embeds(image)
            return self.encoder.encode_image(image, num_frames)

        condition = self.encoder.convention.image_condition  # first-frame latents keep their original key
        extra = [] if (kind, condition) == ("latents", "first_frame") else [kind, condition, str(num_frames)]
        return self.cache.get(_key("image", str(image_path.resolve()), *map(str, size), *extra), encode)

    def text(self, prompt: str) -> torch.Tensor:
        length = str(self.encoder.max_sequence_length)
        return self.cache.get(_key("text", prompt, length), lambda: self.encoder.encode_text(prompt))

    def add(self, writer: PreferenceShardWriter, row: dict) -> None:
        where = f"pair {row['pair_id']}"
        w = self.latents(row["winner"], where)
        lo = self.latents(row["loser"], where)
        image = embeds = None
        if row.get("image"):
            size = self._pixel_size(row)
            frames = self.encoder.convention.clip_size(self.encoder.vae, tuple(w.shape))[0]
            image = self.image(row["image"], size, where, frames)
            if self.encoder.has_image_encoder:
                embeds = self.image(row["image"], size, where, frames, kind="embeds")
        writer.add(
            row["pair_id"],
            w,
            lo,
            self.text(row["prompt"]),
            row["winner"]["score"],
            row["loser"]["score"],
            image,
            embeds,
        )

    @staticmethod
    def _pixel_size(row: dict) -> tuple[int, int]:
        sampler = row["winner"].get("extra", {}).get("sampler") or {}
        if "height" in sampler and "width" in sampler:
            return sampler["height"], sampler["width"]
        frames = read_frames(row["winner"]["video"])
        return frames.shape[1], frames.shape[2]


SOURCE_FILE = "encode_source.json"


def _check_source(out_dir: Path, split: dict[str, list[str]], rows: list[dict]) -> None:
    """Record which pairs the shards hold (first run) or refuse to mix them with another pair index."""
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    source = {"pairs_sha256": digest, "split": split}
    path = out_dir / SOURCE_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != source:
            raise ValueError(
                f"{out_dir} holds shards of another pair index or split ({path}); use a new folder or move it away"
            )
        return
    write_json_atomic(path, source)


def _write_set(
    rows: list[dict], out: Path, pair_encoder: PairEncoder, shard_size: int, desc: str, progress: bool
):
    with atomic_path(out) as tmp, PreferenceShardWriter(tmp, shard_size=shard_size) as writer:
        for row in tqdm(rows, desc=desc, unit="pair", disable=not progress):
            pair_encoder.add(writer, row)


def encode_pairs(
    rows: list[dict],
    out_dir: str | os.PathLike,
    encoder: PipelineEncoder,
    *,
    heldout_fraction: float = 0.0,
    seed: int = 0,
    shard_size: int = 64,
    progress: bool = True,
) -> EncodeSummary:
    """Write out_dir/train (and out_dir/heldout when heldout_fraction > 0) preference-shard folders.
    Complete folders are left as they are; an incomplete run resumes from the cache in out_dir/cache."""
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError("encode: the pair index holds no pairs (nothing to train on)")
    train, heldout = split_pairs(rows, heldout_fraction, seed)
    sets = [("train", train)] + ([("heldout", heldout)] if heldout else [])
    summary = EncodeSummary(out_dir, train=len(train), heldout=len(heldout))
    _check_source(out_dir, {name: [r["pair_id"] for r in subset] for name, subset in sets}, rows)
    if all((out_dir / name / INDEX_NAME).is_file() for name, _ in sets):
        summary.skipped = True
        return summary
    pair_encoder = PairEncoder(encoder, EncodeCache(out_dir / "cache"), summary)
    for name, subset in sets:
        if (out_dir / name / INDEX_NAME).is_file():
            continue
        if (out_dir / name).exists():
            raise ValueError(
                f"{out_dir / name} exists without {INDEX_NAME}: not a shard folder; move it away"
            )
        _write_set(subset, out_dir / name, pair_encoder, shard_size, f"encoding {name}", progress)
    return summary


@one_process_per_folder
def run(
    cfg: EncodeConfig, pairs: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True
) -> EncodeSummary:
    """The encode stage: load the model's pipeline from its local folder (on cfg.device; None: cuda when
    available, else cpu) and encode the pair index into out_dir."""
    if cfg.pipeline is None:
        raise ValueError("encode: no pipeline folder given (pipeline: a local diffusers pipeline folder)")
    rows = read_jsonl(pairs, allow_truncated_tail=False)
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("pair_id", "prompt", "winner", "loser") if k not in row]
        if missing:
            raise ValueError(f"{pairs}:{number}: pair row lacks {missing}")
    family = adapter_class(cfg.model)
    max_sequence_length = cfg.max_sequence_length
    if max_sequence_length is None:
        used = {r["winner"].get("extra", {}).get("sampler", {}).get("max_sequence_length") for r in rows} - {
            None
        }
        if len(used) > 1:
            raise ValueError(
                f"{pairs}: videos were generated with several max_sequence_length values {sorted(used)}"
            )
        max_sequence_length = used.pop() if used else family.sampler_defaults.max_sequence_length
    image_to_video = family.pipelines.requires_image or any(r.get("image") for r in rows)
    pipe = load_pipeline(
        cfg.model, cfg.pipeline, image_to_video=image_to_video, device=cfg.device or default_device()
    )
    encoder = PipelineEncoder(pipe, family.latent_convention, max_sequence_length)
    return encode_pairs(rows, out_dir, encoder, heldout_fraction=cfg.heldout_fraction, seed=cfg.seed,
                        shard_size=cfg.shard_size, progress=progress)  # fmt: skip
