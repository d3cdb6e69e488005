"""Build the training shards from the pair index: latents (reused from generation, else VAE-encoded), text
embeddings from the model's own text encoder, image latents for image-to-video.

    python recipes/encode.py --model tiny --pipeline RUN/model --pairs RUN/pairs/pairs.jsonl \
        --out-dir RUN/shards [--heldout-fraction 0.25]

Writes OUT/train (and OUT/heldout) in the trainer's preference-shard format; rerunning resumes from the
per-video cache in OUT/cache and leaves complete shard folders as they are.
"""

from __future__ import annotations

import argparse
import logging
import sys

from videogpa.engine.generation.encode import run_encode
from videogpa.engine.generation.pipelines import PIPELINES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=sorted(PIPELINES))
    p.add_argument("--pipeline", required=True, help="local diffusers pipeline folder (VAE + text encoder)")
    p.add_argument("--pairs", required=True, help="pair index written by recipes/pairs.py")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-sequence-length", type=int, help="text tokens (default: the generation's)")
    p.add_argument("--heldout-fraction", type=float, default=0.0, help="pairs kept out of training")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--device", help="default: cuda when available, else cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    summary = run_encode(
        args.model, args.pipeline, args.pairs, args.out_dir, max_sequence_length=args.max_sequence_length,
        heldout_fraction=args.heldout_fraction, seed=args.seed, shard_size=args.shard_size, device=args.device,
    )  # fmt: skip
    print(f"encode: {summary}; shards in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
