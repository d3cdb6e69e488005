"""Score videos' 3D consistency (3DCS = reprojection MSE + λ·LPIPS, plus PSNR/SSIM/MVCS/motion).

    python recipes/score.py                              # synthetic set, oracle geometry, end to end
    python recipes/score.py --synthetic 12 --workdir runs/synth
    python recipes/score.py --videos DIR_OR_MANIFEST.jsonl --geometry vggt --weights vggt_1b.safetensors \
        --vgg-weights vgg16.pth --lpips-weights lpips_vgg.pth --out scores.jsonl

One JSONL row per video (scores, motion, frames used, backend, versions); rerunning skips videos already
scored; a bad video gets an error row and the run goes on.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from videogpa.engine.data.synthetic_set import write_synthetic_set
from videogpa.engine.geometry.lpips import LPIPS
from videogpa.engine.geometry.registry import build_geometry_model
from videogpa.engine.geometry.runner import list_videos, score_videos

log = logging.getLogger("score")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", help="folder of videos or JSONL manifest; default: generate a synthetic set")
    p.add_argument("--synthetic", type=int, default=4, help="scenes in the generated set (5 videos each)")
    p.add_argument("--workdir", default="runs/score_synthetic", help="where the generated set and scores go")
    p.add_argument("--out", help="scores JSONL (default: scores.jsonl beside the videos)")
    p.add_argument("--geometry", default="oracle", choices=["oracle", "vggt"], help="geometry backend")
    p.add_argument("--weights", help="VGGT weights file (safetensors) for --geometry vggt")
    p.add_argument("--dtype", default=None, help="VGGT compute dtype (bf16/fp16/fp32; default by device)")
    p.add_argument("--num-frames", type=int, default=10, help="frames sampled uniformly per video")
    p.add_argument("--size", type=int, help="centre-crop and resize to this square (default: the model's)")
    p.add_argument("--conf-thres", type=float, default=0.0, help="confidence percentile filter (0 keeps all)")
    p.add_argument(
        "--points",
        default="auto",
        choices=["auto", "depth", "pointmap"],
        help="cloud source: world points + depth confidence (auto, the paper), unprojected depth, or point map",
    )
    p.add_argument("--vgg-weights", help="torchvision-format VGG16 state dict for LPIPS")
    p.add_argument("--lpips-weights", help="LPIPS linear-layer weights (lin0..lin4) for LPIPS")
    p.add_argument("--lpips-weight", type=float, default=1.0, help="λ in 3DCS = MSE + λ·LPIPS")
    p.add_argument(
        "--mse-only",
        action="store_true",
        help="only the reprojection MSE (fused kernel, no rendered images): no PSNR/SSIM/LPIPS, fastest",
    )
    p.add_argument(
        "--batch-size", type=int, help="videos per reconstruction call (default 4 on GPU, 1 on CPU)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--kernel-backend", default="auto", choices=["auto", "triton", "torch"])
    p.add_argument("--seed", type=int, default=0, help="seed of the generated synthetic set")
    return p.parse_args(argv)


def build_lpips(args: argparse.Namespace) -> LPIPS | None:
    if bool(args.vgg_weights) != bool(args.lpips_weights):
        raise SystemExit("give both --vgg-weights and --lpips-weights for LPIPS, or neither")
    if args.mse_only:
        if args.vgg_weights:
            raise SystemExit("--mse-only scores without LPIPS: drop --vgg-weights/--lpips-weights")
        log.info("--mse-only: 3DCS = reprojection MSE from the fused kernel; no PSNR/SSIM/LPIPS")
        return None
    if not args.vgg_weights:
        log.warning("LPIPS is OFF (no --vgg-weights/--lpips-weights given): 3DCS = reprojection MSE only")
        return None
    log.info("LPIPS-VGG from %s and %s (λ = %g)", args.vgg_weights, args.lpips_weights, args.lpips_weight)
    return LPIPS.from_files(args.vgg_weights, args.lpips_weights).to(args.device).eval()


def versions() -> dict:
    found = {}
    for name in ("videogpa", "torch", "triton"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def summarize(rows: list[dict]) -> None:
    """Print counts and means; for synthetic sets also how often the clean clip scored best in its scene."""
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"\nscored {len(ok)} videos, {len(rows) - len(ok)} errors")
    if not ok:
        return
    print(
        f"mean 3DCS {statistics.mean(r['score'] for r in ok):.5f}, mean motion {statistics.mean(r['motion'] for r in ok):.4f}"
    )
    by_kind = defaultdict(list)
    groups = defaultdict(dict)
    for r in ok:
        if "group" in r:
            by_kind[r.get("corruption") or "clean"].append(r["score"])
            groups[r["group"]][r.get("corruption") or "clean"] = r["score"]
    for kind, scores in sorted(by_kind.items()):
        print(f"  {kind:8s} n={len(scores):3d}  mean 3DCS {statistics.mean(scores):.5f}")
    pairs = [(g["clean"], s) for g in groups.values() if "clean" in g for k, s in g.items() if k != "clean"]
    if pairs:
        right = sum(clean < bad for clean, bad in pairs)
        print(f"clean scored better than its corrupted version in {right}/{len(pairs)} pairs")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.videos is None:
        videos_dir = Path(args.workdir) / "videos"
        log.info("no --videos: writing a synthetic set of %d scenes to %s", args.synthetic, videos_dir)
        source = write_synthetic_set(videos_dir, args.synthetic, n_frames=args.num_frames, seed=args.seed)
    else:
        source = Path(args.videos)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "scores.jsonl"
    if args.geometry == "vggt" and not args.weights:
        raise SystemExit(
            "--geometry vggt needs --weights (a local VGGT safetensors file; nothing is downloaded)"
        )
    model = None
    if args.geometry == "vggt":
        model = build_geometry_model("vggt", weights_path=args.weights, device=args.device, dtype=args.dtype)
        log.info("VGGT loaded from %s on %s", args.weights, args.device)
    else:
        log.info("oracle geometry: each video's stored <name>.geometry.safetensors")
    size = args.size if args.size is not None else (model.input_size if model is not None else None)
    lpips = build_lpips(args)
    jobs = list_videos(source)
    log.info(
        "%d videos from %s -> %s (%d frames each, size %s)", len(jobs), source, out, args.num_frames, size
    )
    rows = score_videos(
        jobs,
        out,
        model=model,
        n_frames=args.num_frames,
        size=size,
        batch_size=args.batch_size or (4 if args.device.startswith("cuda") else 1),
        device=args.device,
        conf_thres=args.conf_thres,
        points=args.points,
        lpips=lpips,
        lpips_weight=args.lpips_weight,
        image_metrics=not args.mse_only,
        backend=args.kernel_backend,
        row_info={
            "backend": args.geometry,
            "kernel_backend": args.kernel_backend,
            "conf_thres": args.conf_thres,
            "points": args.points,
            "versions": versions(),
        },
    )
    all_rows = (
        [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else rows
    )
    log.info("%d new rows appended to %s", len(rows), out)
    summarize(all_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
