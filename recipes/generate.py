"""Generate N candidate videos per prompt (several seeds, same prompt/image otherwise).

    python recipes/generate.py --model tiny --pipeline runs/tiny_pipeline --build-tiny \
        --prompts prompts.txt --out-dir runs/gen --num-candidates 4
    python recipes/generate.py --model cogvideox-t2v --pipeline /models/CogVideoX-5b --prompts p.jsonl \
        --out-dir runs/gen --camera-motion [--lora runs/dpo --lora-scale 1]    # the trainer run folder

Each candidate is saved as videos/<prompt_id>_s<seed>.mp4, latents/<...>.safetensors (the final latents) and
a manifest.jsonl row (prompt, seed, model, sampler settings). Rerunning resumes; settings that differ from
an earlier run's for the same candidate are an error. Prompt files: plain text (one per line) or JSONL
(`prompt`, optional `id`, and `image` for image-to-video).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from videogpa.engine.generation.generate import DTYPES, MANIFEST, GenerationConfig, run_generation
from videogpa.engine.generation.pipelines import PIPELINES
from videogpa.engine.generation.tiny import write_tiny_pipeline


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, GenerationConfig]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", choices=sorted(PIPELINES))
    p.add_argument("--pipeline", required=True, help="local diffusers pipeline folder (model_index.json)")
    p.add_argument(
        "--build-tiny", action="store_true", help="write the tiny random pipeline there if missing"
    )
    p.add_argument("--prompts", required=True, help="prompt file: plain text or JSONL")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--num-candidates", type=int, default=4, help="videos per prompt (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--camera-motion", action="store_true", help="prefix + 2-3 random camera motions per prompt"
    )
    p.add_argument("--batch-size", type=int, default=2, help="videos per pipeline call")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    for name, kind in (("num-frames", int), ("height", int), ("width", int), ("steps", int),
                       ("guidance-scale", float), ("max-sequence-length", int)):  # fmt: skip
        p.add_argument(f"--{name}", type=kind, help="default: the model's")
    p.add_argument("--negative-prompt")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument(
        "--lora", help="a trained LoRA (folder with pytorch_lora_weights.safetensors, or the file)"
    )
    p.add_argument("--lora-scale", type=float, default=1.0)
    args = p.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(GenerationConfig)}
    cfg = GenerationConfig(**{k: v for k, v in vars(args).items() if k in fields})
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.build_tiny and not (Path(args.pipeline) / "model_index.json").is_file():
        if args.model != "tiny":
            raise SystemExit("--build-tiny writes the tiny model's pipeline: use it with --model tiny")
        write_tiny_pipeline(args.pipeline)
        print(
            f"wrote the tiny random pipeline to {args.pipeline} (its videos are noise; scores mean nothing)"
        )
    summary = run_generation(cfg, args.out_dir, lora=args.lora, lora_scale=args.lora_scale)
    print(f"generate: {summary}; manifest {Path(args.out_dir) / MANIFEST}")
    return 0 if not summary.failed else 1


if __name__ == "__main__":
    sys.exit(main())
