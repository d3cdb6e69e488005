"""Launchers and the autograd.Function around the Triton kernels (see triton_kernels.py).

Each launcher builds a `Launch` from its tensors; `aot_variants` builds the same launches from meta tensors of
the shapes the trainer uses, so the ahead-of-time compile check compiles exactly what runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from videogpa.kernels._backend import triton_interpreter_active
from videogpa.kernels._launch import Launch, Variant
from videogpa.kernels.dpo_loss import triton_kernels as K
from videogpa.kernels.dpo_loss.reference import STAT_NAMES

_LOSS_IDS = {"sigmoid": K.LOSS_SIGMOID, "hinge": K.LOSS_HINGE, "ipo": K.LOSS_IPO}
CUDA_NUM_WARPS = 8
CUDA_VECTOR_BYTES = 16  # per thread and tensor per step: one 16-byte vector (8 bf16/fp16 or 4 fp32 elements)
# AOT-checked ceiling, under triton 3.6 and 3.7: ≥ 3 resident 8-warp programs per SM (24 warps: ≥ 36 KB of
# 16-byte loads in flight per SM: more than the bandwidth-latency product needs); a ptxas cap of 64
# (maxnreg) spills on sm_80. Two vectors per thread (the block before) took fp32 with a mask to 75-80
# registers under triton 3.6.
STREAM_MAX_REGISTERS = 72


def cuda_block(itemsize: int) -> int:
    """Elements per step on a GPU: one 16-byte vector per thread of CUDA_NUM_WARPS warps."""
    return CUDA_VECTOR_BYTES // itemsize * 32 * CUDA_NUM_WARPS


INTERPRETER_BLOCK = 1024  # the interpreter's cost grows with the number of programs and steps
FINALIZE_BLOCKS = dict(BLOCK_B=16, BLOCK_C=64)  # pairs and chunks per step of the one finalize program
MAX_PER_SAMPLE = 2**30  # sample-local index math is 32-bit (index + one chunk < 2**31)


@dataclass(frozen=True)
class LaunchPlan:
    """Each sample is split into n_chunks programs of `chunk` elements, walked in `block`-wide steps."""

    block: int
    chunk: int
    n_chunks: int
    num_warps: int = 4


@functools.lru_cache(maxsize=256)
def plan_launch(
    n_per_sample: int,
    n_samples: int,
    target_programs: int,
    block: int,
    num_warps: int = 4,
) -> LaunchPlan:
    """Enough programs to fill the device even when 2B is tiny (≈ target_programs per kernel)."""
    per_sample = max(1, min(triton.cdiv(n_per_sample, block), triton.cdiv(target_programs, n_samples)))
    chunk = triton.cdiv(triton.cdiv(n_per_sample, per_sample), block) * block
    return LaunchPlan(block, chunk, triton.cdiv(n_per_sample, chunk), num_warps)


@functools.lru_cache(maxsize=16)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_plan(n_per_sample: int, n_samples: int, device: torch.device, itemsize: int) -> LaunchPlan:
    """≈ 4 programs per SM of one block size on a GPU (one compiled variant); few, wide programs in the
    interpreter."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return plan_launch(
            n_per_sample, n_samples, 4 * _sm_count(index), cuda_block(itemsize), CUDA_NUM_WARPS
        )
    block = max(16, min(INTERPRETER_BLOCK, triton.next_power_of_2(n_per_sample)))
    return plan_launch(n_per_sample, n_samples, 4 * n_samples, block)


@dataclass(frozen=True)
class MaskView:
    """A per-element mask described per sample as a sum of ≤ 3 terms (no materialised copy): the mask's
    offset of the sample-local flat index i is Σ (i // div % size)·stride over its non-broadcast dims."""

    tensor: torch.Tensor
    terms: tuple[tuple[int, int, int], ...]  # (div, size, stride) per non-broadcast dim, outermost first
    sample_stride: int

    @property
    def args(self) -> tuple[int, ...]:
        padded = (*self.terms, *[_NO_TERM] * (_MAX_MASK_TERMS - len(self.terms)))
        return (self.sample_stride, *(x for term in padded for x in term))


_MAX_MASK_TERMS = 3
_NO_TERM = (1, 1, 0)
NO_MASK_ARGS = (0, *_NO_TERM * _MAX_MASK_TERMS)


