"""The DPO reference model's strategies: adapters_off, separate, precomputed (build_reference chooses).

Each strategy is a callable StepInputs -> (ref_pred, None) or (None, ref_err [2P]) (see dpo_step.Reference).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from videogpa.engine.core.config import Config
from videogpa.engine.data.preference import PreferenceDataset
from videogpa.engine.io.atomic import atomic_path
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.lora import adapters_disabled
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train.dpo_step import EVAL_SEED_OFFSET, StepInputs, inputs_for_pairs
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
    """Reference errors looked up in a table [pairs, draws, 2] (winner, loser); no forward at all. `sha256`:
    the table file's, recorded in every checkpoint so that a resumed run verifies it."""

    def __init__(self, table: torch.Tensor, sha256: str | None = None):
        if table.ndim != 3 or table.shape[2] != 2:
            raise ValueError(
                f"precomputed reference table must be [pairs, draws, 2], got {tuple(table.shape)}"
            )
        self.table, self.sha256 = table, sha256

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


def save_table(table: torch.Tensor, path: str | Path, meta: dict[str, str]) -> str:
    """Atomically write a reference table (safetensors, with the metadata that identifies it); returns the
    file's SHA-256."""
    data = save({"ref_err": table.contiguous()}, metadata=meta)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _table_meta(data: bytes) -> dict[str, str]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def load_table(path: str | Path) -> tuple[torch.Tensor, dict[str, str], str] | None:
    """(the stored table, its metadata, its file's SHA-256), or None when there is no file; the bytes are
    read once, hashed and parsed. A damaged file is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        meta = _table_meta(data)
        table = load(data)["ref_err"]
    except (OSError, SafetensorError, struct.error, ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"precomputed reference table {path}: not a readable table ({err})") from None
    return table, meta, hashlib.sha256(data).hexdigest()


def check_table(
    table: torch.Tensor, path: Path, pairs: int, draws: int, name_pair: Callable[[int], str]
) -> None:
    """A table's shape [pairs, draws, 2], dtype float32 and finiteness; a ValueError naming the table (and the
    first pair whose entries are not finite)."""
    expected = (pairs, draws, 2)
    if tuple(table.shape) != expected or table.dtype != torch.float32:
        raise ValueError(
            f"precomputed reference table {path}: {list(table.shape)} {table.dtype}, expected "
            f"{list(expected)} torch.float32 (pairs, draws, winner/loser)"
        )
    bad = (~torch.isfinite(table)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"precomputed reference table {path}: non-finite reference errors for {len(bad)} of {pairs} "
            f"pair(s), first {name_pair(bad[0])}"
            + (" (every pair: are the reference model's weights finite?)" if len(bad) == pairs else "")
        )


def precomputed_reference(
    path: Path,
    meta: dict[str, str],
    compute: Callable[[], torch.Tensor],
    resuming: bool,
    recorded: str | None = None,
    name_pair: Callable[[int], str] = lambda i: f"pair {i}",
) -> Precomputed:
    """A fresh run computes the table (collective: every rank calls `compute`; the policy is where the run
    starts) and rank 0 writes it. A resumed run never recomputes it (the policy has moved): it loads the
    stored one, which must be the file the checkpoint recorded (`recorded`: its SHA-256, None for checkpoints
    that predate the record). Either way the table is checked (shape, finiteness, the pairs it was computed
    for, in `meta`); every error names the table file."""
    pairs, draws = int(meta["pairs"]), int(meta["draws"])
    if resuming:
        found = load_table(path)
        if found is None:
            raise ValueError(f"resuming a precomputed-reference run needs {path}, which is missing")
        table, stored, sha = found
        differ = sorted(k for k in meta if stored.get(k) != meta[k])
        if differ:
            raise ValueError(
                f"precomputed reference table {path} was computed for another {', '.join(differ)} "
                "than this run "
                f"has ({', '.join(f'{k} {stored.get(k)!r}, expected {meta[k]!r}' for k in differ)})"
            )
        if recorded is not None and sha != recorded:
            raise ValueError(
                f"precomputed reference table {path} differs from the SHA-256 the checkpoint recorded: "
                "it changed since the run computed it (restore it, or start afresh with --overwrite)"
            )
        check_table(table, path, pairs, draws, name_pair)
        return Precomputed(table, sha)
    table = compute()
    check_table(table, path, pairs, draws, name_pair)
    sha = save_table(table, path, meta) if D.is_main() else None
    return Precomputed(table, D.first_message(sha))


def needs_frozen_model(cfg: Config) -> bool:
    """`separate` runs a second, frozen copy of the transformer (loaded by engine.train.policy)."""
    return cfg.dpo.reference == "separate"


@dataclass(frozen=True)
class ReferenceSite:
    """What the strategies are built from: the run's config, the family adapter, the policy's DeepSpeed engine
    and the frozen copy's (None unless `separate`), and, for precomputed tables, the run folder, whether the
    run resumes, and the tables' SHA-256 by file name that the resumed checkpoint recorded."""

    cfg: Config
    adapter: ModelAdapter
    policy: nn.Module
    frozen: nn.Module | None
    out_dir: Path
    resuming: bool
    recorded: dict[str, str]
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True)
class Split:
    """A preference set the reference serves: the training set (one draw per epoch) or the held-out set."""

    dataset: PreferenceDataset
    train: bool
    batches_per_epoch: int = 1


