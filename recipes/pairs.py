"""Preference pairs from scores: per prompt, best (lowest 3DCS) vs worst, kept when the gap is large enough.

    python recipes/pairs.py --scores RUN/generated/scores.jsonl --manifest RUN/generated/manifest.jsonl \
        --out-dir RUN/pairs [--min-gap 0.05] [--min-motion 0.001] [--overwrite]

Writes pairs.jsonl (the pair index), pairs_report.json (counts kept / dropped per reason, gaps) and PNG
histograms of the scores and the per-prompt gaps. Failed scores and static videos are dropped.
"""

from __future__ import annotations

import argparse
import sys

from videogpa.engine.data.pair_selection import DEFAULT_MIN_GAP, DEFAULT_MIN_MOTION
from videogpa.engine.generation.pairs import PAIRS_FILE, build_pairs, format_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", required=True, help="scores JSONL written by recipes/score.py")
    p.add_argument("--manifest", help="generation manifest JSONL (joined by video for prompt, seed, latents)")
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--min-gap", type=float, default=DEFAULT_MIN_GAP, help="keep a pair when worst-best ≥ this"
    )
    p.add_argument("--min-motion", type=float, default=DEFAULT_MIN_MOTION, help="drop videos moving less")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different pair index")
    args = p.parse_args(argv)
    result = build_pairs(
        args.scores,
        args.out_dir,
        manifest=args.manifest,
        min_gap=args.min_gap,
        min_motion=args.min_motion,
        overwrite=args.overwrite,
    )
    state = "written" if result.changed else "unchanged (already up to date)"
    print(f"pairs: {format_report(result.report)}; {args.out_dir}/{PAIRS_FILE} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
