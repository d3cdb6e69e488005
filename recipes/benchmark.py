r"""The authors' benchmark: every caption generated with the base model and with a LoRA at a chosen strength
(one seed, 456 as the authors use), both scored with the evaluation geometry model on T = 10 uniformly sampled
frames, and the paper's table written: PSNR ↑, SSIM ↑, LPIPS ↓, MVCS ↑, 3DCS ↓, Epi ↓, with per-prompt win
rates and 95% bootstrap intervals.

    python recipes/benchmark.py --model wan2.2-ti2v --pipeline /models/Wan2.2-TI2V-5B-Diffusers \
        --captions dl3dv_captions.json --first-frames dl3dv_first_frames/ \
        --lora runs/dpo --lora-scale 0.2 --weights /models/da3_large/ \
        --vgg-weights /models/lpips/vgg16-397923af.pth --lpips-weights /models/lpips/vgg.pth \
        --metrics reprojection,epipolar --lightglue-weights /models/lightglue_superpoint \
        --out-dir runs/benchmark

Captions: a JSON list of strings, a list of objects with `caption` (or `prompt`) and an optional `id`, or an
object mapping ids to captions. --first-frames (image-to-video): FOLDER/<id>.png (or .jpg, .jpeg, .webp), else
the folder's images in name order. --weights: the evaluation geometry model's local weights; --geometry auto
(the default) takes the model the file holds (the authors evaluate with DA3-Large, whose frames are DA3's 504
px processed frames). Sampler settings: --set loop.generation.KEY=VALUE (e.g. --set loop.generation.steps=30).
Sharded like every stage (`torchrun --nproc-per-node 8 recipes/benchmark.py ...` or `--shard I/N`); generation
and scoring resume; the table is OUT/evaluation.{md,json,png}.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from videogpa.engine.core.cli import add_shard_flag, comma_list, run_recipe, section_override
from videogpa.engine.core.config import GEOMETRY_BACKENDS, EvaluateConfig, GenerationConfig, ScoreConfig
from videogpa.engine.core.config_loading import apply_override, build_dataclass
from videogpa.engine.stages.benchmark import AUTHORS_SEED, write_prompt_file
from videogpa.engine.stages.sharding import current_shard


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", required=True, help="model family (model.name), e.g. cogvideox-t2v, wan2.2-ti2v"
    )
    p.add_argument("--pipeline", required=True, help="the local diffusers pipeline folder")
    p.add_argument("--captions", required=True, help="captions JSON")
    p.add_argument("--first-frames", help="folder of first frames (image-to-video)")
    p.add_argument("--lora", required=True, help="the trained LoRA (a run folder or its .safetensors file)")
    p.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (the authors: 0.2 for Wan)")
    p.add_argument(
        "--seed", type=int, default=AUTHORS_SEED, help="the one seed of every caption (%(default)s)"
    )
    p.add_argument("--geometry", choices=GEOMETRY_BACKENDS, default="auto", help="evaluation geometry model")
    p.add_argument("--weights", help="its local weights (file or folder)")
    p.add_argument("--vgg-weights", help="LPIPS: torchvision VGG-16 weights")
    p.add_argument("--lpips-weights", help="LPIPS: its v0.1 linear layers")
    p.add_argument("--metrics", type=comma_list, default=["reprojection"], metavar="A,B", help="and epipolar")
    p.add_argument("--lightglue-weights", help="LightGlue folder (transformers) for the Epi metric")
    p.add_argument("--num-frames", type=int, default=10, help="frames sampled per video (%(default)s)")
    p.add_argument("--size", type=int, help="square crop size (default: the geometry model's input size)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_shard_flag(p)
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> tuple[GenerationConfig, EvaluateConfig, ScoreConfig]:
    """The stages' configs of the protocol, validated before anything is generated."""
    data = {"model": args.model, "pipeline": args.pipeline, "device": args.device}
    for item in args.overrides:
        apply_override(data, section_override(item, "generation"))
    generation = build_dataclass(GenerationConfig, data, "benchmark generation")
    score = ScoreConfig(
        geometry=args.geometry,
        weights=args.weights,
        num_frames=args.num_frames,
        size=args.size,
        device=args.device,
        vgg_weights=args.vgg_weights,
        lpips_weights=args.lpips_weights,
        metrics=args.metrics,
    )
    score.epipolar.lightglue_weights = args.lightglue_weights
    evaluate = EvaluateConfig(num_candidates=1, seed=args.seed, lora_scale=args.lora_scale, score=score)
    for section, where in ((generation, "generation"), (score, "score"), (evaluate, "evaluate")):
        section.check(f"benchmark {where}")
    return generation, evaluate, score


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def body() -> int:
        from videogpa.engine.stages import evaluate
        from videogpa.engine.stages.score import Scorer

        generation, ev, score = configs(args)
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        prompts = write_prompt_file(args.captions, args.first_frames, args.out_dir)
        make_scorer = functools.cache(lambda: Scorer.build(score))  # built once, when first needed
        inputs = evaluate.EvaluateInputs(prompts, args.lora, generation)
        summary = evaluate.run(ev, inputs, args.out_dir, make_scorer, shard=current_shard(args.shard))
        print(f"benchmark: {summary}")
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
