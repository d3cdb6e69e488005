"""Small configs for trainer tests (the tiny model on a small synthetic set)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import config_from_dict

os.environ.setdefault("DS_ACCELERATOR", "cpu")

BASE = {
    "seed": 0,
    "model": {"name": "tiny"},
    "lora": {"rank": 4, "alpha": 8},
    "dpo": {"beta": 500.0},
    "data": {"synthetic": {"train_pairs": 16, "heldout_pairs": 8}},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "train": {
        "max_steps": 6,
        "micro_batch_size": 2,
        "global_batch_size": 4,
        "precision": "fp32",
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "progress_bar": False,
        "log_every": 100,
    },
    "eval": {"draws": 1, "batch_size": 8, "plot": False},
}


def tiny_config(out: str | Path, **sections) -> Config:
    """BASE with some sections' keys (or top-level values) replaced, writing to `out`."""
    data = copy.deepcopy(BASE)
    data["output_dir"] = str(out)
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return config_from_dict(data)


def losses(records: list[dict]) -> list[float | None]:
    return [r["loss"] for r in records]
