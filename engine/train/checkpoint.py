"""Atomic, verified, resumable checkpoints: DeepSpeed engine state plus RNG states and the trainer position.

Layout: <output_dir>/checkpoints/step_00000010/{state/ (DeepSpeed's files), rng_rank<r>.safetensors,
trainer.json, config.json, manifest.json}. Every rank writes into a hidden temporary folder; rank 0 renames
it into place once all ranks are done, so a folder named step_* is always complete. Only the newest `keep`
checkpoints are kept.

A checkpoint folder is data, never code: everything this project writes is safetensors or JSON (loaded
without unpickling), and DeepSpeed's own pickled states are unpickled with weights_only=True and an allow-list
of the three DeepSpeed types they hold (engine.checkpoint_files), so even a planted file whose hash was
written into the manifest runs nothing. The SHA-256s in manifest.json are the integrity check: each rank
hashes and verifies the files it owns before choosing a checkpoint, and every file is hashed again from the
very bytes that are then parsed (a file swapped after the check is refused, never loaded unchecked). Resuming
takes the newest intact checkpoint and says which newer ones it passed over and why.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from videogpa.engine.io.atomic import commit, write_atomic
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train.checkpoint_files import MANIFEST, VerifiedFiles, naming_saves, verified_loads

DIR_NAME = "checkpoints"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
ENGINE_TAG = "state"
_RANK_OF = re.compile(r"(?:zero_pp_rank_|rng_rank)(\d+)")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / DIR_NAME


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders (complete unless damaged since), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(rf"{PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------- RNG states
def rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's Python, NumPy, torch (and CUDA) generator states as tensors + JSON metadata."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "python": torch.tensor(mt, dtype=torch.int64),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        tensors.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"python": json.dumps([version, gauss]), "numpy": json.dumps([kind, pos, has_gauss, cached])}
    return tensors, meta


def set_rng_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    version, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    kind, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _save_rng(path: Path) -> None:
    tensors, meta = rng_tensors()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _parse_rng(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of an RNG state file's (already verified) bytes."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        tensors = load(data)
        if not {"python", "numpy", "torch"} <= set(tensors) or not {"python", "numpy"} <= set(meta):
            raise KeyError("python, numpy and torch states expected")
    except (SafetensorError, struct.error, KeyError, ValueError, AttributeError) as err:
        raise ValueError(f"checkpoint RNG state {path}: not a valid safetensors RNG file ({err})") from None
    return tensors, meta


def _set_rng(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    try:
        set_rng_tensors(tensors, meta)
    except (KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint RNG state {path}: not a valid RNG state ({err})") from None


# ------------------------------------------------------------------------------------------- manifest
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _owner(relative: str) -> int:
    """The rank that hashes and verifies a file: the one named in it, else rank 0."""
    match = _RANK_OF.search(relative)
    return int(match.group(1)) if match else 0


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _hash_mine(folder: Path) -> dict[str, str]:
    rank, world = D.rank(), D.world_size()
    return {f: sha256(folder / f) for f in _files(folder) if _owner(f) % world == rank}


def damage(folder: Path) -> str | None:
    """Collective: why the checkpoint folder cannot be loaded (missing manifest, a missing, extra or changed
    file), or None when every file is intact. Each rank checks the files it owns; all ranks get the
    verdict."""
    reason = None
    manifest = folder / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        recorded, reason = None, f"no readable {MANIFEST} ({type(err).__name__})"
    if recorded is not None:
        rank, world = D.rank(), D.world_size()
        present = set(_files(folder))
        for name in sorted(set(recorded) | present):
            if _owner(name) % world != rank:
                continue
            if name not in present:
                reason = f"{folder / name} is missing"
            elif name not in recorded:
                reason = f"{folder / name} is not in its {MANIFEST} (planted or left over)"
            elif sha256(folder / name) != recorded[name]:
                reason = f"{folder / name} differs from the SHA-256 recorded when it was written"
            if reason:
                break
    return D.first_message(reason)


# ------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    engine, output_dir: str | Path, step: int, trainer_state: dict, config: dict, keep: int
) -> Path:
    """Collective: write the checkpoint for `step` atomically (a full disk or a read-only folder is a
    ValueError naming the path; the previous checkpoints stay intact) and prune to the newest `keep`."""
    root = checkpoint_root(output_dir)
    name = f"{PREFIX}{step:08d}"
    tmp, final = root / f"{TMP_PREFIX}{name}", root / name
    writing = tmp  # what is being written, for the error (DeepSpeed's files: the folder, unless torch.save's)
    try:
        if D.is_main():
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a run killed while saving
                shutil.rmtree(stale)
            tmp.mkdir()
        D.barrier()
        with naming_saves(engine):
            engine.save_checkpoint(str(tmp), tag=ENGINE_TAG, save_latest=False)
        writing = tmp / f"rng_rank{D.rank()}.safetensors"
        _save_rng(writing)
        if D.is_main():
            writing = tmp / "trainer.json"
            write_atomic(writing, json.dumps({"step": step, **trainer_state}, indent=1))
            writing = tmp / "config.json"
            write_atomic(writing, json.dumps(config, indent=1, sort_keys=True))
        D.barrier()
        hashes = D.gather_dicts(_hash_mine(tmp))
        if D.is_main():
            writing = tmp / MANIFEST
            write_atomic(writing, json.dumps({"files": hashes, "world_size": D.world_size()}, indent=1))
            if final.exists():  # a previous run reached the same step: replace it
                shutil.rmtree(final)
            commit(tmp, final)
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    except (OSError, SafetensorError) as err:  # a full disk, a read-only folder (torch.save's: naming_saves)
        if D.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        where = getattr(err, "filename", None) or writing
        raise ValueError(
            f"could not write checkpoint {where}: {getattr(err, 'strerror', None) or err}"
        ) from None
    D.barrier()
    return final


def read_trainer_state(path: Path) -> dict:
    """trainer.json and config.json of a checkpoint (JSON only)."""
    try:
        state = json.loads((path / "trainer.json").read_text())
        state["config"] = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"checkpoint folder {str(path)!r} is missing or incomplete ({err})") from None
    return state


def newest_intact(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """Collective: the newest checkpoint whose files all verify, and one line per newer one passed over."""
    passed = []
    for path in reversed(list_checkpoints(output_dir)):
        reason = damage(path)
        if reason is None:
            return path, passed
        passed.append(f"{path.name}: {reason}")
    return None, passed


@dataclass
class ReadCheckpoint:
    """A checkpoint read and checked before any model exists (read_checkpoint); restore() applies it."""

    path: Path
    files: VerifiedFiles
    state: dict  # trainer.json, with config.json under "config"
    rng: tuple[dict[str, torch.Tensor], dict[str, str]]
    preloaded: dict[str, object]  # DeepSpeed's states this rank owns, parsed (as data) from verified bytes


def read_checkpoint(path: str | Path, verified: bool = False) -> ReadCheckpoint:
    """Collective: verify (unless `verified`: newest_intact just did) and read a checkpoint: its trainer
    state, this rank's RNG, and the DeepSpeed states this rank owns, each file read once, hashed and parsed
    from the same bytes (DeepSpeed's unpickled with an allow-list, engine.checkpoint_files). A refused file is
    the same one-line ValueError, naming it, on every rank."""
    path = Path(path)
    reason = None if verified else damage(path)
    if reason is not None:
        raise ValueError(f"checkpoint {path} is damaged, not loaded: {reason}")
    error, read = None, None
    try:
        files = VerifiedFiles(path)
        check_world_size(path, files.world_size)
        rng_name = f"rng_rank{D.rank()}.safetensors"
        state = files.json("trainer.json")
        state["config"] = files.json("config.json")
        rng = _parse_rng(files.read(rng_name), path / rng_name)
        rank, world = D.rank(), D.world_size()
        preloaded = {
            name: files.torch_state(name, map_location="cpu")
            for name in sorted(files.recorded)
            if name.startswith(f"{ENGINE_TAG}/") and name.endswith(".pt") and _owner(name) % world == rank
        }
        read = ReadCheckpoint(path, files, state, rng, preloaded)
    except ValueError as err:
        error = err
    D.raise_together(error)
    return read


def restore(engine, read: ReadCheckpoint) -> dict:
    """Collective: restore engine, optimizer, scheduler and this rank's RNG from a read checkpoint (DeepSpeed
    loads every state through engine.checkpoint_files.VerifiedCheckpointEngine); returns its trainer state."""
    with verified_loads(engine, read.files, read.preloaded):
        loaded, _ = engine.load_checkpoint(
            str(read.path), tag=ENGINE_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    read.preloaded.clear()
    if loaded is None:
        raise ValueError(f"checkpoint {str(read.path)!r}: DeepSpeed could not load {read.path / ENGINE_TAG}")
    _set_rng(*read.rng, read.path / f"rng_rank{D.rank()}.safetensors")
    return read.state


def load_checkpoint(engine, path: str | Path, verified: bool = False) -> dict:
    """Collective: read_checkpoint, then restore into `engine`; returns trainer.json (config under
    "config")."""
    return restore(engine, read_checkpoint(path, verified))


def check_world_size(path: Path, written_by: object) -> None:
    """A checkpoint loads only into as many ranks as wrote it (ZeRO partitions its states by rank); every
    rank reads the same manifest, so every rank gives the same verdict."""
    if isinstance(written_by, int) and written_by != D.world_size():
        raise ValueError(
            f"checkpoint {path} was written by {written_by} rank(s) and this run has {D.world_size()}: "
            "ZeRO's partitioned states load only into the same number of ranks (resume with that many)"
        )


def clear_run_files(output_dir: str | Path) -> None:
    """A fresh run in a used folder (--overwrite): drop the old run's checkpoints and results (rank 0
    only)."""
    out = Path(output_dir)
    shutil.rmtree(checkpoint_root(out), ignore_errors=True)
    for name in (*RUN_RESULTS, *RUN_EXPORTS):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)


# what a finished or started run leaves besides its checkpoints (a fresh run refuses to mix with them)
RUN_RESULTS = ("metrics.jsonl", "eval.json", "eval_before.json", "pytorch_lora_weights.safetensors")
# the other final weights a run may have exported (engine.exports; full fine-tuning's transformer/)
RUN_EXPORTS = ("comfyui_lora.safetensors", "transformer_merged", "transformer_merged.json", "transformer")


def previous_run(output_dir: str | Path) -> str | None:
    """What of another run the folder holds (checkpoints or results), or None."""
    out = Path(output_dir)
    if list_checkpoints(out):
        return f"checkpoints in {checkpoint_root(out)}"
    found = [name for name in RUN_RESULTS if (out / name).exists()]
    return f"{', '.join(found)} in {out}" if found else None
