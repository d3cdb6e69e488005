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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from videogpa.engine.core.config import EncodeConfig
from videogpa.engine.data.preference import INDEX_NAME, PreferenceShardWriter
from videogpa.engine.io.atomic import atomic_path, commit
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.io.video import read_frames
from videogpa.engine.models import adapter_class
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.stages.sharding import WHOLE, Shard, finishes, one_process_per_shard, shard_device, sole
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


def _private_tmp(path: Path) -> Path:
    """A temporary path beside `path` that no other process writes (the shards of a run write the same
    files)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


class EncodeCache:
    """Encoded tensors by key in a folder (one safetensors file each, written atomically)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def has(self, key: str) -> bool:
        return (self.folder / f"{key}.safetensors").is_file()

    def get(self, key: str, make) -> torch.Tensor:
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            self.hits += 1
            return _load_tensor(path, "t", "encode cache file")
        self.misses += 1
        tensor = make().contiguous()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"encoding gave non-finite values (cache key {key})")
        tmp = _private_tmp(path)  # shards may encode one prompt at once
        save_file({"t": tensor}, str(tmp))
        commit(tmp, path)
        return tensor


@dataclass
class EncodeSummary:
    out_dir: Path  # the stage's output: out_dir/train (and out_dir/heldout) shard folders
    train: int = 0
    heldout: int = 0
    reused_latents: int = 0  # generation latents used as they are
    encoded_videos: int = 0  # videos encoded with the VAE (or read back from the cache)
    skipped: bool = False  # the shard folders were already complete
    encoded_pairs: int = 0  # pairs this process encoded into the cache
    waiting: bool = False  # sharded: other shards' pairs are not all encoded yet (or one of them assembles)

    def __str__(self) -> str:
        if self.skipped:
            return "shards already complete; nothing to do"
        if self.waiting:
            return (
                f"{self.encoded_pairs} pairs encoded by this shard; the shard folders are written by the "
                "shard that finds every pair encoded"
            )
        return (
            f"{self.train} training + {self.heldout} held-out pairs; latents: {self.reused_latents} "
            f"reused from generation, {self.encoded_videos} encoded with the VAE"
        )


def split_pairs(rows: list[dict], heldout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, heldout): round(fraction·n) pairs drawn with `seed` are held out (never trained on)."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction: expected a value in [0, 1), got {heldout_fraction}")
    held = set(random.Random(seed).sample(range(len(rows)), round(heldout_fraction * len(rows))))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