def mask_view(mask: torch.Tensor, shape: torch.Size) -> MaskView:
    """Collapse the broadcast mask's per-sample dims (merge dims that are contiguous together, drop size-1
    dims and broadcast dims outside every real one), then keep one term per dim that moves the mask: only
    those cost the kernel a division. More than 3 such dims (rare): a contiguous copy in the mask's own
    dtype."""
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    expanded = mask.expand(shape)
    dims: list[list[int]] = []  # [size, stride], innermost last
    for size, stride in zip(shape[1:], expanded.stride()[1:]):
        if size == 1 or (stride == 0 and not dims):
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = [dims[-1][0] * size, stride]
        else:
            dims.append([size, stride])
    terms, div = [], 1
    for size, stride in reversed(dims):
        if stride:
            terms.insert(0, (div, size, stride))
        div *= size
    if len(terms) > _MAX_MASK_TERMS:
        expanded = expanded.contiguous()
        terms = [(1, expanded[0].numel(), 1)]
    return MaskView(expanded, tuple(terms), expanded.stride(0))


def _mask_flags(mask: MaskView | None) -> dict:
    return dict(HAS_MASK=mask is not None, MASK_TERMS=0 if mask is None else len(mask.terms))


def partial_sums_launch(policy, ref, target, mask: MaskView | None, plan: LaunchPlan, out) -> Launch:
    """out [3, 2B, n_chunks] fp32 <- per-chunk Σ m(p-t)², Σ m(r-t)², Σ m."""
    n_samples, n = policy.shape[0], policy[0].numel()
    args = (
        policy,
        policy if ref is None else ref,
        target,
        policy if mask is None else mask.tensor,
        out,
        n,
        n_samples * n,
        plan.chunk,
        plan.n_chunks,
        n_samples,
        *(NO_MASK_ARGS if mask is None else mask.args),
    )
    flags = dict(HAS_REF=ref is not None, **_mask_flags(mask), BLOCK=plan.block, num_warps=plan.num_warps)
    return Launch(K.dpo_partial_sums_kernel, (n_samples, plan.n_chunks), args, flags)


def finalize_launch(
    partials, ref_err, weight, n_per_sample, beta, loss_type, label_smoothing, has_mask, outputs
) -> Launch:
    """Per-pair math in one program; outputs = (loss [], stats [7], logits [B], errors [2, 2B], scale [2B]);
    ref_err and weight, when given, are fp32."""
    n_pairs, n_chunks = outputs[2].shape[0], partials.shape[2]
    args = (
        partials,
        partials if ref_err is None else ref_err,
        partials if weight is None else weight,
        *outputs,
        n_pairs,
        n_chunks,
        float(n_per_sample),
        beta,
        label_smoothing,
        _LOSS_IDS[loss_type],
        int(ref_err is not None),
        int(weight is not None),
        int(has_mask),
    )
    return Launch(K.dpo_finalize_kernel, (1,), args, FINALIZE_BLOCKS)


def grad_launch(policy, target, mask: MaskView | None, scale, grad_loss, plan: LaunchPlan, out) -> Launch:
    """out (policy's dtype) <- grad_loss · scale_s · m · (p - t)."""
    n_samples, n = policy.shape[0], policy[0].numel()
    args = (
        policy,
        target,
        policy if mask is None else mask.tensor,
        scale,
        grad_loss,
        out,
        n,
        n_samples * n,
        plan.chunk,
        plan.n_chunks,
        n_samples,
        *(NO_MASK_ARGS if mask is None else mask.args),
    )
    flags = dict(**_mask_flags(mask), BLOCK=plan.block, num_warps=plan.num_warps)
    return Launch(K.dpo_grad_kernel, (n_samples, plan.n_chunks), args, flags)


def _outputs(n_samples: int, device) -> tuple[torch.Tensor, ...]:
    f32 = dict(dtype=torch.float32, device=device)
    return (
        torch.empty((), **f32),  # loss
        torch.empty(len(STAT_NAMES) - 1, **f32),  # the other metrics, in STAT_NAMES order
        torch.empty(n_samples // 2, **f32),  # logits
        torch.empty((2, n_samples), **f32),  # per-sample errors: policy, reference
        torch.empty(n_samples, **f32),  # gradient scale per sample
    )


class _FusedDPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, policy, ref, target, ref_err, weight, mask, beta, loss_type, label_smoothing):
        ctx.set_materialize_grads(False)  # unused outputs get no zero-filled gradients
        n_samples, n = policy.shape[0], policy[0].numel()
        plan = device_plan(n, n_samples, policy.device, policy.element_size())
        mview = None if mask is None else mask_view(mask, policy.shape)
        partials = torch.empty((3, n_samples, plan.n_chunks), dtype=torch.float32, device=policy.device)
        partial_sums_launch(policy, ref, target, mview, plan, partials)()
        outputs = _outputs(n_samples, policy.device)
        finalize_launch(
            partials, ref_err, weight, n, beta, loss_type, label_smoothing, mview is not None, outputs
        )()
        loss, stats, logits, errors, scale = outputs
        ctx.save_for_backward(policy, target, scale)
        ctx.mask_view, ctx.plan = mview, plan
        ctx.mark_non_differentiable(stats, logits, errors)
        return loss, stats, logits, errors

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats, _grad_logits, _grad_errors):
        if grad_loss is None:
            return (None,) * 9
        policy, target, scale = ctx.saved_tensors
        grad = torch.empty_like(policy)
        grad_launch(policy, target, ctx.mask_view, scale, grad_loss.float(), ctx.plan, grad)()
        return grad, None, None, None, None, None, None, None, None


