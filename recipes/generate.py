r"""Generate N candidate videos per prompt (several seeds, same prompt/image otherwise).

    python recipes/generate.py --model tiny --pipeline runs/tiny_pipeline --build-tiny \
        --prompts prompts.txt --out-dir runs/gen --num-candidates 4
    python recipes/generate.py --model cogvideox-t2v --pipeline /models/CogVideoX-5b --prompts p.jsonl \
        --out-dir runs/gen --camera-motion [--lora runs/dpo --lora-scale 1]    # the trainer run folder
    python recipes/generate.py --config my_loop.yaml --out-dir runs/gen --set loop.generation.steps=20

Each candidate is saved as videos/<prompt_id>_s<seed>.mp4, latents/<...>.safetensors (the final latents) and a
manifest.jsonl row (prompt, seed, model, sampler settings). Rerunning resumes; settings that differ from an
earlier run's for the same candidate are an error. Sharded (`torchrun --nproc-per-node 8 recipes/generate.py
...` or `--shard I/N`): each process makes every N-th batch of candidates and writes
manifest.shard-I-of-N.jsonl; readers take the union (README "Sharding"). Prompt files: plain text (one per
line) or JSONL (`prompt`, optional `id`, and `image` for image-to-video). Every flag is a key of the config's
loop.generation section (engine.config.GenerationConfig); sampler flags left out take the model's defaults.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videogpa.engine.core.cli import (
    add_config_file_flags,
    add_config_flags,
    add_shard_flag,
    run_recipe,
    stage_config,
)
from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.types import DTYPE_CHOICES


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, GenerationConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --model: checked against the registry after the config (whose errors come before the model stack)
    add_config_flags(p, GenerationConfig, dtype=list(DTYPE_CHOICES))
    add_config_file_flags(p, "generation")
    add_shard_flag(p)
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--build-tiny",
        action="store_true",
        help="write the model's built-in pipeline (the tiny model's) to --pipeline if missing",
    )
    args = p.parse_args(argv)
    return args, stage_config(GenerationConfig, "generation", args)


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args, cfg = parse_args(argv)
        from videogpa.engine.models import adapter_class
        from videogpa.engine.models.pipelines import save_pipeline
        from videogpa.engine.stages import generate

        adapter_class(cfg.model)
        if args.build_tiny and cfg.pipeline and not (Path(cfg.pipeline) / "model_index.json").is_file():
            save_pipeline(adapter_class(cfg.model).builtin_pipeline(), cfg.pipeline)
            print(
                f"wrote the built-in random pipeline to {cfg.pipeline} "
                "(its videos are noise; scores mean nothing)"
            )
        summary = generate.run(cfg, None, args.out_dir, shard=args.shard)
        print(f"generate: {summary}; manifest {summary.manifest}")
        return 0 if not summary.failed else 1

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
