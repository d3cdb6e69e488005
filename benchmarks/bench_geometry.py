"""Scoring throughput of the two geometry models: VGGT and Depth Anything 3 (random weights), side by side.

Full size (GPU): VGGT-1B on T = 10 frames of 518² and DA3-Large (or --da3-size) on T = 10 frames of 504²
(the frames DA3 itself processes and the da3 backend scores), backbone/trunk under bf16 autocast and heads
in float32 as the authors run them, batches of 1 and 4 videos per call. Rows per model: the network alone
(with DA3's input processing), and the network + the whole score (engine.geometry.scoring: depth-confidence
cloud → nearest-point reprojection kernel → metrics; "+images" adds renders, PSNR/SSIM), in videos/s with
the peak extra GPU memory. `--small` runs both tiny configs on the CPU in seconds (plumbing, not speed).
Times: one synchronised call (videos/s come from it) and the profiler's kernel sum on a GPU.

    python benchmarks/bench_geometry.py [--small] [--models vggt,da3] [--da3-size da3-large] [--frames 10]
                                        [--batches 1,4] [--dtype bf16] [--iters N] [--no-save]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch

if not torch.cuda.is_available():  # the reprojection kernel can only run through the interpreter on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import append_results, measure, print_table  # noqa: E402

from videogpa.engine.geometry import da3, vggt  # noqa: E402
from videogpa.engine.geometry.base import Geometry  # noqa: E402
from videogpa.engine.geometry.da3.geometry_model import geometry_from_outputs as da3_geometry  # noqa: E402
from videogpa.engine.geometry.da3.preprocess import PROCESS_RES  # noqa: E402
from videogpa.engine.geometry.scoring import score_reconstruction  # noqa: E402
from videogpa.engine.geometry.vggt.geometry_model import geometry_from_outputs as vggt_geometry  # noqa: E402
from videogpa.engine.types import resolve_compute_dtype  # noqa: E402

TINY_SIDE = 56  # frame side of the tiny DA3 (its process_res)
SCORES = {
    "": None,
    "+score": False,
    "+score+images": True,
}  # row suffix → score_reconstruction(image_metrics)


def scorer(name: str, small: bool, da3_size: str, device: torch.device):
    """(config name, frame side, forward: videos in [0, 1] → outputs, (outputs, i) → Geometry of video
    i)."""
    if name == "vggt":
        config = vggt.TINY_CONFIG if small else vggt.VGGTConfig()
        with torch.device(device):
            model = vggt.random_vggt(config).eval()
        return ("tiny" if small else "vggt-1b"), config.img_size, model, vggt_geometry
    side = TINY_SIDE if small else PROCESS_RES
    with torch.device(device):
        model = da3.random_da3(da3.TINY_CONFIG if small else da3_size).eval()
    return (
        ("tiny" if small else da3_size),
        side,
        lambda videos: model(da3.preprocess(videos, side)),
        da3_geometry,
    )


def make_run(
    forward: Callable[[torch.Tensor], dict],
    to_geometry: Callable[[dict, int], Geometry],
    videos: torch.Tensor,
    dtype: torch.dtype,
    image_metrics: bool | None,
):
    """One callable over a batch of videos: the network, then (unless image_metrics is None) every score."""

    @torch.inference_mode()
    def run():
        with torch.autocast(videos.device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = forward(videos)
        if image_metrics is None:
            return
        for i in range(videos.shape[0]):
            score_reconstruction(videos[i], to_geometry(out, i), image_metrics=image_metrics)

    return run


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--small", action="store_true", help="tiny configs (CPU-friendly; the default without a GPU)"
    )
    parser.add_argument("--models", default="vggt,da3", help="comma-separated: vggt, da3")
    parser.add_argument(
        "--da3-size", default="da3-large", choices=[n for n, c in da3.SIZES.items() if c.cameras]
    )
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--batches", default="1,4", help="videos per call, comma-separated")
    parser.add_argument(
        "--dtype", default=None, help="backbone autocast dtype: bf16, fp16, fp32 (default per device)"
    )
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--no-save", action="store_true", help="do not append rows to benchmarks/results")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small or device.type == "cpu"  # the full models on a CPU would take minutes per video
    dtype = resolve_compute_dtype(args.dtype, device)
    iters = args.iters or (10 if device.type == "cuda" else 2)
    rows = []
    for name in args.models.split(","):
        if name not in ("vggt", "da3"):
            parser.error(f"--models: unknown model {name!r} (vggt, da3)")
        torch.manual_seed(0)
        config, side, forward, to_geometry = scorer(name, small, args.da3_size, device)
        for batch in (int(b) for b in args.batches.split(",")):
            videos = torch.rand(batch, args.frames, 3, side, side, device=device)
            for suffix, image_metrics in SCORES.items():
                fn = make_run(forward, to_geometry, videos, dtype, image_metrics)
                # scoring selects points by confidence (host syncs): profiler times, not graphs
                fields, _ = measure(
                    fn, device, iters=iters, warmup=1 if device.type == "cpu" else 3, capturable=False
                )
                seconds = fields["call_us"] / 1e6
                rows.append(
                    {
                        "bench": name + suffix,
                        "config": config,
                        "videos_per_call": batch,
                        "frames": args.frames,
                        "size": side,
                        "dtype": str(dtype).removeprefix("torch."),
                        "ms_per_video": 1e3 * seconds / batch,
                        "videos_per_s": batch / seconds,
                        **fields,
                    }
                )
        del forward
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(
        rows,
        ["bench", "config", "videos_per_call", "frames", "size", "dtype", "ms_per_video"]
        + ["videos_per_s", "device_us", "extra_MB"],
    )
    if not args.no_save:
        print("appended to", append_results("bench_geometry", rows, device))
    return rows


if __name__ == "__main__":
    main()
