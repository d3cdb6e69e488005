"""Launchers and the autograd.Function around the Triton kernels (see triton_kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from videogpa.kernels._backend import triton_interpreter_active
from videogpa.kernels.dpo_loss import triton_kernels as K
from videogpa.kernels.dpo_loss.output import STAT_NAMES, DPOOutput

_LOSS_IDS = {"sigmoid": K.LOSS_SIGMOID, "hinge": K.LOSS_HINGE, "ipo": K.LOSS_IPO}
_MAX_MASK_DIMS = 4


@dataclass(frozen=True)
class LaunchPlan:
    """How one sample of n elements is split: programs of `chunk` elements, `block`-wide steps."""

    block: int
    chunk: int
    n_chunks: int


def plan_launch(n_per_sample: int, n_samples: int, device: torch.device) -> LaunchPlan:
    """Enough programs to fill the GPU (≈4 per SM) even when 2B is tiny; few, wide ones in the interpreter."""
    if device.type == "cuda":
        block = 2048
        target_programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # interpreter: cost grows with the number of programs, not elements
        block = min(1024, triton.next_power_of_2(n_per_sample))
        target_programs = 4 * n_samples
    per_sample = max(1, min(triton.cdiv(n_per_sample, block), triton.cdiv(target_programs, n_samples)))
    chunk = triton.cdiv(triton.cdiv(n_per_sample, per_sample), block) * block
    return LaunchPlan(block, chunk, triton.cdiv(n_per_sample, chunk))


@dataclass(frozen=True)
class MaskView:
    """A per-element mask described as a strided [d0, d1, d2, d3] view per sample (no materialised copy)."""

    tensor: torch.Tensor
    sizes: tuple[int, int, int]  # d1, d2, d3
    strides: tuple[int, int, int, int]  # element strides of d0..d3 (0 where broadcast)
    sample_stride: int

    @property
    def args(self) -> tuple[int, ...]:
        return (*self.sizes, self.sample_stride, *self.strides)


NO_MASK_ARGS = (1, 1, 1, 0, 0, 0, 0, 0)


def mask_view(mask: torch.Tensor, shape: torch.Size) -> MaskView:
    """Collapse the broadcast mask's per-sample dims to ≤ 4 by merging dims that are contiguous together."""
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    expanded = mask.expand(shape)
    dims: list[list[int]] = []  # [size, stride], innermost last
    for size, stride in zip(shape[1:], expanded.stride()[1:]):
        if size == 1:
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = [dims[-1][0] * size, stride]
        else:
            dims.append([size, stride])
    if len(dims) > _MAX_MASK_DIMS:  # rare: an irregular mask; a copy in the mask's own dtype
        expanded = expanded.contiguous()
        n = expanded[0].numel()
        dims = [[n, 1]]
    dims = [[1, 0]] * (_MAX_MASK_DIMS - len(dims)) + dims
    sizes = tuple(d[0] for d in dims[1:])
    strides = tuple(d[1] for d in dims)
    return MaskView(expanded, sizes, strides, expanded.stride(0))


def partial_sums(policy, ref, target, mask: MaskView | None, plan: LaunchPlan, out: torch.Tensor) -> None:
    """out [3, 2B, n_chunks] fp32 <- per-chunk Σ m(p-t)², Σ m(r-t)², Σ m."""
    n_samples, n = policy.shape[0], policy[0].numel()
    K.dpo_partial_sums_kernel[(n_samples, plan.n_chunks)](
        policy,
        policy if ref is None else ref,
        target,
        policy if mask is None else mask.tensor,
        out,
        n,
        plan.chunk,
        plan.n_chunks,
        n_samples,
        *(NO_MASK_ARGS if mask is None else mask.args),
        HAS_REF=ref is not None,
        HAS_MASK=mask is not None,
        BLOCK=plan.block,
    )


