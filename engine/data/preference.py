"""Preference shards: the model-family-agnostic training set of Diffusion-DPO (winner/loser latent pairs).

On disk, a folder holds:
  index.jsonl                one JSON object per pair, line i describing the pair with integer index i:
                             {"index", "pair_id", "shard", "score_w", "score_l", "has_image"}
  shard-00000.safetensors    the tensors of up to `shard_size` pairs, keys "<index>/<name>" with name in
  shard-00001.safetensors    latents_w, latents_l ([F, C, H, W] or [C, F, H, W]: the model's native layout,
  ...                        same shape), text_embeds [L, D], and optionally image_latents (4-D, native)
                             and image_embeds [N, D] (CLIP image-encoder states, Wan 2.1 I2V; index rows
                             with them say "has_image_embeds": true).
Every file is written to a temporary name and renamed, and the index is written last (on close), so a
folder with an index is always complete. Each index row also carries "shard_sha256", the SHA-256 of its
shard as written; opening a set re-hashes every shard and names one that changed since (bit rot, a partial
copy). Indexes written before checksums existed still load, unverified.

Checking a whole set against a model before training, from the shard headers only (no tensor is read):
`check_preference_set(dataset, latent_shape=..., text_dim=...)`.

Reading: `PreferenceDataset(path)[i]` -> `PreferencePair`; `collate_pairs(list)` -> `PreferenceBatch`.
Sampling: `PreferenceSampler` (see its docstring for the order across epochs, batches and ranks).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.io.records import numbered_jsonl, write_jsonl_atomic
from videogpa.engine.types import Conditioning

INDEX_NAME = "index.jsonl"
SHARD_NAME = "shard-{:05d}.safetensors"
TENSOR_NAMES = ("latents_w", "latents_l", "text_embeds", "image_latents", "image_embeds")
RECORD_FIELDS = {
    "index": int,
    "pair_id": str,
    "shard": str,
    "score_w": float,
    "score_l": float,
    "has_image": bool,
}
CHECKSUM_FIELD = "shard_sha256"  # optional (indexes written before it existed have none)
IMAGE_EMBEDS_FIELD = "has_image_embeds"  # optional, true where the pair stores image_embeds
OPTIONAL_FIELDS = {CHECKSUM_FIELD, IMAGE_EMBEDS_FIELD}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors header dtype names of floating-point tensors


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
    image_embeds: torch.Tensor | None = None


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
    if tensors.get("image_embeds") is not None:
        _check_tensor(where, "image_embeds", tensors["image_embeds"], 2)


def _check_score(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write a safetensors file atomically and durably; returns its SHA-256 (hex)."""
    data = save(tensors)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        image_embeds: torch.Tensor | None = None,
    ) -> int:
        """Append one pair (single sample, no batch dim); returns its integer index."""
        if self._closed:
            raise ValueError("PreferenceShardWriter.add: the writer is closed")
        if not isinstance(pair_id, str) or not pair_id:
            raise ValueError(f"pair_id: expected a non-empty string, got {pair_id!r}")
        if pair_id in self._ids:
            raise ValueError(f"pair_id {pair_id!r} was already added")
        tensors = {"latents_w": latents_w, "latents_l": latents_l, "text_embeds": text_embeds}
        tensors["image_latents"], tensors["image_embeds"] = image_latents, image_embeds
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
        if image_embeds is not None:
            record[IMAGE_EMBEDS_FIELD] = True
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
            digest = _atomic_save(self._pending, self.out_dir / self.records[-1]["shard"])
            for record in self.records[-self._pending_count :]:
                record[CHECKSUM_FIELD] = digest
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
    unknown = sorted(set(record) - set(RECORD_FIELDS) - OPTIONAL_FIELDS)
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {unknown} (expected {sorted(RECORD_FIELDS)} and optionally "
            f"{sorted(OPTIONAL_FIELDS)})"
        )
    if not isinstance(record.get(IMAGE_EMBEDS_FIELD, False), bool):
        raise ValueError(
            f"{where}: field {IMAGE_EMBEDS_FIELD!r} must be a bool, got {record[IMAGE_EMBEDS_FIELD]!r}"
        )
    digest = record.get(CHECKSUM_FIELD)
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    ):
        raise ValueError(f"{where}: field {CHECKSUM_FIELD!r} must be a SHA-256 hex digest, got {digest!r}")
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


@dataclass(frozen=True)
class TensorInfo:
    """A stored tensor's shape and safetensors dtype name ("F32", "BF16", ...), from its shard's header."""

    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{list(self.shape)} {self.dtype}"


