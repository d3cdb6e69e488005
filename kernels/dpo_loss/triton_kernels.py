"""Triton kernels of the fused Diffusion-DPO loss.

Three launches per forward+backward, no fp32 copy of any input:
1. `dpo_partial_sums_kernel`, grid (2B, chunks): each program reduces one chunk of one sample to
   Σ m(p-t)², Σ m(r-t)², Σ m in fp32 (m = 1 without mask) -> partials [3, 2B, chunks]. Splitting every
   sample over many programs keeps the GPU busy when B is 1-4 and a sample holds ~1 M elements.
2. `dpo_finalize_kernel`, one program: reduces the partials in a fixed order (deterministic), computes
   per-pair logits and losses, the loss and metrics, and per-sample gradient scales.
3. `dpo_grad_kernel`, grid (2B, chunks): d loss / d policy = g·scale_s·m·(p - t), stored in p's dtype.

Indexing is flat and 16-element aligned, so the streams are 16-byte vector accesses whatever the
per-sample size n: every program's range starts and ends on a multiple of 16 elements (a partial-sums
program drops the ≤ 15 elements of a neighbouring sample it reads by a select; a gradient program scales
them with that sample's factor), so the load/store predicates are constant over each 16-element vector.
Only the tensor's last < 16 elements take a scalar tail step. Index math inside a sample is 32-bit (the
launcher keeps n ≤ 2**30); only the per-program base offsets are 64-bit, and no integer division by a
runtime value is left except the broadcast mask's (32-bit).

Byte floor (what cannot be avoided): forward reads policy, ref and target once; backward reads policy
and target and writes the gradient: 6 tensor-passes of 2B·n elements in the input dtype (5 with
precomputed reference errors). FLOPs ≈ 8 per element: the op is memory-bound.
"""

import triton
import triton.language as tl

LOSS_SIGMOID, LOSS_HINGE, LOSS_IPO = 0, 1, 2
ALIGN = tl.constexpr(16)  # elements: 16-byte vectors for every dtype of ≥ 1 byte


@triton.jit
def _mask_offsets(
    local, mdiv0, msize0, mstride0, mdiv1, msize1, mstride1, mdiv2, msize2, mstride2, MASK_TERMS: tl.constexpr
):
    """Element offset into a broadcast mask of the sample-local flat index `local`: the sum over the mask's
    MASK_TERMS (≤ 3) non-broadcast dims of (local // div % size)·stride (32-bit: the launcher keeps the
    per-sample index range below 2**31). Only the dims that move the mask cost a division: Wan's first-frame
    mask [1, 1, F, 1, 1] is one term."""
    offset = local * 0
    if MASK_TERMS > 0:
        offset += local // mdiv0 % msize0 * mstride0
    if MASK_TERMS > 1:
        offset += local // mdiv1 % msize1 * mstride1
    if MASK_TERMS > 2:
        offset += local // mdiv2 % msize2 * mstride2
    return offset


@triton.jit
def _squares(policy, ref, target, o, limit, HAS_REF: tl.constexpr):
    """(p - t)², (r - t)² in fp32 at offsets o < limit (0 beyond)."""
    ok = o < limit
    t = tl.load(target + o, mask=ok, other=0.0).to(tl.float32)
    d = tl.load(policy + o, mask=ok, other=0.0).to(tl.float32) - t
    if HAS_REF:
        dr = tl.load(ref + o, mask=ok, other=0.0).to(tl.float32) - t
    else:
        dr = d
    return d * d, dr * dr


