"""The whole VideoGPA loop: generate → score → pairs → encode → train → evaluate, in one folder.

    python recipes/pipeline.py --output-dir runs/loop-tiny            # tiny model, built-in prompts, CPU
    python recipes/pipeline.py --config my_loop.yaml --output-dir runs/loop [--set loop.pairs.min_gap=0.1]

The config is a trainer config (recipes/configs/*.yaml) plus an optional `loop:` section (see
engine/loop/loop.py: candidates, synthetic, generation, score, pairs, encode, evaluate, train_overrides,
train_launcher). `--set loop.candidates=synthetic` takes procedural scenes (clean + corrupted clips, exact
geometry, oracle-scored) as the candidates instead of the model's own videos.
Stages whose outputs are complete are skipped, the others resume; it ends with OUT/evaluation.json.
`--rounds K` (loop.rounds): K rounds in OUT/round_<k>/, round k generating with round k-1's LoRA and training
on top of it; OUT/evaluation.json then holds one before/after row per round (engine/loop/rounds.py).
With the tiny model the geometry model has random weights: the loop's scores and evaluation mean nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from videogpa.engine.core.cli import run_recipe
from videogpa.engine.loop.loop_config import load_loop_config

RECIPES = Path(__file__).resolve().parent
DEFAULT_CONFIG = RECIPES / "configs" / "tiny.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--rounds",
        type=int,
        metavar="K",
        help="iterative rounds: round k generates with round k-1's LoRA (= loop.rounds)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set loop.generation.num_candidates=8 (repeatable)",
    )
    args = p.parse_args(argv)
    if args.rounds is not None:
        args.overrides.append(f"loop.rounds={args.rounds}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def body() -> int:  # bad input: named in the message; what was produced so far is kept
        cfg = load_loop_config(args.config, args.overrides)  # its errors come before the model stack
        from videogpa.engine.loop.rounds import run_rounds

        run_rounds(cfg, args.output_dir)
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
