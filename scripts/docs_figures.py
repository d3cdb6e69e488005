"""Make the README's pictures (docs/img/*.png) from the tiny built-in model and the procedural scenes; nothing
is drawn by hand. About 2 minutes on a 2-core CPU.

    python scripts/docs_figures.py [--out docs/img] [--work /tmp/videogpa-docs]

- validation_step_0.png, validation_step_N.png: eval.validation's frame grids (a short tiny-model run with
  eval.every; its videos are noise-like: the tiny model exercises the machinery, its pictures mean nothing)
- heldout_accuracy.png: held-out preference accuracy every eval.every steps of the same run
- consistency_clean.png, consistency_jitter.png: the score stage's pictures (score.figures) of a procedural
  scene's clean clip and its camera-jittered copy, scored with the stored (oracle) geometry
- pairs_examples.png: the pairs stage's winner/loser figure of those scenes
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def training_pictures(work: Path, out: Path) -> None:
    import torch

    from videogpa.engine.core.config_loading import config_from_dict
    from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt
    from videogpa.engine.train.trainer import Trainer

    torch.manual_seed(0)
    vggt = save_vggt(random_vggt(TINY_CONFIG), work / "vggt_tiny_random.safetensors")
    steps = 60
    validation = {
        "prompts": ["a room, the camera pans", "a room, the camera orbits"],
        "seeds": [0],
        "grid_frames": 5,
        "score": {"geometry": "vggt", "weights": str(vggt), "num_frames": 8, "random_weights": True},
    }
    cfg = config_from_dict(
        {
            "output_dir": str(work / "train"),
            "model": {"name": "tiny"},
            "lora": {"rank": 8, "alpha": 16},
            "dpo": {"beta": 5000.0},
            "data": {"synthetic": {"train_pairs": 160, "heldout_pairs": 48}},
            "optim": {"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 10},
            "train": {
                "max_steps": steps,
                "micro_batch_size": None,
                "global_batch_size": 8,
                "precision": "fp32",
                "checkpoint_every": 0,
                "progress_bar": False,
                "log_every": 20,
            },
            "eval": {"draws": 4, "batch_size": 24, "every": 15, "validation": validation},
        }
    )
    Trainer(cfg, overwrite=True).run()
    run = work / "train"
    shutil.copy(run / "validation" / "step_0" / "frames.png", out / "validation_step_0.png")
    shutil.copy(run / "validation" / f"step_{steps}" / "frames.png", out / f"validation_step_{steps}.png")
    shutil.copy(run / "heldout_accuracy.png", out / "heldout_accuracy.png")


def scoring_pictures(work: Path, out: Path) -> None:
    from videogpa.engine.core.config import PairsConfig, ScoreConfig
    from videogpa.engine.io.records import read_jsonl, write_jsonl_atomic
    from videogpa.engine.scenes.video_set import write_synthetic_set
    from videogpa.engine.stages import pairs
    from videogpa.engine.stages.score import Scorer

    videos = work / "scenes"
    manifest = write_synthetic_set(videos, 2, n_frames=10, size=96, kinds=("jitter",), progress=False)
    rows = [
        {**r, "prompt_id": f"scene{r['group']}", "prompt": f"procedural scene {r['group']}"}
        for r in read_jsonl(manifest)
    ]
    write_jsonl_atomic(manifest, rows)
    cfg = ScoreConfig(geometry="oracle", num_frames=10, device="cpu", figures=len(rows))
    Scorer.build(cfg).score(manifest, videos / "scores.jsonl", progress=False)
    pairs.run(PairsConfig(min_gap=0.0, min_motion=0.0), videos / "scores.jsonl", work / "pairs", manifest)
    shutil.copy(videos / "figures" / "scene0000_clean.png", out / "consistency_clean.png")
    shutil.copy(videos / "figures" / "scene0000_jitter.png", out / "consistency_jitter.png")
    shutil.copy(work / "pairs" / "pairs_examples.png", out / "pairs_examples.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    p.add_argument("--work", default="/tmp/videogpa-docs", help="scratch folder (replaced)")
    args = p.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    scoring_pictures(work, out)
    training_pictures(work, out)
    for png in sorted(out.glob("*.png")):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
