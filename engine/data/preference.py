"""Preference shards: the model-family-agnostic training set of Diffusion-DPO (winner/loser latent pairs).

On disk, a folder holds:
  index.jsonl                one JSON object per pair, line i describing the pair with integer index i:
                             {"index", "pair_id", "shard", "score_w", "score_l", "has_image"}
  shard-00000.safetensors    the tensors of up to `shard_size` pairs, keys "<index>/<name>" with name in
  shard-00001.safetensors    latents_w, latents_l ([F, C, H, W] or [C, F, H, W]: the model's native layout,
  ...                        same shape), text_embeds [L, D], and optionally image_latents (4-D, native).
Every file is written to a temporary name and renamed, and the index is written last (on close), so a
folder with an index is always complete.

Reading: `PreferenceDataset(path)[i]` -> `PreferencePair`; `collate_pairs(list)` -> `PreferenceBatch`.
Sampling: `PreferenceSampler` (see its docstring for the order across epochs, batches and ranks).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.io.records import numbered_jsonl, write_jsonl_atomic
from videogpa.engine.types import Conditioning

INDEX_NAME = "index.jsonl"
SHARD_NAME = "shard-{:05d}.safetensors"
TENSOR_NAMES = ("latents_w", "latents_l", "text_embeds", "image_latents")
RECORD_FIELDS = {
    "index": int,
    "pair_id": str,
    "shard": str,
    "score_w": float,
    "score_l": float,
    "has_image": bool,
}


@dataclass
class PreferencePair:
    """One stored pair: winner/loser latents (one sample, native layout), its conditioning and scores."""

    index: int
    pair_id: str
    latents_w: torch.Tensor
    latents_l: torch.Tensor
    text_embeds: torch.Tensor
    image_latents: torch.Tensor | None
    score_w: float
    score_l: float


@dataclass
class PreferenceBatch:
    """A batch of pairs: latents [B, ...] (native layout), cond batched like them, pair_index [B] (int64)."""

    latents_w: torch.Tensor
    latents_l: torch.Tensor
    cond: Conditioning
    pair_index: torch.Tensor
    score_w: torch.Tensor  # [B] float32
    score_l: torch.Tensor  # [B] float32
    pair_ids: list[str]


def _check_tensor(where: str, name: str, value: torch.Tensor | None, ndim: int) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: {name!r} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{where}: {name!r} must be floating point, got {value.dtype}")
    if value.ndim != ndim:
        raise ValueError(f"{where}: {name!r} must be {ndim}-D, got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{where}: {name!r} contains NaN or infinite values")


def check_pair_tensors(where: str, tensors: dict[str, torch.Tensor | None]) -> None:
    """Shapes, dtypes and finiteness of one pair's tensors; a ValueError naming `where` and the key."""
    _check_tensor(where, "latents_w", tensors["latents_w"], 4)
    _check_tensor(where, "latents_l", tensors["latents_l"], 4)
    if tensors["latents_w"].shape != tensors["latents_l"].shape:
        raise ValueError(
            f"{where}: 'latents_w' {tuple(tensors['latents_w'].shape)} and 'latents_l' "
            f"{tuple(tensors['latents_l'].shape)} must have the same shape"
        )
    _check_tensor(where, "text_embeds", tensors["text_embeds"], 2)
    if tensors.get("image_latents") is not None:
        _check_tensor(where, "image_latents", tensors["image_latents"], 4)


