"""The DPO reference model's strategies: adapters_off, separate, precomputed.

Each strategy is a callable StepInputs -> (ref_pred, None) or (None, ref_err [2P]) (see dpo_step.Reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.lora import adapters_disabled
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train.dpo_step import EVAL_SEED_OFFSET, StepInputs
from videogpa.kernels.dpo_loss import per_sample_mse


class AdaptersOff:
    """LoRA: the reference is the policy itself with its adapters disabled (no grad, no extra memory)."""

    def __init__(self, adapter: ModelAdapter, model: nn.Module):
        self.adapter, self.model = adapter, model

    def __call__(self, s: StepInputs) -> tuple[torch.Tensor, None]:
        with torch.no_grad(), adapters_disabled(self.model):
            return self.adapter.predict(self.model, s.noisy, s.timesteps, s.cond), None


class Separate:
    """`separate`: a model used as is under no grad, the frozen copy (a ZeRO-3 inference engine), or the
    policy itself before its first update (the source of a precomputed table for full fine-tuning)."""

    def __init__(self, adapter: ModelAdapter, model: nn.Module):
        self.adapter, self.model = adapter, model

    def __call__(self, s: StepInputs) -> tuple[torch.Tensor, None]:
        with torch.no_grad():
            return self.adapter.predict(self.model, s.noisy, s.timesteps, s.cond), None


class Precomputed:
    """Reference errors looked up in a table [pairs, draws, 2] (winner, loser); no forward at all."""

    def __init__(self, table: torch.Tensor):
        if table.ndim != 3 or table.shape[2] != 2:
            raise ValueError(
                f"precomputed reference table must be [pairs, draws, 2], got {tuple(table.shape)}"
            )
        self.table = table

    def __call__(self, s: StepInputs) -> tuple[None, torch.Tensor]:
        pairs, draws = s.pair_index.long(), s.draw.long()
        if int(draws.max()) >= self.table.shape[1] or int(pairs.max()) >= self.table.shape[0]:
            raise ValueError(
                f"precomputed reference table {tuple(self.table.shape)} has no entry for pairs "
                f"{pairs.tolist()} draws {draws.tolist()} (was it computed for fewer steps or pairs?)"
            )
        errs = self.table[pairs, draws]  # [P, 2]
        return None, torch.cat([errs[:, 0], errs[:, 1]]).to(s.target.device)


def reference_errors(reference: Callable, s: StepInputs) -> torch.Tensor:
    """Per-sample reference errors [2P] (fp32) for the step inputs."""
    pred, err = reference(s)
    return err if err is not None else per_sample_mse(pred, s.target, s.mask)


def rank_shard(n: int, chunk: int) -> Iterable[tuple[list[int], int]]:
    """This rank's share of range(n) in chunks; every rank gets the same number of chunks (collective
    forwards under ZeRO-3 need that), padding with index n-1 and reporting how many entries are real. The
    ranks of a sequence-parallel group share one share."""
    world, rank = D.data_parallel_size(), D.data_parallel_rank()
    per_rank = math.ceil(n / world)
    start = rank * per_rank
    for lo in range(start, start + per_rank, chunk):
        hi = min(lo + chunk, start + per_rank)
        idx = list(range(lo, hi))
        real = sum(i < n for i in idx)
        yield [min(i, n - 1) for i in idx], real


def compute_table(
    num_pairs: int,
    num_draws: int,
    chunk: int,
    make_inputs: Callable[[list[int], int], StepInputs],
    reference: Callable,
    device: torch.device,
) -> torch.Tensor:
    """Collective: reference errors for every (pair, draw), sharded over ranks; returns [pairs, draws, 2]."""
    table = torch.zeros(num_pairs, num_draws, 2, dtype=torch.float32, device=device)
    for draw in range(num_draws):
        for idx, real in rank_shard(num_pairs, chunk):
            err = reference_errors(reference, make_inputs(idx, draw)).float()
            p = len(idx)
            table[idx[:real], draw, 0] = err[:p][:real]
            table[idx[:real], draw, 1] = err[p:][:real]
    return D.sum_over_data_parallel(table).cpu()


def save_table(table: torch.Tensor, path: str | Path, meta: dict[str, str]) -> None:
    """Atomically write a reference table (safetensors, with the metadata that identifies it)."""
    with atomic_path(path) as tmp:
        save_file({"ref_err": table.contiguous()}, str(tmp), metadata=meta)


def load_table(path: str | Path, meta: dict[str, str]) -> torch.Tensor | None:
    """The stored table if it exists and was computed for the same metadata, else None."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        if f.metadata() != meta:
            return None
    return load_file(str(path))["ref_err"]


def online_reference(adapter: ModelAdapter, policy: nn.Module, frozen: nn.Module | None, lora: bool):
    """The reference as a forward pass: the policy with its adapters off (LoRA), the frozen copy
    (`separate`), or, before any update, the policy itself (the source of a precomputed table)."""
    if lora and frozen is None:
        return AdaptersOff(adapter, policy)
    return Separate(adapter, frozen if frozen is not None else policy)


def precomputed_reference(
    path: Path, meta: dict[str, str], compute: Callable[[], torch.Tensor], resuming: bool
) -> Precomputed:
    """The stored table at `path` if it was computed for `meta`; otherwise computed now (collective: every
    rank calls `compute`) and written by rank 0. A resumed run never recomputes it (the policy has moved)."""
    table = load_table(path, meta)
    if table is None:
        if resuming:
            raise ValueError(f"resuming a precomputed-reference run needs {path} (missing or stale)")
        table = compute()
        if D.is_main():
            save_table(table, path, meta)
        D.barrier()
    return Precomputed(table)


def split_reference(
    cfg,
    adapter: ModelAdapter,
    engine,
    frozen,
    dataset,
    train: bool,
    make_inputs,
    batches_per_epoch: int,
    out_dir: Path,
    resuming: bool,
    device: torch.device,
):
    """The configured reference (dpo.reference) for the training or the held-out split. `precomputed` tables
    are keyed by seed, pairs, draws and model: training uses one draw per epoch (or the noise cycle), held-out
    evaluation eval.draws, at its own seed offset. make_inputs(idx, draws, seed) gives StepInputs."""
    lora = cfg.lora.enabled
    online = online_reference(adapter, engine.module if lora else engine, frozen, lora)
    if cfg.dpo.reference != "precomputed":
        return online
    seed = cfg.seed if train else cfg.seed + EVAL_SEED_OFFSET
    epochs = math.ceil(cfg.train.max_steps / batches_per_epoch)
    draws = min(epochs, cfg.dpo.noise_cycle or epochs) if train else cfg.eval.draws
    meta = {"seed": str(seed), "pairs": str(len(dataset)), "draws": str(draws), "model": cfg.model.name}
    name = "reference_errors.safetensors" if train else "reference_errors_heldout.safetensors"

    def compute() -> torch.Tensor:
        make = lambda idx, draw: make_inputs(idx, [draw] * len(idx), seed)
        engine.eval()
        table = compute_table(len(dataset), draws, cfg.eval.batch_size, make, online, device)
        engine.train()
        return table

    return precomputed_reference(out_dir / name, meta, compute, resuming)
