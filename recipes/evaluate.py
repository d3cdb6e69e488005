r"""Before/after evaluation: held-out prompts generated with the same seeds without and with a trained LoRA,
both scored; prints and saves a side-by-side table in the paper's columns (PSNR, SSIM, LPIPS, MVCS, 3DCS, Epi;
then MSE, motion) with each difference's bootstrap CI, per-prompt win rates and a bar plot.

    python recipes/evaluate.py --output-dir runs/loop                 # the loop folder's LoRA (train/)
    python recipes/evaluate.py --config my_loop.yaml --output-dir runs/eval --lora runs/dpo/ \
        --set loop.evaluate.prompts=heldout.jsonl
    python recipes/evaluate.py --output-dir runs/eval --metrics reprojection,epipolar \
        --set loop.score.epipolar.lightglue_weights=/models/lightglue_superpoint      # adds the Epi column

Uses the same config as recipes/pipeline.py (trainer YAML + `loop:` section). Writes OUT/evaluation.json,
evaluation.md and evaluation.png; generation and scoring resume, a finished evaluation.json is kept.
Sharded (`torchrun --nproc-per-node 8 recipes/evaluate.py ...` or `--shard I/N`): each process generates and
scores every N-th batch of the held-out candidates; the one that completes the set writes the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from videogpa.engine.core.cli import add_shard_flag, comma_list, run_recipe
from videogpa.engine.loop.loop_config import load_loop_config
from videogpa.engine.stages.sharding import current_shard

RECIPES = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(RECIPES / "configs" / "tiny.yaml"))
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lora", help="LoRA folder or file (default: OUT/train/pytorch_lora_weights.safetensors)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--metrics",
        type=comma_list,
        metavar="A,B",
        help="score metrics, comma-separated: reprojection, epipolar (= loop.score.metrics)",
    )
    add_shard_flag(p)
    # launched by the loop: it holds the lock
    p.add_argument("--in-loop", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.metrics is not None:
        args.overrides.append(f"loop.score.metrics={json.dumps(args.metrics)}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def body() -> int:
        cfg = load_loop_config(args.config, args.overrides)  # its errors come before the model stack
        from videogpa.engine.loop.loop import Loop

        loop = Loop(cfg, args.output_dir)
        shard = current_shard(args.shard)
        with contextlib.nullcontext() if args.in_loop else loop.lock(shard):
            loop.prepare_models()
            loop.evaluate(lora=args.lora, shard=shard)
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