def _check_score(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


class PreferenceShardWriter:
    """Write pairs to out_dir as safetensors shards of `shard_size` pairs plus index.jsonl (on close).

    Usable as a context manager (the index is written only if the block ends without an exception).
    """

    def __init__(self, out_dir: str | Path, shard_size: int = 64):
        if not (isinstance(shard_size, int) and shard_size > 0):
            raise ValueError(f"shard_size: expected a positive integer, got {shard_size!r}")
        self.out_dir = Path(out_dir)
        if (self.out_dir / INDEX_NAME).exists():
            raise ValueError(f"{str(self.out_dir / INDEX_NAME)!r} already exists: write to an empty folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.records: list[dict] = []
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_count = 0
        self._ids: set[str] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self.records)

    def add(
        self,
        pair_id: str,
        latents_w: torch.Tensor,
        latents_l: torch.Tensor,
        text_embeds: torch.Tensor,
        score_w: float,
        score_l: float,
        image_latents: torch.Tensor | None = None,
    ) -> int:
        """Append one pair (single sample, no batch dim); returns its integer index."""
        if self._closed:
            raise ValueError("PreferenceShardWriter.add: the writer is closed")
        if not isinstance(pair_id, str) or not pair_id:
            raise ValueError(f"pair_id: expected a non-empty string, got {pair_id!r}")
        if pair_id in self._ids:
            raise ValueError(f"pair_id {pair_id!r} was already added")
        tensors = {"latents_w": latents_w, "latents_l": latents_l, "text_embeds": text_embeds}
        tensors["image_latents"] = image_latents
        check_pair_tensors(f"pair {pair_id!r}", tensors)
        index = len(self.records)
        record = {
            "index": index,
            "pair_id": pair_id,
            "shard": SHARD_NAME.format(index // self.shard_size),
            "score_w": _check_score("score_w", score_w),
            "score_l": _check_score("score_l", score_l),
            "has_image": image_latents is not None,
        }
        for name, value in tensors.items():
            if value is not None:
                self._pending[f"{index}/{name}"] = (
                    value.detach().cpu().clone(memory_format=torch.contiguous_format)
                )
        self.records.append(record)
        self._ids.add(pair_id)
        self._pending_count += 1
        if self._pending_count == self.shard_size:
            self._flush()
        return index

    def _flush(self) -> None:
        if self._pending_count:
            _atomic_save(self._pending, self.out_dir / self.records[-1]["shard"])
        self._pending, self._pending_count = {}, 0

    def close(self) -> Path:
        """Write the last shard and the index; returns the folder."""
        if not self._closed:
            self._flush()
            write_jsonl_atomic(self.out_dir / INDEX_NAME, self.records)
            self._closed = True
        return self.out_dir

    def __enter__(self) -> PreferenceShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def _check_record(record: dict, where: str, expected_index: int) -> dict:
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (expected {sorted(RECORD_FIELDS)})")
    for key, kind in RECORD_FIELDS.items():
        value = record.get(key)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ValueError(f"{where}: field {key!r} must be a {kind.__name__}, got {value!r}")
    if record["index"] != expected_index:
        raise ValueError(
            f"{where}: field 'index' is {record['index']}, expected {expected_index} (line order)"
        )
    if Path(record["shard"]).name != record["shard"]:
        raise ValueError(
            f"{where}: field 'shard' must be a file name in the same folder, got {record['shard']!r}"
        )
    return record


class PreferenceDataset(torch.utils.data.Dataset):
    """The pairs of a preference-shard folder; the index and shard headers are validated on open, tensors
    are read lazily (and checked for shape, dtype and NaN) per item."""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        index = self.root / INDEX_NAME
        if not index.is_file():
            raise ValueError(
                f"preference set {str(self.root)!r}: missing {INDEX_NAME} (expected {str(index)!r})"
            )
        rows = numbered_jsonl(index, allow_truncated_tail=False)
        self.records = [_check_record(row, f"{index}:{number}", i) for i, (number, row) in enumerate(rows)]
        ids = [r["pair_id"] for r in self.records]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"{str(index)!r}: duplicate pair_id values {dup}")
        self._check_shards()

    def _check_shards(self) -> None:
        by_shard: dict[str, list[dict]] = {}
        for record in self.records:
            by_shard.setdefault(record["shard"], []).append(record)
        for shard, records in by_shard.items():
            path = self.root / shard
            if not path.is_file():
                raise ValueError(f"preference shard {str(path)!r} listed in {INDEX_NAME} does not exist")
            try:
                with safe_open(str(path), "pt") as f:
                    shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
            except Exception as err:  # safetensors raises its own error types for corrupt headers
                raise ValueError(
                    f"preference shard {str(path)!r} is not a readable safetensors file: {err}"
                ) from err
            for record in records:
                names = TENSOR_NAMES if record["has_image"] else TENSOR_NAMES[:3]
                for name in names:
                    if f"{record['index']}/{name}" not in shapes:
                        raise ValueError(
                            f"preference shard {str(path)!r}: missing key {record['index']}/{name!s}"
                        )
                w, lo = shapes[f"{record['index']}/latents_w"], shapes[f"{record['index']}/latents_l"]
                if w != lo:
                    raise ValueError(
                        f"preference shard {str(path)!r}: key {record['index']}/latents_w has shape {w} but "
                        f"{record['index']}/latents_l has {lo}"
                    )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> PreferencePair:
        if not 0 <= i < len(self.records):
            raise IndexError(
                f"pair index {i} out of range for {len(self.records)} pairs in {str(self.root)!r}"
            )
        record = self.records[i]
        path = self.root / record["shard"]
        names = TENSOR_NAMES if record["has_image"] else TENSOR_NAMES[:3]
        try:
            with safe_open(str(path), "pt") as f:
                tensors = {name: f.get_tensor(f"{i}/{name}") for name in names}
        except Exception as err:
            raise ValueError(f"preference shard {str(path)!r}: could not read pair {i}: {err}") from err
        tensors.setdefault("image_latents", None)
        check_pair_tensors(f"preference shard {str(path)!r}, pair {i} (keys '{i}/...')", tensors)
        return PreferencePair(
            index=i,
            pair_id=record["pair_id"],
            score_w=record["score_w"],
            score_l=record["score_l"],
            **tensors,
        )


def _stack(pairs: Sequence[PreferencePair], name: str) -> torch.Tensor:
    values = [getattr(p, name) for p in pairs]
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) != 1:
        raise ValueError(f"collate_pairs: {name!r} shapes differ within the batch: {sorted(shapes)}")
    return torch.stack(values)


