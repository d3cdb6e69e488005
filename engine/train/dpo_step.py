"""One Diffusion-DPO forward: winner and loser share noise and timestep, one policy pass on [w; l], fused
loss.

The (noise, timestep) of a pair is a pure function of (seed, pair index, draw index), so every rank
layout, a resumed run and a precomputed reference all see the same draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from videogpa.engine.data.preference import PreferenceDataset, collate_pairs
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.types import Conditioning
from videogpa.kernels.dpo_loss import DPOOutput, diffusion_dpo_loss

EVAL_SEED_OFFSET = 1_000_003  # held-out evaluation draws at seed + this: never the training draws


@dataclass(frozen=True)
class LossSettings:
    beta: float
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0


@dataclass
class StepInputs:
    """Everything a forward pass on the stacked [w; l] batch needs (2P samples for P pairs)."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    cond: Conditioning
    target: torch.Tensor
    mask: torch.Tensor | None
    pair_index: torch.Tensor  # [P]
    draw: torch.Tensor  # [P] draw index per pair (epoch, or epoch mod noise_cycle)


# A reference: given the step inputs, (ref_pred, None) or (None, ref_err [2P]).
Reference = Callable[[StepInputs], tuple[torch.Tensor | None, torch.Tensor | None]]


def draw_seed(seed: int, pair_index: int, draw: int) -> int:
    """A 63-bit generator seed for one pair's draw (a hash, so nearby keys give unrelated streams)."""
    digest = hashlib.blake2b(f"{seed}/{pair_index}/{draw}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def pair_draws(
    adapter: ModelAdapter,
    sample_shape: Sequence[int],
    seed: int,
    pair_index: Sequence[int],
    draw: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise [P, *sample_shape] (fp32) and timesteps [P] for P pairs, generated on the CPU."""
    noises, steps = [], []
    for p, d in zip(pair_index, draw):
        gen = torch.Generator().manual_seed(draw_seed(seed, int(p), int(d)))
        steps.append(adapter.sample_timesteps(1, gen, torch.device("cpu")).reshape(1))
        noises.append(torch.randn(tuple(sample_shape), generator=gen))
    return torch.stack(noises), torch.cat(steps)


def check_pair_shapes(latents_w: torch.Tensor, latents_l: torch.Tensor, cond: Conditioning) -> None:
    if latents_w.shape != latents_l.shape:
        raise ValueError(
            f"winner and loser latents must have the same shape, got {tuple(latents_w.shape)} and "
            f"{tuple(latents_l.shape)}"
        )
    if latents_w.ndim != 5:
        raise ValueError(f"latents must be 5-D video latents [B, ...], got shape {tuple(latents_w.shape)}")
    if cond.text_embeds.shape[0] != latents_w.shape[0]:
        raise ValueError(
            f"conditioning batch {cond.text_embeds.shape[0]} does not match latent batch {latents_w.shape[0]}"
        )


def _cast_cond(cond: Conditioning, device: torch.device, dtype: torch.dtype) -> Conditioning:
    return cond.map(lambda t: t.to(device=device, dtype=dtype))


def build_inputs(
    adapter: ModelAdapter,
    latents_w: torch.Tensor,
    latents_l: torch.Tensor,
    cond: Conditioning,
    pair_index: torch.Tensor,
    draw: torch.Tensor,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> StepInputs:
    """Noise both members of each pair with the pair's shared draw; stack them as [w; l]."""
    check_pair_shapes(latents_w, latents_l, cond)
    noise, t = pair_draws(adapter, latents_w.shape[1:], seed, pair_index.tolist(), draw.tolist())
    x0 = torch.cat([latents_w, latents_l]).to(device=device, dtype=torch.float32)
    eps = torch.cat([noise, noise]).to(device)
    t = torch.cat([t, t]).to(device)
    cond2 = _cast_cond(cond.repeat(2), device, dtype)
    return StepInputs(
        noisy=adapter.add_noise(x0, eps, t).to(dtype),
        timesteps=t,
        cond=cond2,
        target=adapter.target(x0, eps, t).to(dtype),
        mask=adapter.loss_mask(x0, cond2),
        pair_index=pair_index,
        draw=draw,
    )


def inputs_for_pairs(
    adapter: ModelAdapter,
    dataset: PreferenceDataset,
    idx: list[int],
    draws: list[int],
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> StepInputs:
    """StepInputs of the pairs `idx` of a preference set, pair k noised with its draw draws[k]."""
    batch = collate_pairs([dataset[i] for i in idx])
    return build_inputs(
        adapter,
        batch.latents_w,
        batch.latents_l,
        batch.cond,
        torch.as_tensor(idx),
        torch.as_tensor(draws),
        seed,
        device,
        dtype,
    )


def dpo_forward(
    adapter: ModelAdapter, model: nn.Module, reference: Reference, inputs: StepInputs, loss: LossSettings
) -> DPOOutput:
    """Reference first (no grad), then the policy once on [w; l], then the fused Diffusion-DPO loss."""
    ref_pred, ref_err = reference(inputs)
    policy_pred = adapter.predict(model, inputs.noisy, inputs.timesteps, inputs.cond)
    return diffusion_dpo_loss(
        policy_pred,
        ref_pred,
        inputs.target,
        loss.beta,
        loss_type=loss.loss_type,
        label_smoothing=loss.label_smoothing,
        mask=inputs.mask,
        ref_err=ref_err,
    )
