"""Held-out preference accuracy: does the policy prefer each held-out pair's winner more than the reference
does? The implicit-reward (DPO logit) sign, averaged over fixed (noise, t) draws."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from videogpa.engine import distributed as D
from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.dpo_reference import rank_shard
from videogpa.engine.dpo_step import EVAL_SEED_OFFSET, LossSettings, Reference, dpo_forward, inputs_for_pairs
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.models.base import ModelAdapter


@torch.no_grad()
def heldout_accuracy(
    adapter: ModelAdapter,
    model: nn.Module,
    reference: Reference,
    dataset: PreferenceDataset,
    *,
    draws: int,
    batch_size: int,
    seed: int,
    loss: LossSettings,
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    """Collective: per pair the DPO logit summed over `draws` fixed draws (seeded by seed + EVAL_SEED_OFFSET);
    a pair counts 1 if it is > 0, ½ if exactly 0 (policy = reference), 0 otherwise."""
    n, seed = len(dataset), seed + EVAL_SEED_OFFSET
    logits = torch.zeros(n, dtype=torch.float64, device=device)
    for draw in range(draws):
        for idx, real in rank_shard(n, batch_size):
            inputs = inputs_for_pairs(adapter, dataset, idx, [draw] * len(idx), seed, device, dtype)
            out = dpo_forward(adapter, model, reference, inputs, loss)
            logits[idx[:real]] += out.logits[:real].double()
    D.sum_over_data_parallel(logits)
    return float(((logits > 0).double() + 0.5 * (logits == 0).double()).mean())


def accuracy_before(path: Path, resuming: bool, measure: Callable[[], float], logger) -> float:
    """The initial model's held-out accuracy: read back from `path` when resuming, else `measure()`d
    (collective), logged at step 0 and written by rank 0."""
    if resuming and path.is_file():
        return json.loads(path.read_text())["heldout_accuracy_before"]
    before = measure()
    logger.scalar("eval/heldout_accuracy", before, 0)
    if D.is_main():
        write_json_atomic(path, {"heldout_accuracy_before": before})
        print(f"held-out preference accuracy before training: {100 * before:.1f}%", flush=True)
    return before