def collate_pairs(pairs: Sequence[PreferencePair]) -> PreferenceBatch:
    """Stack pairs into a PreferenceBatch (all pairs need equal shapes; image latents on all or none)."""
    if not pairs:
        raise ValueError("collate_pairs: expected at least one pair")
    with_image = {p.image_latents is not None for p in pairs}
    if len(with_image) != 1:
        raise ValueError("collate_pairs: some pairs have image_latents and some do not")
    image = _stack(pairs, "image_latents") if with_image == {True} else None
    return PreferenceBatch(
        latents_w=_stack(pairs, "latents_w"),
        latents_l=_stack(pairs, "latents_l"),
        cond=Conditioning(_stack(pairs, "text_embeds"), image),
        pair_index=torch.tensor([p.index for p in pairs], dtype=torch.long),
        score_w=torch.tensor([p.score_w for p in pairs], dtype=torch.float32),
        score_l=torch.tensor([p.score_l for p in pairs], dtype=torch.float32),
        pair_ids=[p.pair_id for p in pairs],
    )


def epoch_permutation(num_pairs: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of range(num_pairs) for one epoch (a pure function of seed and epoch)."""
    if not (isinstance(seed, int) and seed >= 0) or not (isinstance(epoch, int) and epoch >= 0):
        raise ValueError(
            f"seed and epoch: expected non-negative integers, got seed={seed!r}, epoch={epoch!r}"
        )
    low, high = np.random.SeedSequence([seed, epoch]).generate_state(2)
    gen = torch.Generator().manual_seed(int(low) | int(high) << 32)
    return torch.randperm(num_pairs, generator=gen).tolist()


@functools.lru_cache(maxsize=4)
def _cached_permutation(num_pairs: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(epoch_permutation(num_pairs, seed, epoch))


class PreferenceSampler(torch.utils.data.Sampler[int]):
    """Deterministic, rank-sharded order of pair indices.

    Epoch e uses perm = epoch_permutation(num_pairs, seed, e). Global batch k is the consecutive slice
    perm[k·G : (k+1)·G] (G = global_batch_size; a trailing partial batch is dropped). Rank r of W takes the
    contiguous sub-slice [r·G/W, (r+1)·G/W) of every global batch. So the set of pairs in a global batch
    depends only on (seed, epoch, k, G), never on the world size. Iterating yields this rank's indices for
    every global batch of the current epoch (`set_epoch`), batch after batch.
    """

    def __init__(
        self, num_pairs: int, global_batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
    ):
        if not (isinstance(world_size, int) and world_size > 0):
            raise ValueError(f"world_size: expected a positive integer, got {world_size!r}")
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank: expected an integer in [0, {world_size}), got {rank!r}")
        if (
            not (isinstance(global_batch_size, int) and global_batch_size > 0)
            or global_batch_size % world_size
        ):
            raise ValueError(
                f"global_batch_size: expected a positive multiple of world_size={world_size}, got {global_batch_size!r}"
            )
        if num_pairs < global_batch_size:
            raise ValueError(
                f"num_pairs: {num_pairs} pairs cannot fill one global batch of {global_batch_size}"
            )
        self.num_pairs, self.global_batch_size = num_pairs, global_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def batches_per_epoch(self) -> int:
        return self.num_pairs // self.global_batch_size

    def global_batch(self, epoch: int, k: int) -> list[int]:
        """Global batch k of an epoch (all ranks' pairs, in rank order)."""
        if not 0 <= k < self.batches_per_epoch:
            raise ValueError(f"global batch {k}: expected 0 <= k < {self.batches_per_epoch}")
        g = self.global_batch_size
        return list(_cached_permutation(self.num_pairs, self.seed, epoch)[k * g : (k + 1) * g])

    def rank_batch(self, epoch: int, k: int) -> list[int]:
        """This rank's share of global batch k."""
        per_rank = self.global_batch_size // self.world_size
        return self.global_batch(epoch, k)[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[int]:
        perm = _cached_permutation(self.num_pairs, self.seed, self.epoch)
        g, per_rank = self.global_batch_size, self.global_batch_size // self.world_size
        for k in range(self.batches_per_epoch):
            yield from perm[k * g + self.rank * per_rank : k * g + (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        return self.batches_per_epoch * (self.global_batch_size // self.world_size)
