r"""Build the training shards from the pair index: latents (reused from generation, else VAE-encoded), text
embeddings from the model's own text encoder, image latents for image-to-video.

    python recipes/encode.py --model tiny --pipeline RUN/model --pairs RUN/pairs/pairs.jsonl \
        --out-dir RUN/shards [--heldout-fraction 0.25]

Writes OUT/train (and OUT/heldout) in the trainer's preference-shard format; rerunning resumes from the
per-video cache in OUT/cache and leaves complete shard folders as they are. Sharded (`torchrun
--nproc-per-node 8 recipes/encode.py ...` or `--shard I/N`): each process encodes every N-th pair (by pair_id)
into the cache; the shard that finds every pair encoded writes OUT/train and OUT/heldout. Every flag but
--pairs / --out-dir is a key of the config's loop.encode section (engine.config.EncodeConfig).
"""

from __future__ import annotations

import argparse
import sys

from videogpa.engine.core.cli import (
    add_config_file_flags,
    add_config_flags,
    add_shard_flag,
    run_recipe,
    stage_config,
)
from videogpa.engine.core.config import EncodeConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="pair index written by recipes/pairs.py")
    p.add_argument("--out-dir", required=True)
    add_config_flags(p, EncodeConfig)  # --model: checked against the registry after the config
    add_config_file_flags(p, "encode")
    add_shard_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        cfg = stage_config(EncodeConfig, "encode", args)  # a bad key or value: named before the model stack
        from videogpa.engine.models import adapter_class
        from videogpa.engine.stages import encode

        adapter_class(cfg.model)
        summary = encode.run(cfg, args.pairs, args.out_dir, shard=args.shard)
        print(f"encode: {summary}; shards in {summary.out_dir}")
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