class PairEncoder:
    """The tensors of one pair row (pairs.jsonl), through the cache; counted in `summary` when given."""

    def __init__(self, encoder: PipelineEncoder, cache: EncodeCache, summary: EncodeSummary | None):
        self.encoder, self.cache, self.summary = encoder, cache, summary

    def _count(self, field: str) -> None:
        if self.summary is not None:
            setattr(self.summary, field, getattr(self.summary, field) + 1)

    @staticmethod
    def _stored(side: dict) -> Path | None:
        stored = side.get("extra", {}).get("latents")
        return Path(stored) if stored and Path(stored).is_file() else None

    @staticmethod
    def _video_key(video: Path) -> str:
        return _key("video", str(video.resolve()), str(video.stat().st_mtime_ns))

    def latents(self, side: dict, where: str) -> torch.Tensor:
        stored = self._stored(side)
        if stored is not None:
            self._count("reused_latents")
            return _load_tensor(stored, "latents", f"{where}: generation latents")
        video = Path(side["video"])
        if not video.exists():
            raise ValueError(f"{where}: video {video} does not exist (and it has no stored latents)")
        self._count("encoded_videos")

        def encode() -> torch.Tensor:
            frames = read_frames(video).permute(0, 3, 1, 2).float() / 255
            if (frames.shape[0] - 1) % 4:
                raise ValueError(f"{where}: video {video} has {frames.shape[0]} frames; the VAE needs 4k+1")
            return self.encoder.encode_video(frames)

        return self.cache.get(self._video_key(video), encode)

    def _image_frames(self, row: dict) -> int | None:
        """The video's frame count, for a family whose image condition spans the video (Wan's latent-concat
        I2V; None for a first-frame one): from the winner's latents (their header) or its video."""
        if self.encoder.convention.image_condition == "first_frame":
            return None
        stored = self._stored(row["winner"])
        if stored is None:
            return read_frames(Path(row["winner"]["video"])).shape[0]
        with safe_open(str(stored), "pt") as f:
            shape = tuple(f.get_slice("latents").get_shape())
        return self.encoder.convention.clip_size(self.encoder.vae, shape)[0]

    def _image_kinds(self) -> tuple[str, ...]:
        """The image tensors of a pair: its image latents, and image embeddings if the pipeline has an
        encoder."""
        return ("latents", "embeds") if self.encoder.has_image_encoder else ("latents",)

    @staticmethod
    def _image_key(image_path: Path, size: tuple[int, int], frames: int | None, kind: str) -> str:
        # first-frame keys as before
        extra = [] if (kind, frames) == ("latents", None) else [kind, str(frames)]
        return _key("image", str(image_path.resolve()), *map(str, size), *extra)

    def image(
        self, path: str, size: tuple[int, int], where: str, frames: int | None = None, kind: str = "latents"
    ) -> torch.Tensor:
        """The first frame's image latents (for `frames` video frames when the condition spans the video), or
        with kind="embeds" the pipeline's image-encoder embeddings."""
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
            return self.encoder.encode_image(image, frames)

        return self.cache.get(self._image_key(image_path, size, frames, kind), encode)

    def _text_key(self, prompt: str) -> str:
        return _key("text", prompt, str(self.encoder.max_sequence_length))

    def text(self, prompt: str) -> torch.Tensor:
        return self.cache.get(self._text_key(prompt), lambda: self.encoder.encode_text(prompt))

    def tensors(self, row: dict) -> tuple:
        """(winner latents, loser latents, text embedding, image latents or None, image embeddings or
        None)."""
        where = f"pair {row['pair_id']}"
        w = self.latents(row["winner"], where)
        lo = self.latents(row["loser"], where)
        image = [None, None]
        if row.get("image"):
            size, frames = self._pixel_size(row), self._image_frames(row)
            for i, kind in enumerate(self._image_kinds()):
                image[i] = self.image(row["image"], size, where, frames, kind)
        return w, lo, self.text(row["prompt"]), *image

    def cached(self, row: dict) -> bool:
        """Whether every tensor of the pair is stored (generation latents or cache files): encoded by some
        shard. A video or image that no longer exists counts as not encoded (its encoding names it)."""
        keys = [self._text_key(row["prompt"])]
        for side in (row["winner"], row["loser"]):
            if self._stored(side) is None:
                video = Path(side["video"])
                if not video.exists():
                    return False
                keys.append(self._video_key(video))
        if row.get("image"):
            if not Path(row["image"]).is_file():
                return False
            size, frames = self._pixel_size(row), self._image_frames(row)
            keys += [self._image_key(Path(row["image"]), size, frames, kind) for kind in self._image_kinds()]
        return all(self.cache.has(key) for key in keys)

    def add(self, writer: PreferenceShardWriter, row: dict) -> None:
        w, lo, text, image, embeds = self.tensors(row)
        writer.add(row["pair_id"], w, lo, text, row["winner"]["score"], row["loser"]["score"], image, embeds)

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
                f"{out_dir} holds shards of another pair index or split ({path}); use a new folder or "
                "move it away"
            )
        return
    tmp = _private_tmp(path)  # every shard writes the same content
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(source))
    commit(tmp, path)


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
    shard: Shard = WHOLE,
) -> EncodeSummary:
    """Encode `shard`'s share of the pairs (sorted by pair_id) into the cache out_dir/cache, then, once every
    pair is encoded (engine.stages.sharding.finishes), write out_dir/train (and out_dir/heldout when
    heldout_fraction > 0) preference-shard folders from the cache. Complete folders are left as they are; an
    incomplete run resumes from the cache."""
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError("encode: the pair index holds no pairs (nothing to train on)")
    train, heldout = split_pairs(rows, heldout_fraction, seed)
    sets = [("train", train)] + ([("heldout", heldout)] if heldout else [])
    summary = EncodeSummary(out_dir, train=len(train), heldout=len(heldout))
    _check_source(out_dir, {name: [r["pair_id"] for r in subset] for name, subset in sets}, rows)
    if _complete(out_dir, sets):
        summary.skipped = True
        return summary
    cache = EncodeCache(out_dir / "cache")
    pair_encoder = PairEncoder(encoder, cache, summary)
    mine = shard.select(sorted(rows, key=lambda r: r["pair_id"]))
    desc = f"encoding{f' (shard {shard})' if shard.sharded else ''}"
    for row in tqdm(mine, desc=desc, unit="pair", disable=not progress):
        pair_encoder.tensors(row)  # into the cache (what a killed run cached is read back)
    summary.encoded_pairs = len(mine)
    reader = PairEncoder(encoder, cache, None)
    if not finishes(shard, lambda: all(reader.cached(row) for row in rows)):
        summary.waiting = True
        return summary
    with sole(out_dir, "encode.assemble") as mine_to_do:
        if not mine_to_do or _complete(out_dir, sets):
            summary.waiting = not mine_to_do
            return summary
        for name, subset in sets:
            if (out_dir / name / INDEX_NAME).is_file():
                continue
            if (out_dir / name).exists():
                raise ValueError(
                    f"{out_dir / name} exists without {INDEX_NAME}: not a shard folder; move it away"
                )
            _write_set(subset, out_dir / name, reader, shard_size, f"writing {name}", progress)
    return summary


def _complete(out_dir: Path, sets: list[tuple[str, list[dict]]]) -> bool:
    return all((out_dir / name / INDEX_NAME).is_file() for name, _ in sets)


@one_process_per_shard
def run(
    cfg: EncodeConfig,
    pairs: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    *,
    shard: Shard,
) -> EncodeSummary:
    """The encode stage: load the model's pipeline from its local folder (on cfg.device; None: cuda when
    available, cuda:LOCAL_RANK under a launcher, else cpu) and encode this process's shard
    (engine.stages.sharding) of the pair index into out_dir."""
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
        cfg.model,
        cfg.pipeline,
        image_to_video=image_to_video,
        device=shard_device(cfg.device, default_device()),
    )
    encoder = PipelineEncoder(pipe, family.latent_convention, max_sequence_length)
    return encode_pairs(
        rows,
        out_dir,
        encoder,
        heldout_fraction=cfg.heldout_fraction,
        seed=cfg.seed,
        shard_size=cfg.shard_size,
        progress=progress,
        shard=shard,
    )
