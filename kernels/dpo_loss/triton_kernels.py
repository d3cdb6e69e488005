"""Triton kernels of the fused Diffusion-DPO loss.

Three launches per forward+backward, no fp32 copy of any input:
1. `dpo_partial_sums_kernel`, grid (2B, chunks): each program reduces one chunk of one sample to
   Σ m(p-t)², Σ m(r-t)², Σ m in fp32 (m = 1 without mask) -> partials [3, 2B, chunks]. Splitting every
   sample over many programs keeps the GPU busy when B is 1-4 and a sample holds ~1 M elements.
2. `dpo_finalize_kernel`, one program: reduces the partials in a fixed order (deterministic), computes
   per-pair logits and losses, the scalar loss and metrics, and per-sample gradient scales.
3. `dpo_grad_kernel`, grid (2B, chunks): d loss / d policy = g·scale_s·m·(p - t), stored in p's dtype.

Byte floor (what cannot be avoided): forward reads policy, ref and target once; backward reads policy
and target and writes the gradient: 6 tensor-passes of 2B·n elements in the input dtype.
"""

import triton
import triton.language as tl

LOSS_SIGMOID, LOSS_HINGE, LOSS_IPO = 0, 1, 2


@triton.jit
def _broadcast_offsets(idx, d1, d2, d3, s0, s1, s2, s3):
    """Offset into a broadcast (strided) tensor of the element at flat index idx of a [d0, d1, d2, d3] view."""
    i3 = idx % d3
    rest = idx // d3
    i2 = rest % d2
    rest = rest // d2
    i1 = rest % d1
    i0 = rest // d1
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3


