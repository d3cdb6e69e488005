"""Triton kernels of the nearest-point reprojection (two launches, deterministic).

1. `zbuffer_kernel`, grid (point blocks,): each program loads its points once and, for every view, folds
   P = K·[R|t] (12 scalars, the reference's formula), projects the points and does a 64-bit atomic-min of
   key = (float bits of z, point index) into zbuf [T·H·W]. z > 0, so the float bits order like the depths;
   the minimum key is the nearest point, the lowest index on ties — the same result in any execution
   order. So the atomics are relaxed (no fence, no L1 invalidation): min is order-free, and the kernel
   boundary orders them before the resolve. Rounding is round-half-even in one instruction (libdevice
   rint); the interpreter, which has no libdevice, runs an exact emulation of the same function.
2. `resolve_kernel`, grid (T, pixel blocks): decodes the winner of each pixel, quantises its colour
   (⌊255·c⌋, the authors' uint8 truncation) and writes images and hit, and/or (fused) the per-block sums
   of (reprojection in [0, 1] − frame)² without storing the images.

Byte floor: read the points (12 B each), write + read the 8-byte z-buffer, gather the winners' colours,
write the outputs (12 B + 1 B per pixel) or read the frames (12 B per pixel in fp32).
"""

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

EMPTY_KEY = tl.constexpr(9223372036854775807)  # int64 max; jit code may only read constexpr globals
INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def _round_half_even(x):
    """torch.round for fp32: nearest integer, halves to even."""
    if INTERPRETED:
        f = tl.floor(x)
        d = x - f
        odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
        r = f + tl.where((d > 0.5) | ((d == 0.5) & odd), 1.0, 0.0)
    else:
        r = libdevice.rint(x)  # cvt.rni: one FRND instruction
    return r


@triton.jit
def _projection_row(k, e):
    """Row (K[i,0], K[i,1], K[i,2]) · [R|t] as 4 scalars, in the reference's order."""
    k0, k1, k2 = tl.load(k), tl.load(k + 1), tl.load(k + 2)
    p0 = k0 * tl.load(e + 0) + k1 * tl.load(e + 4) + k2 * tl.load(e + 8)
    p1 = k0 * tl.load(e + 1) + k1 * tl.load(e + 5) + k2 * tl.load(e + 9)
    p2 = k0 * tl.load(e + 2) + k1 * tl.load(e + 6) + k2 * tl.load(e + 10)
    p3 = k0 * tl.load(e + 3) + k1 * tl.load(e + 7) + k2 * tl.load(e + 11)
    return p0, p1, p2, p3


@triton.jit(do_not_specialize=["n_points", "n_views", "height", "width", "extr_stride"])  # one variant
def zbuffer_kernel(
    points_ptr,
    intr_ptr,
    extr_ptr,
    zbuf_ptr,
    n_points,
    n_views,
    height,
    width,
    extr_stride,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = idx < n_points
    row = points_ptr + idx.to(tl.int64) * 3  # 64-bit offsets: 3·N may exceed 2**31
    x = tl.load(row, mask=ok, other=0.0)
    y = tl.load(row + 1, mask=ok, other=0.0)
    w = tl.load(row + 2, mask=ok, other=0.0)
    n_pixels = height * width
    zbuf_view = zbuf_ptr  # advanced per view in 64-bit pointer arithmetic: T·H·W may exceed 2**31
    e = extr_ptr
    k = intr_ptr
    for _ in range(n_views):
        a0, a1, a2, a3 = _projection_row(k, e)
        b0, b1, b2, b3 = _projection_row(k + 3, e)
        c0, c1, c2, c3 = _projection_row(k + 6, e)
        px = a0 * x + a1 * y + a2 * w + a3
        py = b0 * x + b1 * y + b2 * w + b3
        pz = c0 * x + c1 * y + c2 * w + c3
        denom = pz + 1e-8
        u = _round_half_even(tl.math.div_rn(px, denom))
        v = _round_half_even(tl.math.div_rn(py, denom))
        lands = ok & (pz > 0.0) & (u >= 0.0) & (u < width) & (v >= 0.0) & (v < height)
        pixel = tl.where(lands, v, 0.0).to(tl.int32) * width + tl.where(lands, u, 0.0).to(tl.int32)
        key = (tl.where(lands, pz, 1.0).to(tl.int32, bitcast=True).to(tl.int64) << 32) | idx.to(tl.int64)
        tl.atomic_min(zbuf_view + pixel, key, mask=lands, sem="relaxed")
        zbuf_view += n_pixels
        e += extr_stride
        k += 9


@triton.jit(do_not_specialize=["n_pixels", "n_blocks"])  # one variant per flag set and frame dtype
def resolve_kernel(
    zbuf_ptr,
    colors_ptr,
    images_ptr,
    hit_ptr,
    frames_ptr,
    partial_ptr,
    n_pixels,
    n_blocks,
    WRITE_IMAGES: tl.constexpr,
    COMPUTE_ERROR: tl.constexpr,
    BLOCK: tl.constexpr,
):
    view = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    pix = block * BLOCK + tl.arange(0, BLOCK)
    ok = pix < n_pixels
    key = tl.load(zbuf_ptr + view * n_pixels + pix, mask=ok, other=EMPTY_KEY)
    hit = key != EMPTY_KEY
    winner = tl.where(hit, key & 0x7FFFFFFF, 0)  # point indices are < 2**31
    if WRITE_IMAGES:
        tl.store(hit_ptr + view * n_pixels + pix, hit.to(tl.uint8), mask=ok)
    err = tl.zeros([BLOCK], dtype=tl.float32)
    levels_per_unit = tl.full([BLOCK], 255.0, tl.float32)
    for c in range(3):
        color = tl.load(colors_ptr + winner * 3 + c, mask=ok & hit, other=0.0).to(tl.float32)
        level = tl.floor(tl.minimum(tl.maximum(color * 255.0, 0.0), 255.0))
        value = tl.math.div_rn(level, levels_per_unit) * 2.0 - 1.0  # IEEE division, as torch
        out = (view * 3 + c) * n_pixels + pix
        if WRITE_IMAGES:
            tl.store(images_ptr + out, value, mask=ok)
        if COMPUTE_ERROR:
            frame = tl.load(frames_ptr + out, mask=ok, other=0.0).to(tl.float32)
            diff = (value + 1.0) * 0.5 - frame
            err += tl.where(ok, diff * diff, 0.0)
    if COMPUTE_ERROR:
        tl.store(partial_ptr + view * n_blocks + block, tl.sum(err, axis=0))
