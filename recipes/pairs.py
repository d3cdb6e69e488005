r"""Preference pairs from scores: per prompt, best (lowest 3DCS) vs worst, kept when the gap is large enough.

    python recipes/pairs.py --scores RUN/generated/scores.jsonl --manifest RUN/generated/manifest.jsonl \
        --out-dir RUN/pairs [--min-gap 0.05] [--min-motion 0.001] [--overwrite]

Writes pairs.jsonl (the pair index), pairs_report.json (counts kept / dropped per reason, gaps) and PNG
histograms of the scores and the per-prompt gaps. Failed scores and static videos are dropped. Every flag but
--scores / --manifest / --out-dir is a key of the config's loop.pairs section (engine.config.PairsConfig).
"""

from __future__ import annotations

import argparse
import sys

from videogpa.engine.core.cli import add_config_file_flags, add_config_flags, run_recipe, stage_config
from videogpa.engine.core.config import PairsConfig
from videogpa.engine.stages import pairs
from videogpa.engine.stages.sharding import launcher_shard


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", required=True, help="scores JSONL written by recipes/score.py")
    p.add_argument("--manifest", help="generation manifest JSONL (joined by video for prompt, seed, latents)")
    p.add_argument("--out-dir", required=True)
    add_config_flags(p, PairsConfig)
    add_config_file_flags(p, "pairs")
    args = p.parse_args(argv)

    def body() -> int:
        rank = launcher_shard()
        if rank.index:  # pair selection is one process's job: under a launcher, rank 0 does it alone
            print(f"pairs: rank {rank.index} of {rank.count} leaves pair selection to rank 0")
            return 0
        summary = pairs.run(
            stage_config(PairsConfig, "pairs", args), args.scores, args.out_dir, args.manifest
        )
        state = "written" if summary.changed else "unchanged (already up to date)"
        print(f"pairs: {pairs.format_report(summary.report)}; {summary.index} {state}")
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