@triton.jit
def dpo_partial_sums_kernel(
    policy_ptr,
    ref_ptr,
    target_ptr,
    mask_ptr,
    partial_ptr,
    n_per_sample,
    chunk,
    n_chunks,
    n_samples,
    md1,
    md2,
    md3,
    ms_sample,
    ms0,
    ms1,
    ms2,
    ms3,
    HAS_REF: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    sample = tl.program_id(0)
    chunk_id = tl.program_id(1)
    base = sample.to(tl.int64) * n_per_sample
    start = chunk_id.to(tl.int64) * chunk
    acc_policy = tl.zeros([BLOCK], dtype=tl.float32)
    acc_ref = tl.zeros([BLOCK], dtype=tl.float32)
    acc_mask = tl.zeros([BLOCK], dtype=tl.float32)
    for offset in range(0, chunk, BLOCK):
        idx = start + offset + tl.arange(0, BLOCK)
        valid = idx < n_per_sample
        t = tl.load(target_ptr + base + idx, mask=valid, other=0.0).to(tl.float32)
        d = tl.load(policy_ptr + base + idx, mask=valid, other=0.0).to(tl.float32) - t
        sq = d * d
        if HAS_REF:
            dr = tl.load(ref_ptr + base + idx, mask=valid, other=0.0).to(tl.float32) - t
            sq_ref = dr * dr
        if HAS_MASK:
            moff = sample.to(tl.int64) * ms_sample + _broadcast_offsets(
                idx, md1, md2, md3, ms0, ms1, ms2, ms3
            )
            m = tl.load(mask_ptr + moff, mask=valid, other=0).to(tl.float32)
            sq = sq * m
            acc_mask += m
            if HAS_REF:
                sq_ref = sq_ref * m
        acc_policy += sq
        if HAS_REF:
            acc_ref += sq_ref
    out = partial_ptr + sample * n_chunks + chunk_id
    stride_q = n_samples * n_chunks
    tl.store(out, tl.sum(acc_policy, axis=0))
    tl.store(out + stride_q, tl.sum(acc_ref, axis=0))
    tl.store(out + 2 * stride_q, tl.sum(acc_mask, axis=0))


@triton.jit
def _softplus(x):
    """log(1 + e^x) without overflow."""
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _sigmoid(x):
    """σ(x) without overflow."""
    return tl.exp(tl.minimum(x, 0.0)) / (1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _sum_rows(partial_ptr, rows, row_mask, n_chunks, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Σ over chunks of partial_ptr[rows, :] in a fixed order."""
    acc = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for c0 in range(0, n_chunks, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        ok = row_mask[:, None] & (cols[None, :] < n_chunks)
        acc += tl.load(partial_ptr + rows[:, None] * n_chunks + cols[None, :], mask=ok, other=0.0)
    return tl.sum(acc, axis=1)


@triton.jit
def dpo_finalize_kernel(
    partial_ptr,
    ref_err_ptr,
    weight_ptr,
    stats_ptr,
    logits_ptr,
    errors_ptr,
    scale_ptr,
    n_pairs,
    n_chunks,
    n_per_sample,
    beta,
    label_smoothing,
    LOSS_TYPE: tl.constexpr,
    HAS_REF_ERR: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pair = tl.arange(0, BLOCK_B)
    ok = pair < n_pairs
    win, lose = pair, pair + n_pairs
    stride_q = 2 * n_pairs * n_chunks
    if HAS_MASK:
        den_w = _sum_rows(partial_ptr + 2 * stride_q, win, ok, n_chunks, BLOCK_B, BLOCK_C)
        den_l = _sum_rows(partial_ptr + 2 * stride_q, lose, ok, n_chunks, BLOCK_B, BLOCK_C)
        den_w = tl.where(ok, den_w, 1.0)  # padding lanes: avoid 0/0
        den_l = tl.where(ok, den_l, 1.0)
    else:
        den_w = tl.zeros([BLOCK_B], dtype=tl.float32) + n_per_sample
        den_l = den_w
    pw = _sum_rows(partial_ptr, win, ok, n_chunks, BLOCK_B, BLOCK_C) / den_w
    pl = _sum_rows(partial_ptr, lose, ok, n_chunks, BLOCK_B, BLOCK_C) / den_l
    if HAS_REF_ERR:
        rw = tl.load(ref_err_ptr + win, mask=ok, other=0.0).to(tl.float32)
        rl = tl.load(ref_err_ptr + lose, mask=ok, other=0.0).to(tl.float32)
    else:
        rw = _sum_rows(partial_ptr + stride_q, win, ok, n_chunks, BLOCK_B, BLOCK_C) / den_w
        rl = _sum_rows(partial_ptr + stride_q, lose, ok, n_chunks, BLOCK_B, BLOCK_C) / den_l
    h = (rw - pw) - (rl - pl)
    z = beta * h
    if LOSS_TYPE == 0:  # LOSS_SIGMOID
        loss = (1.0 - label_smoothing) * _softplus(-z) + label_smoothing * _softplus(z)
        dloss_dh = beta * (label_smoothing * _sigmoid(z) - (1.0 - label_smoothing) * _sigmoid(-z))
    elif LOSS_TYPE == 1:  # LOSS_HINGE
        loss = tl.maximum(1.0 - z, 0.0)
        dloss_dh = tl.where(z < 1.0, -beta, 0.0)
    else:  # LOSS_IPO
        centred = h - 0.5 / beta
        loss = centred * centred
        dloss_dh = 2.0 * centred
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + pair, mask=ok, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_B], dtype=tl.float32) + 1.0
    inv_b = 1.0 / n_pairs
    # dL/dE_θ(w) = -w·dloss/dh / B, dL/dE_θ(l) = +w·dloss/dh / B; dE/dp = 2m(p - t)/den.
    g = w * dloss_dh * inv_b
    tl.store(scale_ptr + win, -2.0 * g / den_w, mask=ok)
    tl.store(scale_ptr + lose, 2.0 * g / den_l, mask=ok)
    tl.store(logits_ptr + pair, z, mask=ok)
    tl.store(errors_ptr + win, pw, mask=ok)
    tl.store(errors_ptr + lose, pl, mask=ok)
    tl.store(errors_ptr + 2 * n_pairs + win, rw, mask=ok)
    tl.store(errors_ptr + 2 * n_pairs + lose, rl, mask=ok)
    zero = tl.zeros([BLOCK_B], dtype=tl.float32)
    tl.store(stats_ptr + 0, tl.sum(tl.where(ok, w * loss, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 1, tl.sum(tl.where(ok & (z > 0), 1.0, 0.0), axis=0) * inv_b)
    tl.store(stats_ptr + 2, tl.sum(tl.where(ok, pl - pw, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 3, tl.sum(tl.where(ok, z, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 4, tl.sum(tl.where(ok, pw, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 5, tl.sum(tl.where(ok, pl, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 6, tl.sum(tl.where(ok, rw, zero), axis=0) * inv_b)
    tl.store(stats_ptr + 7, tl.sum(tl.where(ok, rl, zero), axis=0) * inv_b)


@triton.jit
def dpo_grad_kernel(
    policy_ptr,
    target_ptr,
    mask_ptr,
    scale_ptr,
    grad_out_ptr,
    grad_ptr,
    n_per_sample,
    chunk,
    md1,
    md2,
    md3,
    ms_sample,
    ms0,
    ms1,
    ms2,
    ms3,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    sample = tl.program_id(0)
    chunk_id = tl.program_id(1)
    base = sample.to(tl.int64) * n_per_sample
    start = chunk_id.to(tl.int64) * chunk
    scale = tl.load(scale_ptr + sample) * tl.load(grad_out_ptr).to(tl.float32)
    for offset in range(0, chunk, BLOCK):
        idx = start + offset + tl.arange(0, BLOCK)
        valid = idx < n_per_sample
        t = tl.load(target_ptr + base + idx, mask=valid, other=0.0).to(tl.float32)
        g = scale * (tl.load(policy_ptr + base + idx, mask=valid, other=0.0).to(tl.float32) - t)
        if HAS_MASK:
            moff = sample.to(tl.int64) * ms_sample + _broadcast_offsets(
                idx, md1, md2, md3, ms0, ms1, ms2, ms3
            )
            g = g * tl.load(mask_ptr + moff, mask=valid, other=0).to(tl.float32)
        tl.store(grad_ptr + base + idx, g.to(grad_ptr.dtype.element_ty), mask=valid)
