"""Atomic, resumable checkpoints: DeepSpeed engine state plus RNG states and trainer position.

Layout: <output_dir>/checkpoints/step_00000010/{state/ (DeepSpeed's files), rng_rank0.pt, trainer.json}.
Every rank writes into a hidden temporary folder; rank 0 renames it into place once all ranks are done,
so a folder named step_* is always complete. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from videogpa.engine import distributed as D
from videogpa.engine.io.atomic import commit

DIR_NAME = "checkpoints"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"
ENGINE_TAG = "state"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / DIR_NAME


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(engine, output_dir: str | Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Collective: write the checkpoint for `step` atomically and prune to the newest `keep`."""
    root = checkpoint_root(output_dir)
    name = f"{PREFIX}{step:08d}"
    tmp, final = root / f"{TMP_PREFIX}{name}", root / name
    if D.is_main():
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a run killed while saving
            shutil.rmtree(stale)
        tmp.mkdir()
    D.barrier()
    engine.save_checkpoint(str(tmp), tag=ENGINE_TAG, save_latest=False)
    torch.save(rng_state(), tmp / f"rng_rank{D.rank()}.pt")
    D.barrier()
    if D.is_main():
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **trainer_state}, indent=1))
        if final.exists():  # a previous run reached the same step: replace it
            shutil.rmtree(final)
        commit(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    D.barrier()
    return final


def load_checkpoint(engine, path: str | Path) -> dict:
    """Collective: restore engine, optimizer, scheduler and this rank's RNG; returns trainer.json."""
    path = Path(path)
    meta = path / "trainer.json"
    if not meta.is_file():
        raise ValueError(f"checkpoint folder {str(path)!r} is missing or incomplete (no trainer.json)")
    rng = path / f"rng_rank{D.rank()}.pt"
    if not rng.is_file():
        raise ValueError(
            f"checkpoint {str(path)!r} has no {rng.name}: it was written by fewer ranks than this run has"
        )
    loaded, _ = engine.load_checkpoint(
        str(path), tag=ENGINE_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if loaded is None:
        raise ValueError(f"checkpoint {str(path)!r}: DeepSpeed could not load {path / ENGINE_TAG}")
    set_rng_state(torch.load(rng, weights_only=False))
    return json.loads(meta.read_text())


def clear_run_files(output_dir: str | Path) -> None:
    """A fresh run in a used folder: drop the old checkpoints (rank 0 only)."""
    shutil.rmtree(checkpoint_root(output_dir), ignore_errors=True)
