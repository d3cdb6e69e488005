r"""Score videos' 3D consistency (3DCS = reprojection MSE + λ·LPIPS, plus PSNR/SSIM/MVCS/motion) and/or
their epipolar error (Epi as the authors compute it: SuperPoint + LightGlue matches between consecutive
frames, an 8-point fundamental matrix per pair on all its matches, the mean Sampson distance in pixels; and
beside it our robust variant `epi_robust`, engine.geometry.epipolar).

    python recipes/score.py                              # synthetic set, oracle geometry, end to end
    python recipes/score.py --synthetic 12 --workdir runs/synth
    python recipes/score.py --videos DIR_OR_MANIFEST.jsonl --geometry vggt --weights vggt_1b.safetensors \
        --vgg-weights vgg16.pth --lpips-weights lpips_vgg.pth --out scores.jsonl
    python recipes/score.py --videos DIR --metrics reprojection,epipolar ... --lightglue-weights lightglue/
    python recipes/score.py --videos DIR --metrics epipolar --lightglue-weights lightglue/  # no geometry

One JSONL row per video (scores, motion, frames used, backend, versions); rerunning skips videos already
scored and retries the rest (a retried video's new row replaces its error row); sharded (torchrun or
`--shard I/N`), each process scores every N-th batch of the sorted videos into scores.shard-I-of-N.jsonl
and readers take the union (README "Sharding"); a bad video (unreadable, truncated, or a reconstruction
without finite geometry) gets an error row and the run goes on. Every flag
but --videos / --synthetic / --workdir / --out / --seed is a key of the config's loop.score section
(engine.config.ScoreConfig; --epipolar-* are its epipolar section, also as --matcher, --lightglue-weights,
--superpoint-weights, --match-size, --pair-stride, --min-matches, --robust); --geometry auto (the default)
is vggt when --weights is given, else the oracle (each video's stored geometry).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from videogpa.engine.core.cli import (
    add_config_file_flags,
    add_config_flags,
    add_shard_flag,
    run_recipe,
    stage_config,
)
from videogpa.engine.core.config import GEOMETRY_BACKENDS, KERNEL_BACKENDS, POINT_SOURCES, ScoreConfig
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages import score
from videogpa.engine.stages.sharding import current_shard

log = logging.getLogger("score")
# the epipolar section's short flags (kept from before the flags came from the config)
EPIPOLAR_FLAGS = {
    "epipolar.matcher": "--matcher",
    "epipolar.lightglue_weights": "--lightglue-weights",
    "epipolar.superpoint_weights": "--superpoint-weights",
    "epipolar.size": "--match-size",
    "epipolar.stride": "--pair-stride",
    "epipolar.min_matches": "--min-matches",
    "epipolar.robust": "--robust",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", help="folder of videos or JSONL manifest; default: generate a synthetic set")
    p.add_argument("--synthetic", type=int, default=4, help="scenes in the generated set (5 videos each)")
    p.add_argument("--workdir", default="runs/score_synthetic", help="where the generated set and scores go")
    p.add_argument("--out", help="scores JSONL (default: scores.jsonl beside the videos)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated synthetic set")
    add_config_flags(
        p,
        ScoreConfig,
        skip=("scores_file",),
        aliases=EPIPOLAR_FLAGS,
        geometry=list(GEOMETRY_BACKENDS),
        points=list(POINT_SOURCES),
        kernel_backend=list(KERNEL_BACKENDS),
    )
    add_config_file_flags(p, "score")
    add_shard_flag(p)
    return p.parse_args(argv)


def summarize(rows: list[dict]) -> None:
    """Print counts and means of rows, one per video; for synthetic sets also how often the clean clip scored
    best in its scene."""
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"\nscored {len(ok)} videos, {len(rows) - len(ok)} errors")
    if any(r.get("score") is not None for r in ok):
        print(
            f"mean 3DCS {statistics.mean(r['score'] for r in ok):.5f}, "
            f"mean motion {statistics.mean(r['motion'] for r in ok):.4f}"
        )
        summarize_metric(ok, "score", "3DCS")
    epi = [r for r in ok if r.get("epi") is not None]
    if any("epi" in r for r in ok):
        unscored = sum(r["epi_pairs"] - r["epi_pairs_scored"] for r in ok if "epi_pairs" in r)
        mean = f"mean Epi {statistics.mean(r['epi'] for r in epi):.5g} px" if epi else "mean Epi n/a"
        print(
            f"{mean} ({len(ok) - len(epi)} videos without a value, left out; "
            f"{unscored} frame pairs with too few matches)"
        )
        summarize_metric(epi, "epi", "Epi")
        robust = [r for r in ok if r.get("epi_robust") is not None]
        if robust:
            print(f"mean Epi robust (ours) {statistics.mean(r['epi_robust'] for r in robust):.5g}")
            summarize_metric(robust, "epi_robust", "Epi robust")


def summarize_metric(ok: list[dict], metric: str, label: str) -> None:
    """Per corruption kind means, and how often the clean clip beat its corrupted versions (synthetic
    sets)."""
    by_kind = defaultdict(list)
    groups = defaultdict(dict)
    for r in ok:
        if "group" in r:
            by_kind[r.get("corruption") or "clean"].append(r[metric])
            groups[r["group"]][r.get("corruption") or "clean"] = r[metric]
    for kind, scores in sorted(by_kind.items()):
        print(f"  {kind:8s} n={len(scores):3d}  mean {label} {statistics.mean(scores):.5g}")
    pairs = [(g["clean"], s) for g in groups.values() if "clean" in g for k, s in g.items() if k != "clean"]
    if pairs:
        right = sum(clean < bad for clean, bad in pairs)
        print(f"{label}: clean scored better than its corrupted version in {right}/{len(pairs)} pairs")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def body() -> int:
        cfg = stage_config(ScoreConfig, "score", args)
        if args.videos is None and current_shard(args.shard).sharded:
            raise ValueError("--shard needs --videos (the synthetic set is written by one process)")
        scorer = score.Scorer.build(cfg)  # bad weights or folders fail before anything is written
        if args.videos is None:
            videos_dir = Path(args.workdir) / "videos"
            log.info("no --videos: writing a synthetic set of %d scenes to %s", args.synthetic, videos_dir)
            source = write_synthetic_set(videos_dir, args.synthetic, n_frames=cfg.num_frames, seed=args.seed)
        else:
            source = Path(args.videos)
        out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / cfg.scores_file
        cfg = dataclasses.replace(cfg, scores_file=out.name)
        summary = score.run(cfg, source, out.parent, scorer=scorer, shard=args.shard)
        log.info("%d videos (re)scored into %s", summary.new_rows, summary.scores)
        summarize(score.latest_rows(summary.scores))
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
