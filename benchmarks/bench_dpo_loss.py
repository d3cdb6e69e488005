"""Diffusion-DPO loss, forward + backward: eager PyTorch vs torch.compile vs the fused Triton kernel.

Shapes: 4 preference pairs of CogVideoX latents [8, 13, 16, 60, 90], Wan 2.2 latents [8, 16, 21, 60, 104]
(bf16), and Wan image-to-video with its first latent frame masked out; on a CPU, `--size small` through
Triton's interpreter (the plumbing, not speed). Every baseline runs in the same process on the same inputs.

Byte floor: the forward reads policy, ref and target once; the backward reads policy and target and writes
the gradient -> 6 passes over 2B·n elements; floor time = bytes / the device's measured copy bandwidth.
FLOPs are negligible (≈ 8 per element): the op is memory-bound, so L2 is flushed before every timed run.
Times: one synchronised call (launch overhead included) and the device time (CUDA-graph replay, or the
profiler's kernel sum where a variant cannot be captured); extra memory includes the gradient.

    python benchmarks/bench_dpo_loss.py [--size small|cogvideox|wan|wan_i2v|all] [--no-compile] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # the kernel can only run through the interpreter on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import append_results, copy_bandwidth, environment, measure, print_table  # noqa: E402

from videogpa.kernels.dpo_loss import diffusion_dpo_loss  # noqa: E402

SHAPES = {  # name -> (shape, mask over it or None)
    "small": ((8, 3, 4, 8, 12), None),
    "cogvideox": ((8, 13, 16, 60, 90), None),
    "wan": ((8, 16, 21, 60, 104), None),
    "wan_i2v": ((8, 16, 21, 60, 104), "first_frame"),
}


def make_mask(kind: str | None, shape, device) -> torch.Tensor | None:
    """Wan image-to-video: the first latent frame is the clean image and is left out of the loss."""
    if kind is None:
        return None
    mask = torch.ones(1, 1, shape[2], 1, 1, device=device)
    mask[:, :, 0] = 0
    return mask


def make_step(backend: str, policy, ref, target, mask, compiled: bool):
    def loss_fn(p):
        return diffusion_dpo_loss(p, ref, target, 1.0, mask=mask, backend=backend).loss

    fn = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        policy.grad = None
        fn(policy).backward()

    return step


def bench_shape(name: str, device, dtype, compile_baseline: bool, bandwidth: float) -> list[dict]:
    shape, mask_kind = SHAPES[name]
    gen = torch.Generator(device=device).manual_seed(0)
    policy = torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_(True)
    ref = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    target = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    mask = make_mask(mask_kind, shape, device)
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
            step = make_step(backend, policy, ref, target, mask, compiled)
            fields, seconds = measure(
                step,
                device,
                iters=iters,
                warmup=3 if compiled else 2,
                flush=True,
                reset=lambda: setattr(policy, "grad", None),
                capturable=not compiled,
            )
        except Exception as err:  # a missing compiler must not hide the other rows
            print(f"[{label}] failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        rows.append(
            {
                "bench": "dpo_loss_fwd_bwd",
                "variant": label,
                "shape": name + str(list(shape)),
                "mask": mask_kind,
                "dtype": str(dtype).removeprefix("torch."),
                **fields,
                "floor_bytes": floor_bytes,
                "floor_us": floor_s * 1e6,
                "x_floor": seconds / floor_s,
                "achieved_GBps": floor_bytes / seconds / 1e9,
            }
        )
    eager = next((r for r in rows if r["variant"] == "eager"), None)
    key = "device_us" if device.type == "cuda" else "call_us"
    for row in rows:
        row["speedup_vs_eager"] = None if eager is None else eager[key] / row[key]
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
    names = ["cogvideox", "wan", "wan_i2v"] if size == "all" else [size]
    bandwidth = copy_bandwidth(device)
    print(f"device: {environment(device)}")
    print(f"measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    rows = []
    for name in names:
        rows += bench_shape(name, device, torch.bfloat16, not args.no_compile, bandwidth)
    columns = ["variant", "shape", "mask", "call_us", "device_us", "device_us_p90", "extra_MB", "floor_us"]
    print_table(rows, columns + ["x_floor", "achieved_GBps", "speedup_vs_eager"])
    if device.type == "cpu":
        print("note: on a CPU the Triton row runs through the interpreter; it checks the path, not speed.")
    if not args.no_save:
        print(f"appended {len(rows)} rows to {append_results('dpo_loss', rows, device)}")
    return rows


if __name__ == "__main__":
    main()
