"""Diffusion-DPO loss, forward + backward: eager PyTorch vs torch.compile vs the fused Triton kernel.

Shapes: 4 preference pairs of CogVideoX latents [8, 13, 16, 60, 90] and Wan 2.2 latents
[8, 16, 21, 60, 104], bf16 (on a CPU, `--size small` through Triton's interpreter: correctness of the
plumbing, not speed). Byte floor: the forward reads policy, ref and target once; the backward reads
policy and target and writes the gradient -> 6 passes over 2B·n elements; floor time = bytes / the
device's measured copy bandwidth. FLOPs are negligible (≈ 8 per element): the op is memory-bound.

    python benchmarks/bench_dpo_loss.py [--size small|cogvideox|wan|all] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # the kernel can only run through the interpreter on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import append_results, environment, extra_memory_bytes, print_table, time_fn  # noqa: E402

from videogpa.kernels import diffusion_dpo_loss  # noqa: E402

SHAPES = {
    "small": (8, 3, 4, 8, 12),
    "cogvideox": (8, 13, 16, 60, 90),
    "wan": (8, 16, 21, 60, 104),
}


def copy_bandwidth(device: torch.device) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted)."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    seconds = time_fn(lambda: y.copy_(x), device, warmup=2, iters=5)
    return 2 * x.numel() / seconds


def make_step(backend: str, policy, ref, target, compiled: bool):
    def loss_fn(p):
        return diffusion_dpo_loss(p, ref, target, 1.0, backend=backend).loss

    fn = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        policy.grad = None
        fn(policy).backward()

    return step


def bench_shape(name: str, shape, device, dtype, compile_baseline: bool, bandwidth: float) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    policy = torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_(True)
    ref = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    target = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    floor_bytes = 6 * policy.numel() * policy.element_size()
    floor_s = floor_bytes / bandwidth
    variants = [("eager", "torch", False)]
    if compile_baseline:
        variants.append(("torch.compile", "torch", True))
    variants.append(("triton", "triton", False))
    rows = []
    iters = 20 if device.type == "cuda" else 3
    for label, backend, compiled in variants:
        try:
            step = make_step(backend, policy, ref, target, compiled)
            seconds = time_fn(step, device, warmup=3 if compiled else 2, iters=iters)
            extra = extra_memory_bytes(step, device)
        except Exception as err:  # a missing compiler must not hide the other rows
            print(f"[{label}] failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        rows.append(
            {
                "bench": "dpo_loss_fwd_bwd",
                "variant": label,
                "shape": name + str(list(shape)),
                "dtype": str(dtype).removeprefix("torch."),
                "time_us": seconds * 1e6,
                "extra_MB": None if extra is None else extra / 1e6,
                "floor_bytes": floor_bytes,
                "floor_us": floor_s * 1e6,
                "x_floor": seconds / floor_s,
                "achieved_GBps": floor_bytes / seconds / 1e9,
            }
        )
    eager_time = rows[0]["time_us"] if rows and rows[0]["variant"] == "eager" else None
    for row in rows:
        row["speedup_vs_eager"] = None if eager_time is None else eager_time / row["time_us"]
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=[*SHAPES, "all"], default=None, help="default: all on GPU, small on CPU"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-save", action="store_true", help="do not append rows to benchmarks/results/")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("all" if device.type == "cuda" else "small")
    names = ["cogvideox", "wan"] if size == "all" else [size]
    bandwidth = copy_bandwidth(device)
    print(f"device: {environment(device)}")
    print(f"measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    rows = []
    for name in names:
        rows += bench_shape(name, SHAPES[name], device, torch.bfloat16, not args.no_compile, bandwidth)
    columns = [
        "variant",
        "shape",
        "time_us",
        "extra_MB",
        "floor_us",
        "x_floor",
        "achieved_GBps",
        "speedup_vs_eager",
    ]
    print_table(rows, columns)
    if device.type == "cpu":
        print("note: on a CPU the Triton row runs through the interpreter; it checks the path, not speed.")
    if not args.no_save:
        print(f"appended {len(rows)} rows to {append_results('dpo_loss', rows, device)}")
    return rows


if __name__ == "__main__":
    main()