def build_reference(site: ReferenceSite, split: Split | None = None):
    """The configured strategy (dpo.reference), chosen here and nowhere else: `adapters_off` (the policy with
    its LoRA adapters off), `separate` (the frozen copy) or `precomputed` (a table of the split's reference
    errors, computed before the first update by the policy as it starts: with its adapters off under LoRA)."""
    cfg, adapter, policy = site.cfg, site.adapter, site.policy
    strategy = cfg.dpo.reference
    if strategy == "adapters_off":
        return AdaptersOff(adapter, policy.module)
    if strategy == "separate":
        return Separate(adapter, site.frozen)
    if split is None:
        raise ValueError("dpo.reference 'precomputed' needs the preference set its table is computed for")
    source = AdaptersOff(adapter, policy.module) if cfg.lora.enabled else Separate(adapter, policy)
    return _precomputed(site, split, source)


def _precomputed(site: ReferenceSite, split: Split, source: Callable) -> Precomputed:
    """A split's precomputed table, keyed by seed, pairs (their pair_ids), draws and model: training uses one
    draw per epoch (or the noise cycle), held-out evaluation eval.draws, at its own seed offset."""
    cfg, dataset = site.cfg, split.dataset
    seed = cfg.seed if split.train else cfg.seed + EVAL_SEED_OFFSET
    epochs = math.ceil(cfg.train.max_steps / split.batches_per_epoch)
    draws = min(epochs, cfg.dpo.noise_cycle or epochs) if split.train else cfg.eval.draws
    ids = hashlib.sha256("\n".join(r["pair_id"] for r in dataset.records).encode()).hexdigest()
    meta = {
        "seed": str(seed),
        "pairs": str(len(dataset)),
        "draws": str(draws),
        "model": cfg.model.name,
        "pair_ids_sha256": ids,
    }
    name = table_name(split.train)

    def compute() -> torch.Tensor:
        def make(idx: list[int], draw: int) -> StepInputs:
            return inputs_for_pairs(
                site.adapter, dataset, idx, [draw] * len(idx), seed, site.device, site.dtype
            )

        site.policy.eval()
        table = compute_table(len(dataset), draws, cfg.eval.batch_size, make, source, site.device)
        site.policy.train()
        return table

    recorded = site.recorded.get(name)
    return precomputed_reference(
        site.out_dir / name, meta, compute, site.resuming, recorded, dataset.describe_pair
    )


def table_name(train: bool) -> str:
    """The file name of a split's precomputed reference table in the run folder."""
    return "reference_errors.safetensors" if train else "reference_errors_heldout.safetensors"
