"""Validation videos during training (eval.validation): fixed prompts × seeds sampled with the current
weights, saved under <output_dir>/validation/step_<n>/ by the generate stage's own code (videos/*.mp4,
manifest, the step's LoRA), scored by the score stage's Scorer, and shown as a frame grid with each video's
3DCS (frames.png, TensorBoard / W&B) and a summary (validation.json, written last: a step with it is
finished).

Collective: every rank takes part. The trained weights are gathered from ZeRO-3 (the LoRA is written once by
rank 0 and loaded into every rank's pipeline; a full fine-tune is copied into it), the videos and their
scoring are sharded over the ranks (engine.stages.sharding), rank 0 writes the summary. The sampling pipeline
is built once, from the local folder around the trained transformer (or the family's built-in one), and kept
on the CPU between validations (eval.validation.offload)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import torch

from videogpa.engine.core.config import Config, GenerationConfig
from videogpa.engine.core.figures import save_frame_grid, score_label, short
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.io.video import load_video
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.common import base_module
from videogpa.engine.models.lora import export_trained_weights
from videogpa.engine.models.pipelines import attach_lora, load_pipeline, pipeline_folder
from videogpa.engine.runtime import distributed as D
from videogpa.engine.stages import generate
from videogpa.engine.stages.score import Scorer, latest_rows
from videogpa.engine.stages.sharding import Shard

FOLDER = "validation"
SUMMARY = "validation.json"


def step_folder(out: Path, step: int) -> Path:
    return out / FOLDER / f"step_{step}"


class ValidationVideos:
    """Samples, scores and shows eval.validation's videos at a step (call `run(step, module)` on every
    rank)."""

    def __init__(
        self, cfg: Config, adapter: ModelAdapter, out: Path, device: torch.device, dtype: torch.dtype
    ):
        self.cfg, self.val, self.adapter, self.out = cfg, cfg.eval.validation, adapter, out
        self.device, self.dtype, self.pipe, self.scorer = device, dtype, None, None
        images = self.val.images or [None] * len(self.val.prompts)
        self.items = [
            PromptItem(f"prompt{i:02d}", p, image and Path(image))
            for i, (p, image) in enumerate(zip(self.val.prompts, images))
        ]
        gen = GenerationConfig(
            model=cfg.model.name,
            **{k: getattr(self.val, k) for k in ("num_frames", "height", "width", "steps", "guidance_scale")},
        )
        self.sampler = generate.sampler_settings(gen)
        missing = [
            str(item.image) for item in self.items if item.image is not None and not item.image.is_file()
        ]
        if missing:
            raise ValueError(f"eval.validation.images: {missing[0]} does not exist")
        if self.val.pipeline or cfg.model.path:  # read-only checks before the run writes anything
            pipeline_folder(self.val.pipeline or cfg.model.path)

    def drop_steps_after(self, step: int) -> None:
        """Rank 0: remove the validations of steps after `step` (a resumed run redoes those steps'
        training)."""
        for folder in (self.out / FOLDER).glob("step_*/"):
            n = folder.name.removeprefix("step_")
            if n.isdigit() and int(n) > step:
                shutil.rmtree(folder)

    def _pipeline(self):
        """The sampling pipeline (built on first use, on the CPU)."""
        if self.pipe is None:
            i2v, folder = self.val.images is not None, self.val.pipeline or self.cfg.model.path
            if folder is None:
                self.pipe = self.adapter.builtin_pipeline(image_to_video=i2v).to(dtype=self.dtype)
                self.pipe.set_progress_bar_config(disable=True)
            else:  # pipeline_folder: the folder itself or the parent of <pipeline>/transformer
                self.pipe = load_pipeline(self.cfg.model.name, folder, image_to_video=i2v, dtype=self.dtype)
        return self.pipe

    def _load_weights(self, module: torch.nn.Module, folder: Path) -> str | None:
        """Collective: the current weights into the pipeline; returns the LoRA path (None: full
        fine-tuning)."""
        pipe = self._pipeline()
        if self.cfg.lora.enabled:
            export_trained_weights(module, folder, lora=True)  # gathered from ZeRO-3, written by rank 0
            D.barrier()
            with contextlib.suppress(ValueError):
                pipe.unload_lora_weights()
            attach_lora(pipe, folder, self.val.lora_scale)
            return str(folder)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            pipe.transformer.load_state_dict(base_module(module).state_dict())
        return None

    @torch.no_grad()
    def run(self, step: int, module: torch.nn.Module, logger) -> dict | None:
        """Collective: the validation of `step` (skipped if finished); rank 0 returns its summary."""
        folder = step_folder(self.out, step)
        if (folder / SUMMARY).is_file():
            return json.loads((folder / SUMMARY).read_text())
        shard, start = Shard(D.rank(), D.world_size()), time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # sampling leaves the training's random state alone
            lora = self._load_weights(module, folder)
            pipe = self.pipe.to(self.device)
            generate.generate_candidates(
                pipe,
                self.adapter,
                self.items,
                folder,
                seeds=self.val.seeds,
                sampler=self.sampler,
                model=self.cfg.model.name,
                lora=lora,
                lora_scale=self.val.lora_scale,
                batch_size=self.val.batch_size,
                progress=False,
                shard=shard,
            )
            if self.val.offload:
                pipe.to("cpu")
            D.barrier()  # every shard's videos are written
            if self.val.score is not None:
                scorer = self.scorer or Scorer.build(self.val.score)
                scorer.score(folder / generate.MANIFEST, folder / "scores.jsonl", progress=False, shard=shard)
                self.scorer = None if self.val.offload else scorer  # offload: the scorer is not kept either
            D.barrier()
        summary = self._summarize(step, folder, logger, time.perf_counter() - start) if D.is_main() else None
        D.barrier()
        return summary

    def _summarize(self, step: int, folder: Path, logger, seconds: float) -> dict:
        """Rank 0: the step's frame grid (PNG and loggers), 3DCS per video, validation.json."""
        scores = {Path(r["video"]).name: r for r in latest_rows(folder / "scores.jsonl")}
        rows = sorted(read_sharded(folder / generate.MANIFEST), key=lambda r: (r["prompt_id"], r["seed"]))
        videos, grid = [], []
        for row in rows:
            score = scores.get(Path(row["video"]).name)
            label = score_label(score)
            frames = load_video(folder / row["video"], self.val.grid_frames).frames
            grid.append((f"{short(row['prompt'])} (seed {row['seed']})  {label}", frames))
            videos.append(
                {
                    "video": row["video"],
                    "prompt": row["prompt"],
                    "seed": row["seed"],
                    **{
                        k: score.get(k)
                        for k in ("status", "score", "mse", "lpips", "motion")
                        if score is not None
                    },
                }
            )
        title = f"validation at step {step}" + (" (base model)" if step == 0 else "")
        save_frame_grid(
            grid, title, folder / "frames.png", log=lambda fig: logger.figure("validation/frames", fig, step)
        )
        ok = [v["score"] for v in videos if v.get("status") == "ok" and v.get("score") is not None]
        summary = {
            "step": step,
            "videos": videos,
            "mean_3dcs": sum(ok) / len(ok) if ok else None,
            "frames": "frames.png",
            "seconds": round(seconds, 2),
        }
        if summary["mean_3dcs"] is not None:
            logger.scalar("validation/3dcs_mean", summary["mean_3dcs"], step)
        columns = ["video", "prompt", "seed", "3DCS", "MSE", "LPIPS", "motion"]
        table = [
            [v["video"], v["prompt"], v["seed"], *(v.get(k) for k in ("score", "mse", "lpips", "motion"))]
            for v in videos
        ]
        logger.table("validation/scores", columns, table, step)
        logger.videos(
            "validation/videos",
            [folder / v["video"] for v in videos],
            [f"{v['prompt']} (seed {v['seed']}) 3DCS {v.get('score')}" for v in videos],
            step,
        )
        write_json_atomic(folder / SUMMARY, summary)
        mean = f", mean 3DCS {summary['mean_3dcs']:.5g}" if summary["mean_3dcs"] is not None else ""
        print(
            f"validation at step {step}: {len(videos)} videos in {folder}{mean} ({seconds:.1f} s)", flush=True
        )
        return summary
