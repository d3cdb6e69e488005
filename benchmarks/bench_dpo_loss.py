"""Diffusion-DPO loss, forward + backward: eager PyTorch vs torch.compile vs the fused Triton kernel.

Shapes: 4 preference pairs of CogVideoX latents [8, 13, 16, 60, 90], Wan 2.2 latents [8, 16, 21, 60, 104]
(bf16), and Wan image-to-video with its first latent frame masked out; on a CPU, `--size small` through
Triton's interpreter (the plumbing, not speed). Every baseline runs in the same process on the same inputs.

Byte floor: the forward reads policy, ref and target once; the backward reads policy and target and writes
the gradient -> 6 passes over 2B·n elements; floor time = bytes / the device's measured copy bandwidth.
FLOPs are negligible (≈ 8 per element): the op is memory-bound, so L2 is flushed before every timed run.
Times: one synchronised call (launch overhead included) and the device time (CUDA-graph replay, or the
profiler's kernel sum where a variant cannot be captured); extra memory includes the gradient.

    python benchmarks/bench_dpo_loss.py [--size small|cogvideox|wan|wan_i2v|all]
                                        [--variants eager,triton,compile] [--no-compile] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # the kernel can only run through the interpreter on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    RESULTS_DIR,
    append_results,
    copy_bandwidth,
    environment,
    measure,
    print_table,
)

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


VARIANTS = {"eager": ("torch", False), "triton": ("triton", False), "compile": ("torch", True)}
LABELS = {"eager": "eager", "triton": "triton", "compile": "torch.compile"}


def make_inputs(name: str, device, dtype):
    shape, mask_kind = SHAPES[name]
    gen = torch.Generator(device=device).manual_seed(0)
    policy = torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_(True)
    ref = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    target = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    return policy, ref, target, make_mask(mask_kind, shape, device)


def bench_variant(name: str, variant: str, inputs, device, bandwidth: float) -> dict | None:
    """One row: the variant's fwd+bwd on the shape's inputs, or None when it fails (printed; a missing
    compiler must not hide the other rows)."""
    shape, mask_kind = SHAPES[name]
    policy, ref, target, mask = inputs
    backend, compiled = VARIANTS[variant]
    floor_bytes = 6 * policy.numel() * policy.element_size()
    floor_s = floor_bytes / bandwidth
    try:
        step = make_step(backend, policy, ref, target, mask, compiled)
        fields, seconds = measure(
            step,
            device,
            iters=20 if device.type == "cuda" else 3,
            warmup=3 if compiled else 2,
            flush=True,
            reset=lambda: setattr(policy, "grad", None),
            capturable=not compiled,
        )
    except Exception as err:
        print(f"[{LABELS[variant]} {name}] failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None
    return {
        "bench": "dpo_loss_fwd_bwd",
        "variant": LABELS[variant],
        "shape": name + str(list(shape)),
        "mask": mask_kind,
        "dtype": str(policy.dtype).removeprefix("torch."),
        **fields,
        "floor_bytes": floor_bytes,
        "floor_us": floor_s * 1e6,
        "x_floor": seconds / floor_s,
        "achieved_GBps": floor_bytes / seconds / 1e9,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=[*SHAPES, "all"], default=None, help="default: all on GPU, small on CPU"
    )
    parser.add_argument(
        "--variants",
        default="eager,triton,compile",
        help="comma-separated subset of eager, triton, compile (default: all). Every shape's eager and "
        "triton rows come first; the compile rows (slow to compile) after them",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-save", action="store_true", help="do not append rows to benchmarks/results/")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {list(VARIANTS)}")
    if args.no_compile:
        variants = [v for v in variants if v != "compile"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("all" if device.type == "cuda" else "small")
    names = ["cogvideox", "wan", "wan_i2v"] if size == "all" else [size]
    bandwidth = copy_bandwidth(device)
    print(f"device: {environment(device)}")
    print(f"measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s")
    key = "device_us" if device.type == "cuda" else "call_us"
    eager: dict[str, float] = {}  # shape -> eager time, for the speed-ups
    rows = []
    # Each row is appended as soon as it is measured: a run stopped by a time limit keeps what it has.
    passes = [[v for v in variants if v != "compile"], [v for v in variants if v == "compile"]]
    for pass_variants in passes:
        for name in names:
            if not pass_variants:
                continue
            inputs = make_inputs(name, device, torch.bfloat16)
            for variant in pass_variants:
                row = bench_variant(name, variant, inputs, device, bandwidth)
                if row is None:
                    continue
                if variant == "eager":
                    eager[name] = row[key]
                row["speedup_vs_eager"] = eager[name] / row[key] if name in eager else None
                rows.append(row)
                if not args.no_save:
                    append_results("dpo_loss", [row], device)
            del inputs
    columns = ["variant", "shape", "mask", "call_us", "device_us", "device_us_p90", "extra_MB", "floor_us"]
    print_table(rows, columns + ["x_floor", "achieved_GBps", "speedup_vs_eager"])
    if device.type == "cpu":
        print("note: on a CPU the Triton row runs through the interpreter; it checks the path, not speed.")
    if not args.no_save:
        print(f"appended {len(rows)} rows, one at a time, to {RESULTS_DIR / 'dpo_loss.jsonl'}")
    return rows


if __name__ == "__main__":
    main()
