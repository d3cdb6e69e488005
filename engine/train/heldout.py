"""Held-out preference accuracy: does the policy prefer each held-out pair's winner more than the reference
does? The implicit-reward (DPO logit) sign, averaged over fixed (noise, t) draws."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train.dpo_step import (
    EVAL_SEED_OFFSET,
    LossSettings,
    Reference,
    dpo_forward,
    inputs_for_pairs,
)
from videogpa.engine.train.reference import rank_shard


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


HISTORY_FILE = "heldout_history.json"


class Evaluations:
    """What a run evaluates and when: held-out accuracy (`measure`, None without a held-out set) and the
    validation videos (`videos`: engine.validation.ValidationVideos, None when off) at step 0, every
    eval.every steps and at the end. Finished evaluations are kept in the run folder (heldout_history.json,
    validation/step_<n>/) and never redone by a resumed run; those after its checkpoint are dropped."""

    def __init__(
        self, cfg, out: Path, start_step: int, logger, measure: Callable[[], float] | None, videos, module
    ):
        self.every, self.max_steps, self.out, self.start_step = (
            cfg.eval.every,
            cfg.train.max_steps,
            out,
            start_step,
        )
        self.logger, self.measure, self.videos, self.module = logger, measure, videos, module
        path = out / HISTORY_FILE
        old = json.loads(path.read_text()) if start_step > 0 and path.is_file() else []
        self.history = [h for h in old if h["step"] <= start_step]  # every rank reads the same rows
        if D.is_main():
            write_json_atomic(path, self.history)
            if videos is not None:  # a fresh run (--overwrite) drops every validation of the old one
                videos.drop_steps_after(start_step if start_step > 0 else -1)
        D.barrier()

    def _record(self, step: int, accuracy: float) -> None:
        self.history = [*(h for h in self.history if h["step"] != step), {"step": step, "accuracy": accuracy}]
        if D.is_main():
            write_json_atomic(self.out / HISTORY_FILE, self.history)

    def _videos(self, step: int) -> None:
        if self.videos is not None:
            self.videos.run(step, self.module, self.logger)

    def before(self) -> float | None:
        """Collective: step 0 (the initial model); its accuracy is kept in eval_before.json across resumes."""
        before = None
        if self.measure is not None:
            before = accuracy_before(
                self.out / "eval_before.json", self.start_step > 0, self.measure, self.logger
            )
            if not any(h["step"] == 0 for h in self.history):
                self._record(0, before)
        self._videos(0)
        return before

    def after_step(self, step: int) -> None:
        """Collective: the evaluations due after optimizer step `step` (every eval.every steps, before the
        end)."""
        if not self.every or step % self.every or step >= self.max_steps:
            return
        if self.measure is not None and not any(h["step"] == step for h in self.history):
            accuracy = self.measure()
            self.logger.scalar("eval/heldout_accuracy", accuracy, step)
            self._record(step, accuracy)
            if D.is_main():
                print(f"held-out preference accuracy at step {step}: {100 * accuracy:.1f}%", flush=True)
        self._videos(step)

    def final(self) -> float | None:
        """Collective: the end of training; returns the final held-out accuracy (None without a held-out
        set)."""
        after = None
        if self.measure is not None:
            after = self.measure()
            self.logger.scalar("eval/heldout_accuracy", after, self.max_steps)
            self._record(self.max_steps, after)
        self._videos(self.max_steps)
        return after
