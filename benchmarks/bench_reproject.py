"""Point-cloud reprojection (3DCS render): the authors' painter's algorithm vs a PyTorch z-buffer vs the
Triton kernel (render, and the fused per-view error that never stores the images).

Paper setting: T = 10 views of 518×518, one cloud of all T·H·W = 2.68 M points rendered into every view
(on a CPU, `--size small` runs the kernel through Triton's interpreter: the path, not speed). Goal on an
H100: ≤ 0.5 ms, deterministic, extra memory no larger than the outputs. Every baseline (the painter's
algorithm in plain PyTorch, the PyTorch z-buffer) runs in the same process on the same scene.
Times: one synchronised call (launch overhead included) and the device time (CUDA-graph replay, or the
profiler's kernel sum where a variant synchronises with the host), L2 flushed before every run.

Byte floor of the render (what cannot be avoided): read the points once (12 B each), one 8-byte atomic
read-modify-write per landing point per view (16 B), initialise and read back the 8-byte z-buffer
(16 B per pixel), gather the winners' colours (12 B per covered pixel) and write the images and hit
(13 B per pixel); floor time = bytes / the device's measured copy bandwidth. The painter's baseline also
reports how many covered pixels it gives a non-nearest point (it is not deterministic on a GPU).

    python benchmarks/bench_reproject.py [--size small|paper] [--views T --height H --width W]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

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

from videogpa.kernels.reproject import render_point_cloud, reprojection_error  # noqa: E402
from videogpa.kernels.reproject.reference import project  # noqa: E402

SIZES = {"small": (4, 48, 64), "paper": (10, 518, 518)}


def make_scene(n_views: int, height: int, width: int, device: torch.device):
    """A VGGT-like prediction: a smooth depth map per frame unprojected with a slowly orbiting camera."""
    g = torch.Generator().manual_seed(0)
    coarse = 2.5 + 0.8 * torch.rand(n_views, 1, 6, 8, generator=g)
    depth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[:, 0]
    focal = 0.95 * width
    k = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]).repeat(
        n_views, 1, 1
    )
    angle = torch.linspace(0.0, 0.2, n_views)
    extr = torch.zeros(n_views, 3, 4)
    extr[:, 0, 0], extr[:, 0, 2], extr[:, 1, 1] = angle.cos(), angle.sin(), 1.0
    extr[:, 2, 0], extr[:, 2, 2] = -angle.sin(), angle.cos()
    extr[:, 0, 3] = -0.3 * angle
    v, u = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    cam = torch.stack([(u - width / 2) * depth / focal, (v - height / 2) * depth / focal, depth], -1)
    world = torch.einsum("tji,thwj->thwi", extr[:, :, :3], cam - extr[:, None, None, :, 3])
    colors = torch.rand(n_views * height * width, 3, generator=g)
    return world.reshape(-1, 3).to(device), colors.to(device), k.to(device), extr.to(device)


def painter(points, colors, intrinsics, extrinsics, height: int, width: int) -> torch.Tensor:
    """The authors' algorithm re-implemented: per view, sort far to near and index-assign the uint8 colours
    (the last write should win; with repeated indices the GPU does not guarantee which one does)."""
    levels = (colors * 255.0).clamp(0, 255).to(torch.uint8)
    canvases = []
    for view in range(intrinsics.shape[0]):
        cam = points @ extrinsics[view, :, :3].T + extrinsics[view, :, 3]
        proj = cam @ intrinsics[view].T
        z = proj[:, 2]
        u = torch.round(proj[:, 0] / (z + 1e-8)).long()
        v = torch.round(proj[:, 1] / (z + 1e-8)).long()
        keep = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (z > 0)
        order = torch.argsort(z[keep], descending=True)
        canvas = torch.zeros(height, width, 3, dtype=torch.uint8, device=points.device)
        canvas[v[keep][order], u[keep][order]] = levels[keep][order]
        canvases.append(canvas)
    return torch.stack(canvases).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0


def floor_bytes(points, intrinsics, extrinsics, height: int, width: int, hit: torch.Tensor) -> int:
    z, u, v = project(points, intrinsics, extrinsics)
    landing = int(((z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)).sum())
    pixels = hit.numel()
    return 12 * points.shape[0] + 16 * landing + 16 * pixels + 12 * int(hit.sum()) + 13 * pixels


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=list(SIZES), default=None, help="default: paper on GPU, small on CPU"
    )
    parser.add_argument("--views", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--no-save", action="store_true", help="do not append rows to benchmarks/results/")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_views, height, width = SIZES[args.size or ("paper" if device.type == "cuda" else "small")]
    n_views, height, width = args.views or n_views, args.height or height, args.width or width
    points, colors, intr, extr = make_scene(n_views, height, width, device)
    frames = torch.rand(n_views, 3, height, width, device=device)
    bandwidth = copy_bandwidth(device)
    print(f"device: {environment(device)}")
    print(
        f"T={n_views} views of {height}x{width}, {points.shape[0]:,} points; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s"
    )

    truth, hit = render_point_cloud(points, colors, intr, extr, height, width, backend="torch")
    floor = floor_bytes(points, intr, extr, height, width, hit)
    output_bytes = truth.numel() * 4 + hit.numel()
    variants = {
        "painter (authors)": lambda: painter(points, colors, intr, extr, height, width),
        "torch z-buffer": lambda: render_point_cloud(
            points, colors, intr, extr, height, width, backend="torch"
        ),
        "triton render": lambda: render_point_cloud(
            points, colors, intr, extr, height, width, backend="triton"
        ),
        "triton fused error": lambda: reprojection_error(
            points, colors, intr, extr, frames, backend="triton"
        ),
    }
    rows = []
    iters = 20 if device.type == "cuda" else 3
    for label, fn in variants.items():
        try:
            # the PyTorch variants index with boolean masks (host syncs): profiler times, not graphs
            fields, seconds = measure(
                fn, device, iters=iters, flush=True, capturable=label.startswith("triton")
            )
            out = fn()
        except Exception as err:  # one failing variant must not hide the others
            print(f"[{label}] failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        images = out[0] if isinstance(out, tuple) else out
        wrong = None
        if images.shape == truth.shape:
            wrong = float(((images != truth).any(dim=1) & hit).sum() / hit.sum())
        row = {
            "bench": "reproject",
            "variant": label,
            "shape": f"T{n_views}x{height}x{width} N{points.shape[0]}",
            **fields,
            "time_ms": seconds * 1e3,
            "output_MB": output_bytes / 1e6,
            "floor_MB": floor / 1e6,
            "floor_ms": floor / bandwidth * 1e3,
            "x_floor": seconds / (floor / bandwidth),
            "wrong_pixel_frac": wrong,
        }
        base = next((r["time_ms"] for r in rows if r["variant"].startswith("painter")), None)
        row["speedup_vs_painter"] = None if base is None else base / row["time_ms"]
        rows.append(row)
        if not args.no_save:  # as soon as measured: a run stopped by a time limit keeps what it has
            append_results("reproject", [row], device)
    columns = [
        "variant",
        "shape",
        "call_us",
        "time_ms",
        "extra_MB",
        "output_MB",
        "floor_ms",
        "x_floor",
        "wrong_pixel_frac",
        "speedup_vs_painter",
    ]
    print_table(rows, columns)
    print(
        f"floor: {floor / 1e6:.1f} MB moved (points, atomics, z-buffer, colour gather, outputs) -> "
        f"{floor / bandwidth * 1e3:.3f} ms at the measured bandwidth; outputs {output_bytes / 1e6:.1f} MB"
    )
    if device.type == "cpu":
        print("note: on a CPU the Triton rows run through the interpreter; they check the path, not speed.")
    if not args.no_save:
        print(f"appended {len(rows)} rows, one at a time, to {RESULTS_DIR / 'reproject.jsonl'}")
    return rows


if __name__ == "__main__":
    main()