def read_shard_header(path: Path) -> dict[str, TensorInfo]:
    """Every tensor of a safetensors shard by key, from its header only (no tensor data is read)."""
    try:
        with safe_open(str(path), "pt") as f:
            return {
                k: TensorInfo(tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"preference shard {str(path)!r} is not a readable safetensors file: {err}") from err


def _pair_where(path: Path, record: dict) -> str:
    """How errors name one pair: its shard, integer index and pair_id."""
    return f"preference shard {str(path)!r}, pair {record['index']} (pair_id {record['pair_id']!r})"


def _tensor_names(record: dict) -> tuple[str, ...]:
    optional = {"image_latents": record["has_image"], "image_embeds": record.get(IMAGE_EMBEDS_FIELD, False)}
    return tuple(name for name in TENSOR_NAMES if optional.get(name, True))


def _verify_checksum(path: Path, records: list[dict]) -> None:
    """The shard's bytes hash to the SHA-256 its index rows give (rows without one: not verified)."""
    digests = {r.get(CHECKSUM_FIELD) for r in records}
    if digests == {None}:
        return
    if len(digests) > 1:
        raise ValueError(
            f"{INDEX_NAME}: the rows of preference shard {str(path)!r} (pair_id {records[0]['pair_id']!r}, "
            f"...) give different {CHECKSUM_FIELD} values; expected one per shard"
        )
    (expected,) = digests
    actual = file_sha256(path)
    if actual != expected:
        ids = [r["pair_id"] for r in records]
        listed = ", ".join(repr(i) for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        raise ValueError(
            f"preference shard {str(path)!r} (pairs {listed}) has SHA-256 {actual}, but {INDEX_NAME} "
            f"recorded {expected} when it was written: the file changed since (bit rot, a partial copy, "
            "an overwrite)"
        )


class PreferenceDataset(torch.utils.data.Dataset):
    """The pairs of a preference-shard folder. On open the index is validated, every shard with recorded
    checksums is re-hashed (verify_checksums=False skips that) and its header checked; tensors are read
    lazily (and checked for shape, dtype and NaN) per item. Every error names the shard and the pair_id."""

    def __init__(self, path: str | Path, verify_checksums: bool = True):
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
        self.headers: dict[str, dict[str, TensorInfo]] = {}  # shard name -> its header
        self._check_shards(verify_checksums)

    def _check_shards(self, verify_checksums: bool) -> None:
        by_shard: dict[str, list[dict]] = {}
        for record in self.records:
            by_shard.setdefault(record["shard"], []).append(record)
        for shard, records in by_shard.items():
            path = self.root / shard
            if not path.is_file():
                raise ValueError(
                    f"preference shard {str(path)!r} listed in {INDEX_NAME} (pair_id "
                    f"{records[0]['pair_id']!r}, ...) does not exist"
                )
            if verify_checksums:
                _verify_checksum(path, records)
            header = self.headers[shard] = read_shard_header(path)
            for record in records:
                i = record["index"]
                for name in _tensor_names(record):
                    if f"{i}/{name}" not in header:
                        raise ValueError(f"{_pair_where(path, record)}: missing key {i}/{name}")
                w, lo = header[f"{i}/latents_w"].shape, header[f"{i}/latents_l"].shape
                if w != lo:
                    raise ValueError(
                        f"{_pair_where(path, record)}: key {i}/latents_w has shape {list(w)} but "
                        f"{i}/latents_l has {list(lo)}; expected the same shape"
                    )

    def tensor_info(self, i: int) -> dict[str, TensorInfo]:
        """Pair i's stored tensors (latents_w, latents_l, text_embeds[, image_latents][, image_embeds]), from
        the header read on open."""
        record = self.records[i]
        header = self.headers[record["shard"]]
        return {name: header[f"{i}/{name}"] for name in _tensor_names(record)}

    def __len__(self) -> int:
        return len(self.records)

    def describe_pair(self, i: int) -> str:
        """How messages name pair i: its shard, index and pair_id."""
        record = self.records[i]
        return _pair_where(self.root / record["shard"], record)

    def __getitem__(self, i: int) -> PreferencePair:
        if not 0 <= i < len(self.records):
            raise IndexError(
                f"pair index {i} out of range for {len(self.records)} pairs in {str(self.root)!r}"
            )
        record = self.records[i]
        path = self.root / record["shard"]
        try:
            with safe_open(str(path), "pt") as f:
                tensors = {name: f.get_tensor(f"{i}/{name}") for name in _tensor_names(record)}
        except Exception as err:
            raise ValueError(f"{_pair_where(path, record)}: could not read it: {err}") from err
        tensors.setdefault("image_latents", None)
        tensors.setdefault("image_embeds", None)
        check_pair_tensors(f"{_pair_where(path, record)}, keys '{i}/...'", tensors)
        return PreferencePair(
            index=i,
            pair_id=record["pair_id"],
            score_w=record["score_w"],
            score_l=record["score_l"],
            **tensors,
        )


@dataclass(frozen=True)
class PreferenceLayout:
    """What every pair of a checked set has in common (check_preference_set): one sample's shapes, native
    layout, and the safetensors dtype names."""

    latent_shape: tuple[int, ...]
    latent_dtype: str
    text_shape: tuple[int, int]  # (L, D)
    text_dtype: str
    image_shape: tuple[int, ...] | None  # None: no pair has image latents
    num_pairs: int
    image_embeds_shape: tuple[int, int] | None = None  # None: no pair has image embeddings


_NDIM = {"latents_w": 4, "latents_l": 4, "text_embeds": 2, "image_latents": 4, "image_embeds": 2}


def _check_pair_layout(where: str, info: dict[str, TensorInfo]) -> None:
    """One pair's header entries: floating dtypes, the expected number of dims, winner and loser alike."""
    for name, tensor in info.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{where}: {name!r} has dtype {tensor.dtype}; expected one of {FLOAT_DTYPES}")
        if len(tensor.shape) != _NDIM[name]:
            raise ValueError(f"{where}: {name!r} has shape {list(tensor.shape)}; expected {_NDIM[name]}-D")
    if info["latents_w"] != info["latents_l"]:
        raise ValueError(
            f"{where}: 'latents_w' is {info['latents_w']} but 'latents_l' is {info['latents_l']}; expected "
            "the same shape and dtype"
        )


def _check_against_model(
    where: str,
    info: dict[str, TensorInfo],
    latent_shape,
    text_length: int | None,
    text_dim: int | None,
    expected_by: str = "the model",
) -> None:
    """One pair's shapes against the model's (or, per `expected_by`, another set's): latent_shape (one sample,
    native layout), text L and D."""
    latents, (length, dim) = info["latents_w"].shape, info["text_embeds"].shape
    if latent_shape is not None and latents != tuple(latent_shape):
        raise ValueError(
            f"{where}: latents have shape {list(latents)}, but {expected_by} expects {list(latent_shape)}"
        )
    if text_dim is not None and dim != text_dim:
        raise ValueError(f"{where}: text_embeds have dimension {dim}, but {expected_by} expects {text_dim}")
    if text_length is not None and length != text_length:
        raise ValueError(
            f"{where}: text_embeds have {length} tokens, but {expected_by} expects {text_length}"
        )


def check_preference_set(
    dataset: PreferenceDataset | str | Path,
    latent_shape: Sequence[int] | None = None,
    text_dim: int | None = None,
    text_length: int | None = None,
    where: str = "preference set",
    expected_by: str = "the model",
) -> PreferenceLayout:
    """Check a whole preference set before training, from its shard headers only (no tensor is read):
    every pair's latents (winner, loser), text embeddings and image latents have a floating dtype, the
    expected number of dims, and the same shapes and dtypes as the first pair; image latents are on every
    pair or none; and, when given, the latents are `latent_shape` (one sample, the model's native layout,
    e.g. the adapter's latent shape), the text embeddings have `text_dim` features and `text_length` tokens.

    `dataset` is an open PreferenceDataset or its folder (opened here, checksums verified). `where` prefixes
    every message (e.g. the config key, "data.train"); `expected_by` says whose shapes were given (the model,
    or another set's: the held-out set is checked against the training set's). Raises a one-line ValueError
    naming the shard, the pair's index and pair_id, what it has and what was expected; returns the set's
    PreferenceLayout. Non-finite values are found when a pair is read (PreferenceDataset.__getitem__)."""
    if not isinstance(dataset, PreferenceDataset):
        dataset = PreferenceDataset(dataset)
    if len(dataset) == 0:
        raise ValueError(f"{where}: preference set {str(dataset.root)!r} holds no pairs")
    first, first_info = dataset.records[0], dataset.tensor_info(0)
    for i, record in enumerate(dataset.records):
        info = dataset.tensor_info(i)
        pair = f"{where}: {_pair_where(dataset.root / record['shard'], record)}"
        _check_pair_layout(pair, info)
        _check_against_model(pair, info, latent_shape, text_length, text_dim, expected_by)
        for name in TENSOR_NAMES:
            if info.get(name) != first_info.get(name):  # shape, dtype, or present in only one
                raise ValueError(
                    f"{pair}: {name!r} is {info.get(name, 'absent')}, but in pair 0 (pair_id "
                    f"{first['pair_id']!r}, {first['shard']}) it is {first_info.get(name, 'absent')}; "
                    "expected the same in every pair"
                )
    image = first_info.get("image_latents")
    return PreferenceLayout(
        latent_shape=first_info["latents_w"].shape,
        latent_dtype=first_info["latents_w"].dtype,
        text_shape=first_info["text_embeds"].shape,
        text_dtype=first_info["text_embeds"].dtype,
        image_shape=image.shape if image is not None else None,
        image_embeds_shape=embeds.shape if (embeds := first_info.get("image_embeds")) is not None else None,
        num_pairs=len(dataset),
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
    optional = {}
    for name in ("image_latents", "image_embeds"):
        present = {getattr(p, name) is not None for p in pairs}
        if len(present) != 1:
            raise ValueError(f"collate_pairs: some pairs have {name} and some do not")
        optional[name] = _stack(pairs, name) if present == {True} else None
    return PreferenceBatch(
        latents_w=_stack(pairs, "latents_w"),
        latents_l=_stack(pairs, "latents_l"),
        cond=Conditioning(_stack(pairs, "text_embeds"), **optional),
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
                f"global_batch_size: expected a positive multiple of world_size={world_size}, "
                f"got {global_batch_size!r}"
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