@triton.jit
def _step_sums(
    policy,
    ref,
    target,
    mask,
    o,
    limit,
    local,
    lo,
    hi,
    mdiv0,
    msize0,
    mstride0,
    mdiv1,
    msize1,
    mstride1,
    mdiv2,
    msize2,
    mstride2,
    HAS_REF: tl.constexpr,
    HAS_MASK: tl.constexpr,
    MASK_TERMS: tl.constexpr,
):
    """One step's masked terms m(p-t)², m(r-t)², m of the elements whose sample-local index is in
    [lo, hi)."""
    sq, sq_ref = _squares(policy, ref, target, o, limit, HAS_REF)
    keep = (o < limit) & (local >= lo) & (local < hi)
    if HAS_MASK:
        moff = _mask_offsets(
            local, mdiv0, msize0, mstride0, mdiv1, msize1, mstride1, mdiv2, msize2, mstride2, MASK_TERMS
        )
        m = tl.load(mask + moff, mask=keep, other=0).to(tl.float32)
        sq = sq * m
        sq_ref = sq_ref * m
    else:
        m = keep.to(tl.float32)
    return tl.where(keep, sq, 0.0), tl.where(keep, sq_ref, 0.0), m


# Sizes are not specialised (no 16-divisibility or ==1 variants): the alignment comes from the aligned
# ranges, so one compiled variant per dtype, flag and mask layout serves every shape.
_SIZES = ["n_per_sample", "n_total", "chunk", "n_chunks", "n_samples"]


