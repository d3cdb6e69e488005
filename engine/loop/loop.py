"""The whole VideoGPA loop in one folder: generate → score → pairs → encode → train → evaluate.

The config is one engine.config.Config: the trainer's sections plus `loop:` (one section per stage). Each
stage (engine.stages.*) skips what is already complete and resumes what is not, and hands the next stage its
output path; nothing produced is overwritten:

    DIR/models/            the tiny loop's pipeline, random VGGT and random LightGlue (built once)
    DIR/generated/         manifest.jsonl, videos/, latents/, scores.jsonl
    DIR/pairs/             pairs.jsonl, pairs_report.json, histograms
    DIR/shards/            train/ (and heldout/) preference shards
    DIR/train_config.yaml  the trainer config the loop derived
    DIR/train/             the training run (LoRA, metrics, checkpoints)
    DIR/eval/{base,lora}/  held-out prompts generated without / with the LoRA, and their scores
    DIR/evaluation.json    the before/after table (also .md and .png)

With a model that ships a built-in pipeline (the tiny one) and no `loop:` section, the loop runs on built-in
prompts with a random-weights VGGT: it exercises every stage on a CPU in minutes, and its scores (hence its
pairs and its evaluation) mean nothing.

A real model's config adds, for example (model.path: /models/CogVideoX-5b, the pipeline folder):

    loop:
      generation: {prompts: prompts.txt, num_candidates: 4, camera_motion: true, batch_size: 4}
      score: {weights: /models/vggt_1b.safetensors, vgg_weights: /models/vgg16.pth,
              lpips_weights: /models/lpips_vgg.pth}
      encode: {heldout_fraction: 0.05}
      evaluate: {prompts: heldout_prompts.txt, num_candidates: 2}
      train_launcher: [deepspeed, --num_gpus, "8"]
      launcher: [torchrun, --nproc-per-node, "8"]    # generate, score, encode, evaluate on every GPU

With `loop.launcher`, those four stages run as `-m videogpa.recipes.<stage>` under the launcher (each rank its
share of the items, engine.stages.sharding) with the loop's resolved config (DIR/stage_config.yaml); without
it, in this process. Synthetic candidates are always scored here (the oracle).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import apply_override, config_from_dict
from videogpa.engine.core.report import write_report
from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.records import read_jsonl, write_json_atomic, write_jsonl_atomic
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.loop.demo import (
    TINY_EVAL_PROMPTS,
    TINY_PROMPTS,
    has_builtin_model,
    prepare_models,
)
from videogpa.engine.loop.launch import launch_recipe, recipe_command
from videogpa.engine.models.lora import trained_lora_file
from videogpa.engine.runtime.distributed import child_env
from videogpa.engine.stages import encode, evaluate, generate, pairs, score
from videogpa.engine.stages.sharding import WHOLE, Shard, one_at_a_time

LOCK_NAME = ".loop.lock"


class Loop:
    """Runs the stages of one loop folder."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike):
        self.config, self.cfg = cfg, cfg.loop
        self.builtin = has_builtin_model(cfg.model.name)
        self.out = Path(out_dir)
        self.report: dict[str, str] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        self._scorer: score.Scorer | None = None
        self._evaluation_scorer: score.Scorer | None = None
        self.trained_pipeline: str | None = None  # engine.loop.rounds: the pipeline this round trains on

    @property
    def model_pipeline(self) -> str:
        """The pipeline whose transformer is trained and evaluated (generation's, unless a round set it)."""
        return self.trained_pipeline or self.cfg.generation.pipeline

    # --------------------------------------------------------------------------------------- helpers
    def _say(self, stage: str, message: str) -> None:
        self.report[stage] = message
        print(f"[{stage}] {message}", flush=True)

    @property
    def generated(self) -> Path:
        return self.out / "generated"

    @property
    def manifest(self) -> Path:
        return self.generated / generate.MANIFEST

    def _prompt_file(self, name: str, given: str | None, builtin: tuple[str, ...]) -> str:
        if given is not None:
            return given
        if not self.builtin:
            raise ValueError(
                f"loop: no prompt file for {name} (set loop.generation.prompts / loop.evaluate.prompts)"
            )
        path = self.out / f"{name}.txt"
        if not path.is_file():
            write_atomic(path, "\n".join(builtin) + "\n")
        return str(path)

    def scorer(self) -> score.Scorer:
        if self._scorer is None:
            self._scorer = score.Scorer.build(self.cfg.score)
        return self._scorer

    def evaluation_scorer(self) -> score.Scorer:
        """The evaluation's scorer: loop.evaluate.score's geometry model when set (the authors evaluate with
        Depth Anything 3), else the one that scored the pairs."""
        if self.cfg.evaluate.score is None:
            return self.scorer()
        if self._evaluation_scorer is None:
            self._evaluation_scorer = score.Scorer.build(self.cfg.evaluate.score)
        return self._evaluation_scorer

    # ---------------------------------------------------------------------------------------- stages
    def prepare_models(self) -> None:
        """A built-in model's pipeline, random VGGT and random LightGlue (written once); real models: check
        the folders. Shards of a sharded evaluate in one folder take turns: one builds, the others find
        them."""
        with one_at_a_time(self.out, "models"):
            built = prepare_models(
                self.cfg, self.config.model.path, self.builtin, self.out / "models", self.config.seed
            )
        gen, sc = self.cfg.generation, self.cfg.score
        self._say(
            "models",
            f"pipeline {gen.pipeline}; geometry {sc.geometry} {sc.weights or ''}"
            + (f" (built: {', '.join(built)})" if built else ""),
        )

    def generate(self) -> Path:
        if self.cfg.candidates == "synthetic":
            return self.synthetic_candidates()
        prompts = self._prompt_file("prompts", self.cfg.generation.prompts, TINY_PROMPTS)
        if self.cfg.launcher:
            self.cfg.generation.prompts = prompts
            self._launch("generate", "--out-dir", self.generated)
            summary = generate.GenerationSummary(self.manifest)
            made = {Path(r["video"]).stem for r in read_sharded(self.manifest)}
            failures = read_sharded(self.generated / generate.FAILURES)
            summary.failed = sorted({r["candidate"] for r in failures} - made)
            self._say(
                "generate", f"{len(read_sharded(self.manifest))} candidates in {self.manifest} (launched)"
            )
        else:
            summary = generate.run(self.cfg.generation, prompts, self.generated, shard=WHOLE)
            self._say("generate", str(summary))
        if summary.failed:
            print(
                f"[generate] WARNING: {len(summary.failed)} candidates failed: {summary.failed[:5]}",
                flush=True,
            )
        return summary.manifest

    def synthetic_candidates(self) -> Path:
        """Procedural scenes as the candidates (a scene = a prompt), at the generation's video size."""
        from videogpa.engine.scenes.procedural import CORRUPTIONS
        from videogpa.engine.scenes.video_set import write_synthetic_set

        manifest = self.manifest
        if manifest.is_file() and all("prompt_id" in r for r in read_jsonl(manifest)):
            self._say("generate", f"synthetic candidates complete; skipped ({manifest})")
            return manifest
        syn, sampler = self.cfg.synthetic, generate.sampler_settings(self.cfg.generation)
        if sampler.height != sampler.width:
            raise ValueError(
                "loop.candidates synthetic: the scenes are square; set generation height = width"
            )
        kinds = tuple(syn.kinds) if syn.kinds is not None else CORRUPTIONS
        write_synthetic_set(
            self.generated,
            syn.scenes,
            n_frames=sampler.num_frames,
            size=sampler.height,
            kinds=kinds,
            seed=syn.seed,
        )
        rows = read_jsonl(manifest)
        for row in rows:  # the scene is the prompt: its clean clip and its corruptions are the candidates
            row["prompt_id"] = f"scene{row['group']:04d}"
            row["prompt"] = f"a synthetic scene of boxes, the camera moves ({row['camera_path']})"
            row["seed"] = row["scene_seed"]
        write_jsonl_atomic(manifest, rows)
        self._say(
            "generate", f"{len(rows)} synthetic candidates of {syn.scenes} scenes (kinds {list(kinds)})"
        )
        return manifest

    def score(self, manifest: Path) -> Path:
        scores = manifest.parent / self.cfg.score.scores_file
        if not score.unscored(manifest, scores):
            self._say("score", f"complete; skipped ({scores})")
            return scores
        if self.cfg.candidates == "synthetic":  # exact geometry: the oracle
            oracle = dataclasses.replace(self.cfg.score, geometry="oracle", random_weights=False)
            summary = score.run(oracle, manifest, manifest.parent, shard=WHOLE)
        elif self.cfg.launcher:
            self._launch("score", "--videos", manifest, "--out", scores)
            summary = score.summarize_scores(scores)
        else:
            summary = score.run(self.cfg.score, manifest, manifest.parent, scorer=self.scorer(), shard=WHOLE)
        self._say("score", str(summary))
        return summary.scores

    def pairs(self, scores: Path, manifest: Path) -> Path:
        summary = pairs.run(self.cfg.pairs, scores, self.out / "pairs", manifest=manifest)
        if not summary.pairs:
            raise ValueError(f"pairs: no pair survived the filters ({summary}); nothing to train")
        self._say("pairs", str(summary))
        return summary.index

    def encode(self, index: Path) -> Path:
        if self.cfg.launcher:
            self._launch("encode", "--pairs", index, "--out-dir", self.out / "shards")
            self._say("encode", f"shards in {self.out / 'shards'} (launched)")
            return self.out / "shards"
        summary = encode.run(self.cfg.encode, index, self.out / "shards", shard=WHOLE)
        self._say("encode", str(summary))
        return summary.out_dir

    def trainer_config(self, shards: Path) -> dict:
        """The trainer config of this loop: its shards, its pipeline's transformer, DIR/train."""
        from videogpa.engine.data.preference import PreferenceDataset

        data = self.config.to_dict()
        data["loop"] = None
        data["data"] = {"train": str(shards / "train"), "heldout": None, "synthetic": None}
        if (shards / "heldout").is_dir():
            data["data"]["heldout"] = str(shards / "heldout")
        data["model"]["path"] = str(Path(self.model_pipeline).resolve())
        data["output_dir"] = str(self.out / "train")
        for item in self.cfg.train_overrides:
            apply_override(data, item)
        n_train = len(PreferenceDataset(shards / "train"))
        train = data["train"]
        global_batch = train["global_batch_size"]
        if n_train < global_batch:  # a small loop: one global batch is the whole training set
            train["global_batch_size"] = n_train
            micro = train["micro_batch_size"]  # None: the trainer splits the global batch over the ranks
            if micro is not None:
                train["micro_batch_size"] = math.gcd(min(micro, n_train), n_train)
            print(
                f"[train] {n_train} training pairs < global batch {global_batch}: global batch {n_train}",
                flush=True,
            )
        config_from_dict(copy.deepcopy(data))  # validate before launching
        return data

    def train(self, shards: Path) -> Path:
        """The trainer in a subprocess (its launcher); returns the LoRA file."""
        from videogpa.engine.train.checkpoint import latest_checkpoint

        run = self.out / "train"
        lora = trained_lora_file(run)
        if lora.is_file():
            self._say("train", f"complete; skipped ({lora})")
            return lora
        if not self.config.lora.enabled:
            raise ValueError(
                "loop: evaluation needs a LoRA run (lora.enabled: true); full fine-tuning is not wired"
            )
        config = self.out / "train_config.yaml"
        write_atomic(config, yaml.safe_dump(self.trainer_config(shards), sort_keys=False))
        command = [
            *recipe_command(self.cfg.train_launcher or [sys.executable], "dpo"),
            "--config",
            str(config),
        ]
        command += ["--output-dir", str(run)]
        # the loop's own run folder: resume it, or (killed before its first checkpoint) start it over
        command.append("--resume" if run.is_dir() and latest_checkpoint(run) is not None else "--overwrite")
        print(f"[train] {' '.join(command)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, env=child_env(PYTHONUNBUFFERED="1"))
        lora = trained_lora_file(run)
        if done.returncode != 0 or not lora.is_file():
            raise RuntimeError(f"train: {' '.join(command)} failed (exit {done.returncode}); rerun to resume")
        accuracy = ""
        if (run / "eval.json").is_file():
            ev = json.loads((run / "eval.json").read_text())
            accuracy = (
                f"; held-out pair accuracy {100 * ev['heldout_accuracy_before']:.1f}% -> "
                f"{100 * ev['heldout_accuracy_after']:.1f}%"
            )
        self._say("train", f"LoRA {lora} in {time.perf_counter() - start:.0f} s{accuracy}")
        return lora

    def evaluate(self, lora: str | os.PathLike | None = None, shard: Shard = WHOLE) -> dict:
        """Held-out prompts with the same seeds, without and with the LoRA; DIR/evaluation.json (`shard`: this
        process's share, recipes/evaluate.py --shard)."""
        ev = self.cfg.evaluate
        lora = Path(lora) if lora is not None else trained_lora_file(self.out / "train")
        prompts = self._prompt_file("eval_prompts", ev.prompts, TINY_EVAL_PROMPTS)
        if self.cfg.launcher and not shard.sharded and not (self.out / evaluate.EVALUATION_FILE).is_file():
            config = copy.deepcopy(self.config)
            config.loop.evaluate.prompts = prompts
            config.loop.generation.pipeline, config.loop.generation.lora = self.model_pipeline, None
            self._launch("evaluate", "--output-dir", self.out, "--lora", lora, "--in-loop", config=config)
            result = json.loads((self.out / evaluate.EVALUATION_FILE).read_text())
            self._say("evaluate", f"{self.out / evaluate.EVALUATION_FILE} (launched)")
            return result
        generation = dataclasses.replace(self.cfg.generation, pipeline=self.model_pipeline)
        inputs = evaluate.EvaluateInputs(prompts, lora, generation)
        summary = evaluate.run(ev, inputs, self.out, self.evaluation_scorer, shard=shard)
        self._say("evaluate", str(summary))
        return summary.result

    def _launch(self, recipe: str, *args, config: Config | None = None) -> None:
        """videogpa.recipes.RECIPE under loop.launcher with this loop's resolved config (or `config`)."""
        launch_recipe(self.cfg.launcher, recipe, config or self.config, self.out, *args)

    def lock(self, shard: Shard = WHOLE):
        """One loop per folder at a time (engine.io.lock); a shard of a sharded stage run (recipes/evaluate.py
        --shard) holds its own (the stage's shard locks refuse a whole run beside it)."""
        return folder_lock(
            self.out, LOCK_NAME if not shard.sharded else f"{LOCK_NAME}.shard-{shard.index}-of-{shard.count}"
        )

    def run(self) -> dict:
        with self.lock():
            start = time.perf_counter()
            self.prepare_models()
            manifest = self.generate()
            scores = self.score(manifest)
            index = self.pairs(scores, manifest)
            shards = self.encode(index)
            lora = self.train(shards)
            result = self.evaluate(lora)
            self.report["seconds"] = f"{time.perf_counter() - start:.0f}"
            write_json_atomic(self.out / "loop_summary.json", self.report)
            report = write_report(self.out)
            print(
                f"\nloop done in {self.report['seconds']} s; "
                f"before/after table: {self.out / evaluate.EVALUATION_FILE}",
                flush=True,
            )
            print(f"report (open it in a browser): {report}", flush=True)
            return result
