"""Video scoring throughput: VGGT (random weights) + point cloud + reprojection kernel + metrics.

Full size (GPU): the VGGT-1B architecture, T = 10 frames of 518², bf16 autocast trunk and float32 heads
(as the authors run it), batches of 1 and 4 videos per call. Rows: VGGT alone, and VGGT + the whole
score (engine.geometry.scoring: depth-confidence-filtered cloud of the point head's world points →
nearest-point reprojection kernel into every frame → metrics), in videos/s, with the peak extra GPU memory,
and, measured in the same run as a baseline, the whole score with the plain-PyTorch z-buffer render.
`--small` runs the tiny config on the CPU in seconds (plumbing, not speed). Times: one synchronised call
(what a scorer sees; videos/s come from it) and the device time (CUDA-graph replay, or the profiler's
kernel sum where the score synchronises with the host), each a median with its 10th-90th percentiles.

    python benchmarks/bench_vggt.py [--small] [--frames 10] [--batches 1,4] [--dtype bf16] [--iters N]
                                    [--warmup N] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if not torch.cuda.is_available():  # the reprojection kernel can only run through the interpreter on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS_DIR, append_results, measure, print_table  # noqa: E402

from videogpa.engine.geometry.scoring import score_reconstruction  # noqa: E402
from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGT, VGGTConfig  # noqa: E402
from videogpa.engine.geometry.vggt.geometry_model import geometry_from_outputs  # noqa: E402
from videogpa.engine.types import resolve_compute_dtype  # noqa: E402

RUNS = {  # row name -> score_reconstruction(image_metrics=..., backend=...); None = the VGGT forward alone
    "vggt": (None, "auto"),
    "vggt+score": (False, "auto"),  # fused reprojection-MSE kernel + MVCS + motion: what pair selection needs
    "vggt+score+images": (True, "auto"),  # renders + MSE/PSNR/SSIM + MVCS + motion
    # baseline, the same run: the same scores with the plain-PyTorch z-buffer render instead of the kernels
    "vggt+score+images [torch render]": (True, "torch"),
}


def make_run(model: VGGT, videos: torch.Tensor, dtype: torch.dtype, image_metrics: bool | None, backend: str):
    """One callable over a batch of videos: VGGT forward, then (unless image_metrics is None) every score."""
    device = videos.device

    @torch.inference_mode()
    def run():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(videos)
        if image_metrics is None:
            return
        for i in range(videos.shape[0]):
            geometry = geometry_from_outputs(out, i)
            score_reconstruction(videos[i], geometry, image_metrics=image_metrics, backend=backend)

    return run


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--small", action="store_true", help="tiny VGGT config (CPU-friendly; the default without a GPU)"
    )
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--batches", default="1,4", help="videos per call, comma-separated")
    parser.add_argument(
        "--dtype", default=None, help="trunk autocast dtype: bf16, fp16, fp32 (default per device)"
    )
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3 GPU, 2 CPU)")
    parser.add_argument("--no-save", action="store_true", help="do not append rows to benchmarks/results")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.small = args.small or device.type == "cpu"  # the 1B model on a CPU would take minutes per video
    config = TINY_CONFIG if args.small else VGGTConfig()
    dtype = resolve_compute_dtype(args.dtype, device)
    iters = args.iters or (10 if device.type == "cuda" else 2)
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 2)
    torch.manual_seed(0)
    with torch.device(device):
        model = VGGT(config).eval()  # random weights: the network's cost does not depend on them
    with torch.no_grad():  # but the scorer needs finite cameras: fix both fields of view (the head's
        fov = model.camera_head.pose_branch.fc2  # last two outputs, summed over its iterations) at 1 rad
        fov.weight[7:].zero_()
        fov.bias[7:].fill_(1.0 / config.camera_iterations)
    size = config.img_size
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        videos = torch.rand(batch, args.frames, 3, size, size, device=device)
        for name, (image_metrics, backend) in RUNS.items():
            fn = make_run(model, videos, dtype, image_metrics, backend)
            # scoring selects points by confidence (host syncs): profiler times, not graphs
            fields, _ = measure(fn, device, iters=iters, warmup=warmup, capturable=False)
            seconds = fields["call_us"] / 1e6
            row = {
                "bench": name,
                "config": "tiny" if args.small else "vggt-1b",
                "videos_per_call": batch,
                "frames": args.frames,
                "size": size,
                "dtype": str(dtype).removeprefix("torch."),
                "ms_per_video": 1e3 * seconds / batch,
                "videos_per_s": batch / seconds,
                **fields,
            }
            rows.append(row)
            if not args.no_save:  # as soon as measured: a run stopped by a time limit keeps what it has
                append_results("bench_vggt", [row], device)
    print_table(
        rows,
        ["bench", "config", "videos_per_call", "frames", "size", "dtype", "ms_per_video"]
        + ["videos_per_s", "device_us", "extra_MB"],
    )
    if not args.no_save:
        print(f"appended {len(rows)} rows, one at a time, to {RESULTS_DIR / 'bench_vggt.jsonl'}")
    return rows


if __name__ == "__main__":
    main()