def finalize(
    partials,
    ref_err,
    weight,
    n_per_sample,
    beta,
    loss_type,
    label_smoothing,
    has_mask,
    stats,
    logits,
    errors,
    scale,
) -> None:
    """Per-pair math in one program: stats [8], logits [B], errors [2, 2B], scale [2B] (gradient scales)."""
    n_pairs = logits.shape[0]
    n_chunks = partials.shape[2]
    K.dpo_finalize_kernel[(1,)](
        partials,
        partials if ref_err is None else ref_err,
        partials if weight is None else weight,
        stats,
        logits,
        errors,
        scale,
        n_pairs,
        n_chunks,
        float(n_per_sample),
        beta,
        label_smoothing,
        LOSS_TYPE=_LOSS_IDS[loss_type],
        HAS_REF_ERR=ref_err is not None,
        HAS_WEIGHT=weight is not None,
        HAS_MASK=has_mask,
        BLOCK_B=triton.next_power_of_2(n_pairs),
        BLOCK_C=min(64, triton.next_power_of_2(n_chunks)),
    )


def policy_grad(policy, target, mask: MaskView | None, scale, grad_loss, plan: LaunchPlan, out) -> None:
    """out (policy's dtype) <- grad_loss · scale_s · m · (p - t)."""
    n_samples, n = policy.shape[0], policy[0].numel()
    K.dpo_grad_kernel[(n_samples, plan.n_chunks)](
        policy,
        target,
        policy if mask is None else mask.tensor,
        scale,
        grad_loss,
        out,
        n,
        plan.chunk,
        *(NO_MASK_ARGS if mask is None else mask.args),
        HAS_MASK=mask is not None,
        BLOCK=plan.block,
    )


class _FusedDPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, policy, ref, target, ref_err, weight, mask, beta, loss_type, label_smoothing):
        n_samples = policy.shape[0]
        n = policy[0].numel()
        device = policy.device
        plan = plan_launch(n, n_samples, device)
        mview = None if mask is None else mask_view(mask, policy.shape)
        partials = torch.empty((3, n_samples, plan.n_chunks), dtype=torch.float32, device=device)
        partial_sums(policy, ref, target, mview, plan, partials)
        stats = torch.empty(len(STAT_NAMES), dtype=torch.float32, device=device)
        logits = torch.empty(n_samples // 2, dtype=torch.float32, device=device)
        errors = torch.empty((2, n_samples), dtype=torch.float32, device=device)
        scale = torch.empty(n_samples, dtype=torch.float32, device=device)
        finalize(
            partials, ref_err, weight, n, beta, loss_type, label_smoothing, mview is not None,
            stats, logits, errors, scale,
        )  # fmt: skip
        ctx.save_for_backward(policy, target, scale)
        ctx.mask_view, ctx.plan = mview, plan
        ctx.mark_non_differentiable(logits, errors)
        return stats, logits, errors

    @staticmethod
    def backward(ctx, grad_stats, _grad_logits, _grad_errors):
        policy, target, scale = ctx.saved_tensors
        grad = torch.empty_like(policy)
        policy_grad(policy, target, ctx.mask_view, scale, grad_stats[:1].contiguous(), ctx.plan, grad)
        return grad, None, None, None, None, None, None, None, None


@torch.compiler.disable
def fused_dpo_loss(
    policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err
) -> DPOOutput:
    """The Triton path of diffusion_dpo_loss (validated inputs; CUDA, or CPU under the interpreter)."""
    if policy_pred.device.type != "cuda" and not triton_interpreter_active():
        raise ValueError("diffusion_dpo_loss: the Triton path needs CUDA tensors or TRITON_INTERPRET=1")
    contiguous = lambda t: None if t is None else t.detach().contiguous()
    stats, logits, errors = _FusedDPOLoss.apply(
        policy_pred.contiguous(),
        contiguous(ref_pred),
        contiguous(target),
        contiguous(ref_err),
        contiguous(weight),
        None if mask is None else mask.detach(),
        beta,
        loss_type,
        label_smoothing,
    )
    scalars = {name: stats[i] if i == 0 else stats[i].detach() for i, name in enumerate(STAT_NAMES)}
    return DPOOutput(**scalars, logits=logits, policy_err=errors[0], ref_err=errors[1])