@torch.compiler.disable
def fused_dpo_loss(
    policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err
) -> dict[str, torch.Tensor]:
    """The Triton path of diffusion_dpo_loss (validated inputs; CUDA, or CPU under the interpreter)."""
    if policy_pred.device.type != "cuda" and not triton_interpreter_active():
        raise ValueError("diffusion_dpo_loss: the Triton path needs CUDA tensors or TRITON_INTERPRET=1")
    if policy_pred[0].numel() > MAX_PER_SAMPLE:
        raise ValueError(
            f"diffusion_dpo_loss: the Triton path takes at most {MAX_PER_SAMPLE} elements per sample, got "
            f"{policy_pred[0].numel()} (use backend='torch')"
        )
    contiguous = lambda t: None if t is None else t.detach().contiguous()
    fp32 = lambda t: None if t is None else t.detach().float().contiguous()
    loss, stats, logits, errors = _FusedDPOLoss.apply(
        policy_pred.contiguous(),
        contiguous(ref_pred),
        contiguous(target),
        fp32(ref_err),
        fp32(weight),
        None if mask is None else mask.detach(),
        beta,
        loss_type,
        label_smoothing,
    )
    metrics = dict(zip(STAT_NAMES[1:], stats.unbind(0)))
    return dict(loss=loss, **metrics, logits=logits, policy_err=errors[0], ref_err=errors[1])


# Shapes the trainer launches with, one per mask layout (sizes are not specialised, so the shape matters only
# through the mask's): CogVideoX latents [13, 16, 60, 90] (no mask); Wan 2.2 image-to-video latents
# [16, 21, 60, 104] with the first latent frame masked out (fp32 mask [1, 1, 21, 1, 1]); an odd per-sample
# size (not a multiple of 16) with a full bool mask.
AOT_CASES = {
    "cogvideox": ((8, 13, 16, 60, 90), None),
    "wan_i2v": ((8, 16, 21, 60, 104), lambda s: torch.empty(1, 1, s[2], 1, 1, device="meta")),
    "odd": ((8, 13, 15, 59, 89), lambda s: torch.empty(s, dtype=torch.bool, device="meta")),
}
AOT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
AOT_SM_COUNT = 132  # an H100/H200's, for the GPU branch of the launch plan


def aot_variants() -> list[Variant]:
    """Every (signature, constexprs) the launchers build on a GPU for the AOT_CASES, from meta tensors."""
    meta = torch.device("meta")
    variants = []
    for case, (shape, make_mask) in AOT_CASES.items():
        n_samples, n = shape[0], torch.Size(shape[1:]).numel()
        mview = None if make_mask is None else mask_view(make_mask(shape), torch.Size(shape))
        for dtype in AOT_DTYPES:
            x = torch.empty(shape, dtype=dtype, device=meta)
            plan = plan_launch(n, n_samples, 4 * AOT_SM_COUNT, cuda_block(x.element_size()), CUDA_NUM_WARPS)
            partials = torch.empty((3, n_samples, plan.n_chunks), device=meta)
            for ref in (x, None):
                launch = partial_sums_launch(x, ref, x, mview, plan, partials)
                name = f"partial_sums/{case}/{dtype}/{'ref' if ref is not None else 'ref_err'}"
                expect = ("vector_loads", "no_int64_div")
                variants.append(Variant(name, launch, expect, STREAM_MAX_REGISTERS))
            scale, grad_loss = torch.empty(n_samples, device=meta), torch.empty((), device=meta)
            launch = grad_launch(x, x, mview, scale, grad_loss, plan, x)
            expect = ("vector_loads", "vector_stores", "no_int64_div")
            variants.append(Variant(f"grad/{case}/{dtype}", launch, expect, STREAM_MAX_REGISTERS))
    partials = torch.empty((3, 8, 64), device=meta)
    finalize = finalize_launch(partials, None, None, 1000, 1.0, "sigmoid", 0.0, False, _outputs(8, meta))
    variants.append(Variant("finalize (every loss type and flag: runtime values)", finalize))
    return variants