@triton.jit(do_not_specialize=_SIZES)
def dpo_partial_sums_kernel(
    policy_ptr,
    ref_ptr,
    target_ptr,
    mask_ptr,
    partial_ptr,
    n_per_sample,
    n_total,
    chunk,
    n_chunks,
    n_samples,
    ms_sample,
    mdiv0,
    msize0,
    mstride0,
    mdiv1,
    msize1,
    mstride1,
    mdiv2,
    msize2,
    mstride2,
    HAS_REF: tl.constexpr,
    HAS_MASK: tl.constexpr,
    MASK_TERMS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    sample = tl.program_id(0)
    chunk_id = tl.program_id(1)
    lo = chunk_id * chunk  # this program's sample-local range [lo, hi)
    hi = tl.minimum(lo + chunk, n_per_sample)
    sample_start = sample.to(tl.int64) * n_per_sample
    aligned_total = n_total // ALIGN * ALIGN
    # Read the aligned span around [lo, hi) (≤ 15 elements of a neighbour each side, dropped by `keep`),
    # up to the tensor's last aligned element; the elements after that are the tail step's.
    window = (sample_start + lo) // ALIGN * ALIGN
    stop = tl.minimum((sample_start + hi + ALIGN - 1) // ALIGN * ALIGN, aligned_total)
    length = (stop - window).to(tl.int32)
    shift = (window - sample_start).to(tl.int32)  # sample-local index of the window's first element
    policy, ref, target = policy_ptr + window, ref_ptr + window, target_ptr + window
    mask = mask_ptr + sample.to(tl.int64) * ms_sample
    acc_policy = tl.zeros([BLOCK], dtype=tl.float32)
    acc_ref = tl.zeros([BLOCK], dtype=tl.float32)
    acc_mask = tl.zeros([BLOCK], dtype=tl.float32)
    for off in range(0, length, BLOCK):
        o = off + tl.arange(0, BLOCK)
        sq, sq_ref, m = _step_sums(
            policy,
            ref,
            target,
            mask,
            o,
            length,
            shift + o,
            lo,
            hi,
            mdiv0,
            msize0,
            mstride0,
            mdiv1,
            msize1,
            mstride1,
            mdiv2,
            msize2,
            mstride2,
            HAS_REF,
            HAS_MASK,
            MASK_TERMS,
        )
        acc_policy += sq
        acc_ref += sq_ref
        acc_mask += m
    sum_policy, sum_ref, sum_mask = (
        tl.sum(acc_policy, axis=0),
        tl.sum(acc_ref, axis=0),
        tl.sum(acc_mask, axis=0),
    )
    if sample_start + hi > aligned_total:  # the tensor's last < 16 elements (scalar accesses)
        o = (aligned_total - window).to(tl.int32) + tl.arange(0, ALIGN)
        sq, sq_ref, m = _step_sums(
            policy,
            ref,
            target,
            mask,
            o,
            (n_total - window).to(tl.int32),
            shift + o,
            lo,
            hi,
            mdiv0,
            msize0,
            mstride0,
            mdiv1,
            msize1,
            mstride1,
            mdiv2,
            msize2,
            mstride2,
            HAS_REF,
            HAS_MASK,
            MASK_TERMS,
        )
        sum_policy += tl.sum(sq, axis=0)
        sum_ref += tl.sum(sq_ref, axis=0)
        sum_mask += tl.sum(m, axis=0)
    out = partial_ptr + sample * n_chunks + chunk_id
    stride_q = n_samples * n_chunks
    tl.store(out, sum_policy)
    tl.store(out + stride_q, sum_ref)
    tl.store(out + 2 * stride_q, sum_mask)


@triton.jit
def _log1p(u):
    """log(1 + u) for u ≥ 0, accurate for tiny u (Goldberg's identity: log(w)·u/(w − 1) with
    w = fl(1 + u))."""
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _softplus(x):
    """log(1 + e^x) without overflow, and without losing the tail: softplus(-x) ≈ e^-x for large x."""
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


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
def _pair_block(
    partial_ptr,
    ref_err_ptr,
    weight_ptr,
    logits_ptr,
    errors_ptr,
    scale_ptr,
    pair,
    n_pairs,
    n_chunks,
    n_per_sample,
    beta,
    label_smoothing,
    loss_type,
    has_ref_err,
    has_weight,
    has_mask,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """The pairs `pair` (< n_pairs where ok): store logits, errors and gradient scales; return the terms the
    batch metrics sum: (ok, w·loss, z, E_θ(w), E_θ(l), E_ref(w), E_ref(l))."""
    ok = pair < n_pairs
    win, lose = pair, pair + n_pairs
    stride_q = 2 * n_pairs * n_chunks
    if has_mask:
        den_w = _sum_rows(partial_ptr + 2 * stride_q, win, ok, n_chunks, BLOCK_B, BLOCK_C)
        den_l = _sum_rows(partial_ptr + 2 * stride_q, lose, ok, n_chunks, BLOCK_B, BLOCK_C)
        den_w = tl.where(ok, den_w, 1.0)  # padding lanes: avoid 0/0
        den_l = tl.where(ok, den_l, 1.0)
    else:
        den_w = tl.zeros([BLOCK_B], dtype=tl.float32) + n_per_sample
        den_l = den_w
    pw = _sum_rows(partial_ptr, win, ok, n_chunks, BLOCK_B, BLOCK_C) / den_w
    pl = _sum_rows(partial_ptr, lose, ok, n_chunks, BLOCK_B, BLOCK_C) / den_l
    if has_ref_err:
        rw = tl.load(ref_err_ptr + win, mask=ok, other=0.0).to(tl.float32)
        rl = tl.load(ref_err_ptr + lose, mask=ok, other=0.0).to(tl.float32)
    else:
        rw = _sum_rows(partial_ptr + stride_q, win, ok, n_chunks, BLOCK_B, BLOCK_C) / den_w
        rl = _sum_rows(partial_ptr + stride_q, lose, ok, n_chunks, BLOCK_B, BLOCK_C) / den_l
    h = (rw - pw) - (rl - pl)
    z = beta * h
    if loss_type == 0:  # LOSS_SIGMOID
        loss = (1.0 - label_smoothing) * _softplus(-z) + label_smoothing * _softplus(z)
        dloss_dh = beta * (label_smoothing * _sigmoid(z) - (1.0 - label_smoothing) * _sigmoid(-z))
    elif loss_type == 1:  # LOSS_HINGE
        loss = tl.maximum(1.0 - z, 0.0)
        dloss_dh = tl.where(z < 1.0, -beta, 0.0)
    else:  # LOSS_IPO
        centred = h - 0.5 / beta
        loss = centred * centred
        dloss_dh = 2.0 * centred
    if has_weight:
        w = tl.load(weight_ptr + pair, mask=ok, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_B], dtype=tl.float32) + 1.0
    # dL/dE_θ(w) = -w·dloss/dh / B, dL/dE_θ(l) = +w·dloss/dh / B; dE/dp = 2m(p - t)/den.
    g = w * dloss_dh / n_pairs
    tl.store(scale_ptr + win, -2.0 * g / den_w, mask=ok)
    tl.store(scale_ptr + lose, 2.0 * g / den_l, mask=ok)
    tl.store(logits_ptr + pair, z, mask=ok)
    tl.store(errors_ptr + win, pw, mask=ok)
    tl.store(errors_ptr + lose, pl, mask=ok)
    tl.store(errors_ptr + 2 * n_pairs + win, rw, mask=ok)
    tl.store(errors_ptr + 2 * n_pairs + lose, rl, mask=ok)
    return ok, w * loss, z, pw, pl, rw, rl


# One tiny program, the pairs in fixed-size blocks and every flag a runtime value: one compiled variant
# serves every loss type, reference source, weighting, mask and batch size.
@triton.jit(do_not_specialize=["n_pairs", "n_chunks", "loss_type", "has_ref_err", "has_weight", "has_mask"])
def dpo_finalize_kernel(
    partial_ptr,
    ref_err_ptr,
    weight_ptr,
    loss_ptr,
    stats_ptr,
    logits_ptr,
    errors_ptr,
    scale_ptr,
    n_pairs,
    n_chunks,
    n_per_sample,
    beta,
    label_smoothing,
    loss_type,
    has_ref_err,
    has_weight,
    has_mask,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    zero = tl.zeros([BLOCK_B], dtype=tl.float32)
    acc_loss, acc_right, acc_margin, acc_z = zero, zero, zero, zero
    acc_pw, acc_pl, acc_rw, acc_rl = zero, zero, zero, zero
    for b0 in range(0, n_pairs, BLOCK_B):
        ok, wloss, z, pw, pl, rw, rl = _pair_block(
            partial_ptr,
            ref_err_ptr,
            weight_ptr,
            logits_ptr,
            errors_ptr,
            scale_ptr,
            b0 + tl.arange(0, BLOCK_B),
            n_pairs,
            n_chunks,
            n_per_sample,
            beta,
            label_smoothing,
            loss_type,
            has_ref_err,
            has_weight,
            has_mask,
            BLOCK_B,
            BLOCK_C,
        )
        acc_loss += tl.where(ok, wloss, 0.0)
        acc_right += tl.where(ok & (z > 0), 1.0, tl.where(ok & (z == 0), 0.5, 0.0))  # a tie counts 1/2
        acc_margin += tl.where(ok, pl - pw, 0.0)
        acc_z += tl.where(ok, z, 0.0)
        acc_pw += tl.where(ok, pw, 0.0)
        acc_pl += tl.where(ok, pl, 0.0)
        acc_rw += tl.where(ok, rw, 0.0)
        acc_rl += tl.where(ok, rl, 0.0)
    inv_b = 1.0 / n_pairs
    tl.store(loss_ptr, tl.sum(acc_loss, axis=0) * inv_b)
    # stats: the metrics after the loss, in reference.STAT_NAMES order
    tl.store(stats_ptr + 0, tl.sum(acc_right, axis=0) * inv_b)
    tl.store(stats_ptr + 1, tl.sum(acc_margin, axis=0) * inv_b)
    tl.store(stats_ptr + 2, tl.sum(acc_z, axis=0) * inv_b)
    tl.store(stats_ptr + 3, tl.sum(acc_pw, axis=0) * inv_b)
    tl.store(stats_ptr + 4, tl.sum(acc_pl, axis=0) * inv_b)
    tl.store(stats_ptr + 5, tl.sum(acc_rw, axis=0) * inv_b)
    tl.store(stats_ptr + 6, tl.sum(acc_rl, axis=0) * inv_b)


@triton.jit
def _grad_step(
    policy,
    target,
    grad,
    mask,
    o,
    limit,
    local,
    n_per_sample,
    scale_cur,
    scale_prev,
    ms_sample,
    mdiv0,
    msize0,
    mstride0,
    mdiv1,
    msize1,
    mstride1,
    mdiv2,
    msize2,
    mstride2,
    HAS_MASK: tl.constexpr,
    MASK_TERMS: tl.constexpr,
):
    """grad[o] <- scale·m·(p - t) at offsets o < limit; local < 0 marks the previous sample's elements."""
    ok = o < limit
    prev = local < 0
    g = tl.load(policy + o, mask=ok, other=0.0).to(tl.float32) - tl.load(target + o, mask=ok, other=0.0).to(
        tl.float32
    )
    g = g * tl.where(prev, scale_prev, scale_cur)
    if HAS_MASK:
        in_sample = tl.where(prev, local + n_per_sample, local)
        moff = tl.where(prev, -ms_sample, 0) + _mask_offsets(
            in_sample, mdiv0, msize0, mstride0, mdiv1, msize1, mstride1, mdiv2, msize2, mstride2, MASK_TERMS
        )
        g = g * tl.load(mask + moff, mask=ok, other=0).to(tl.float32)
    tl.store(grad + o, g.to(grad.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=_SIZES)
def dpo_grad_kernel(
    policy_ptr,
    target_ptr,
    mask_ptr,
    scale_ptr,
    grad_out_ptr,
    grad_ptr,
    n_per_sample,
    n_total,
    chunk,
    n_chunks,
    n_samples,
    ms_sample,
    mdiv0,
    msize0,
    mstride0,
    mdiv1,
    msize1,
    mstride1,
    mdiv2,
    msize2,
    mstride2,
    HAS_MASK: tl.constexpr,
    MASK_TERMS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Program (s, c) writes the flat range [A(s, c), A(s, c + 1)) with A(s, c) = the aligned index at or
    # below s·n + c·chunk: the ranges tile the tensor, and one holds elements of samples s - 1 and s only.
    sample = tl.program_id(0)
    chunk_id = tl.program_id(1)
    sample_start = sample.to(tl.int64) * n_per_sample
    start = (sample_start + chunk_id * chunk) // ALIGN * ALIGN
    stop = (sample_start + tl.minimum((chunk_id + 1) * chunk, n_per_sample)) // ALIGN * ALIGN
    length = (stop - start).to(tl.int32)
    shift = (start - sample_start).to(tl.int32)  # in [-15, n): negative = the previous sample's tail
    policy, target, grad = policy_ptr + start, target_ptr + start, grad_ptr + start
    mask = mask_ptr + sample.to(tl.int64) * ms_sample
    g_out = tl.load(grad_out_ptr).to(tl.float32)
    scale_cur = tl.load(scale_ptr + sample) * g_out
    scale_prev = tl.load(scale_ptr + tl.maximum(sample - 1, 0)) * g_out
    for off in range(0, length, BLOCK):
        o = off + tl.arange(0, BLOCK)
        _grad_step(
            policy,
            target,
            grad,
            mask,
            o,
            length,
            shift + o,
            n_per_sample,
            scale_cur,
            scale_prev,
            ms_sample,
            mdiv0,
            msize0,
            mstride0,
            mdiv1,
            msize1,
            mstride1,
            mdiv2,
            msize2,
            mstride2,
            HAS_MASK,
            MASK_TERMS,
        )
    if (sample == n_samples - 1) & (chunk_id == n_chunks - 1):  # the tensor's last < 16 elements
        o = length + tl.arange(0, ALIGN)
        _grad_step(
            policy,
            target,
            grad,
            mask,
            o,
            (n_total - start).to(tl.int32),
            shift + o,
            n_per_sample,
            scale_cur,
            scale_prev,
            ms_sample,
            mdiv0,
            msize0,
            mstride0,
            mdiv1,
            msize1,
            mstride1,
            mdiv2,
            msize2,
            mstride2,
            HAS_MASK,
            MASK_TERMS,
        )
