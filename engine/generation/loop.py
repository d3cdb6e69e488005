"""The whole VideoGPA loop in one folder: generate → score → pairs → encode → train → evaluate.

The config is a trainer YAML (engine.config) plus an optional `loop:` section (LoopConfig below). Each stage
skips what is already complete and resumes what is not; nothing produced is overwritten:

    DIR/models/            the tiny loop's pipeline and random VGGT (built once)
    DIR/generated/         manifest.jsonl, videos/, latents/, scores.jsonl
    DIR/pairs/             pairs.jsonl, pairs_report.json, histograms
    DIR/shards/            train/ (and heldout/) preference shards
    DIR/train_config.yaml  the trainer config the loop derived; DIR/train/ the run (LoRA, metrics, checkpoints)
    DIR/eval/{base,lora}/  held-out prompts generated without / with the LoRA, and their scores
    DIR/evaluation.json    the before/after table (also .md and .png)

With the tiny model and no `loop:` section the loop runs on built-in prompts with a random-weights VGGT: it
exercises every stage on a CPU in minutes, and its scores (hence its pairs and its evaluation) mean nothing.

A real model's config adds, for example (model.path: /models/CogVideoX-5b/transformer):

    loop:
      generation: {prompts: prompts.txt, num_candidates: 4, camera_motion: true, batch_size: 4}
      score: {weights: /models/vggt_1b.safetensors, vgg_weights: /models/vgg16.pth,
              lpips_weights: /models/lpips_vgg.pth}
      encode: {heldout_fraction: 0.05}
      evaluate: {prompts: heldout_prompts.txt, num_candidates: 2}
      train_launcher: [deepspeed, --num_gpus, "8"]
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from videogpa.engine.config import apply_override, build_dataclass, config_from_dict, read_config_dict
from videogpa.engine.data.records import write_atomic, write_json_atomic
from videogpa.engine.generation.generate import MANIFEST, GenerationConfig, run_generation
from videogpa.engine.generation.scoring import ScoreConfig, Scorer, score_summary, unscored

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
CANDIDATE_SOURCES = ("generate", "synthetic")
EVALUATION_FILE = "evaluation.json"


@dataclass
class PairsConfig:
    min_gap: float = 0.05
    min_motion: float = 0.001


@dataclass
class EncodeConfig:
    heldout_fraction: float = 0.0  # pairs kept out of training (the trainer reports their accuracy)
    shard_size: int = 64
    device: str | None = None  # None: cuda when available, else cpu


@dataclass
class EvaluateConfig:
    prompts: str | None = None  # held-out prompt file (never used for training)
    num_candidates: int = 2  # seeds per prompt, the same with and without the LoRA
    seed: int = 1000
    lora_scale: float = 1.0


@dataclass
class SyntheticCandidates:
    """candidates: synthetic — each "prompt" is one procedural scene (engine.data.synthetic): its clean clip
    and corrupted versions, with exact geometry, so the oracle scores them meaningfully."""

    scenes: int = 8
    kinds: list[str] | None = None  # corruption kinds (None: all)
    seed: int = 0


@dataclass
class LoopConfig:
    candidates: str = "generate"  # "generate": N videos per prompt from the model; "synthetic": scenes
    synthetic: SyntheticCandidates = field(default_factory=SyntheticCandidates)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_overrides: list[str] = field(default_factory=list)  # trainer `key=value` overrides
    train_launcher: list[str] = field(default_factory=list)  # e.g. [deepspeed, --num_gpus, "8"]; [] = python


TINY_PROMPTS = (
    "a red barn in a green field", "an old stone bridge over a river", "a quiet library with tall shelves",
    "a lighthouse on a rocky coast", "a kitchen with a wooden table", "a narrow street in an old town",
    "a greenhouse full of plants", "a snowy mountain cabin",
)  # fmt: skip
TINY_EVAL_PROMPTS = ("a sunlit museum hall", "a harbour with fishing boats", "a desert canyon")
# The tiny loop: every stage on a CPU in minutes. Scores from a random VGGT are noise, so no pair filter.
TINY_LOOP: dict = {
    "generation": {"num_candidates": 3, "camera_motion": True, "batch_size": 3, "steps": 4},
    "score": {"num_frames": 8, "random_weights": True},
    "pairs": {"min_gap": 0.0, "min_motion": 0.0},
    "encode": {"heldout_fraction": 0.25},
    "evaluate": {"num_candidates": 2},
    "train_overrides": ["train.max_steps=30", "train.checkpoint_every=15", "train.log_every=10"],
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@dataclass
class LoopSetup:
    trainer: dict  # the trainer config as a dict (validated), before the loop's data/model settings
    loop: LoopConfig
    tiny: bool


def load_loop_config(path: str | os.PathLike, overrides: list[str] | None = None) -> LoopSetup:
    """Read the YAML: the trainer's sections are validated by engine.config, `loop:` by LoopConfig.
    Overrides `a.b=value` apply to either (loop.* for the loop)."""
    path = Path(path)
    data = read_config_dict(path, overrides)
    loop_data = data.pop("loop", None)
    try:
        trainer = config_from_dict(copy.deepcopy(data))
        tiny = trainer.model.name == "tiny"
        if loop_data is None and not tiny:
            raise ValueError(
                "section 'loop' is missing: a real model needs loop.generation.prompts and loop.score.weights "
                "(and loop.generation.pipeline or model.path inside a local diffusers pipeline folder)"
            )
        merged = _merge(TINY_LOOP, loop_data or {}) if tiny else loop_data
        loop = build_dataclass(LoopConfig, merged, "loop")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if loop.candidates not in CANDIDATE_SOURCES:
        raise ValueError(
            f"{path}: loop.candidates: expected one of {CANDIDATE_SOURCES}, got {loop.candidates!r}"
        )
    given = ((loop_data or {}).get("generation") or {}).get("model")
    if given is not None and given != trainer.model.name:
        raise ValueError(
            f"{path}: loop.generation.model ({given!r}) must match model.name ({trainer.model.name!r})"
        )
    loop.generation.model = trainer.model.name
    return LoopSetup(data, loop, tiny)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, owned by another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class Loop:
    """Runs the stages of one loop folder."""

    def __init__(self, setup: LoopSetup, out_dir: str | os.PathLike, dpo_script: str | os.PathLike):
        self.setup, self.cfg = setup, setup.loop
        self.out = Path(out_dir)
        self.dpo_script = Path(dpo_script)
        self.report: dict[str, str] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        self._scorer: Scorer | None = None

    # --------------------------------------------------------------------------------------- helpers
    def _say(self, stage: str, message: str) -> None:
        self.report[stage] = message
        print(f"[{stage}] {message}", flush=True)

    @property
    def generated(self) -> Path:
        return self.out / "generated"

    def _prompt_file(self, name: str, given: str | None, builtin: tuple[str, ...]) -> str:
        if given is not None:
            return given
        if not self.setup.tiny:
            raise ValueError(
                f"loop: no prompt file for {name} (set loop.generation.prompts / loop.evaluate.prompts)"
            )
        path = self.out / f"{name}.txt"
        if not path.is_file():
            write_atomic(path, "\n".join(builtin) + "\n")
        return str(path)

    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer.build(self.cfg.score)
        return self._scorer

    # ---------------------------------------------------------------------------------------- stages
    def prepare_models(self) -> None:
        """The tiny loop's pipeline and random VGGT (written once); real models: check the folders."""
        from videogpa.engine.generation.pipelines import pipeline_folder

        gen, score = self.cfg.generation, self.cfg.score
        model_path = self.setup.trainer.get("model", {}).get("path")
        if gen.pipeline is None and model_path is not None:
            gen.pipeline = str(pipeline_folder(model_path))
        built = []
        if gen.pipeline is None:
            if not self.setup.tiny:
                raise ValueError("loop: set loop.generation.pipeline (a local diffusers pipeline folder)")
            from videogpa.engine.generation.tiny import write_tiny_pipeline

            folder = self.out / "models" / "pipeline"
            if not (folder / "model_index.json").is_file():
                write_tiny_pipeline(folder)
                built.append("tiny random pipeline")
            gen.pipeline = str(folder)
        if score.geometry == "vggt" and score.weights is None:
            if not self.setup.tiny:
                raise ValueError("loop: set loop.score.weights (a local VGGT safetensors file)")
            weights = self.out / "models" / "vggt_tiny_random.safetensors"
            if not weights.is_file():
                import torch

                from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGT, save_vggt

                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.setup.trainer.get("seed", 0))
                    save_vggt(VGGT(TINY_CONFIG), weights)
                built.append("tiny random VGGT")
            score.weights, score.random_weights = str(weights), True
        self._say("models", f"pipeline {gen.pipeline}; geometry {score.geometry} {score.weights or ''}"
                  + (f" (built: {', '.join(built)})" if built else ""))  # fmt: skip

    def generate(self) -> None:
        if self.cfg.candidates == "synthetic":
            return self.synthetic_candidates()
        prompts = self._prompt_file("prompts", self.cfg.generation.prompts, TINY_PROMPTS)
        summary = run_generation(self.cfg.generation, self.generated, prompts=prompts)
        self._say("generate", str(summary))
        if summary.failed:
            print(
                f"[generate] WARNING: {len(summary.failed)} candidates failed: {summary.failed[:5]}",
                flush=True,
            )

    def synthetic_candidates(self) -> None:
        """Procedural scenes as the candidates (a scene = a prompt), at the generation's video size."""
        from videogpa.engine.data.records import read_jsonl, write_jsonl_atomic
        from videogpa.engine.data.synthetic import CORRUPTIONS
        from videogpa.engine.data.synthetic_set import write_synthetic_set

        manifest = self.generated / MANIFEST
        if manifest.is_file() and all("prompt_id" in r for r in read_jsonl(manifest)):
            self._say("generate", f"synthetic candidates complete; skipped ({manifest})")
            return
        syn, sampler = self.cfg.synthetic, self.cfg.generation.sampler()
        if sampler.height != sampler.width:
            raise ValueError(
                "loop.candidates synthetic: the scenes are square; set generation height = width"
            )
        kinds = tuple(syn.kinds) if syn.kinds is not None else CORRUPTIONS
        write_synthetic_set(self.generated, syn.scenes, n_frames=sampler.num_frames, size=sampler.height,
                            kinds=kinds, seed=syn.seed)  # fmt: skip
        rows = read_jsonl(manifest)
        for row in rows:  # the scene is the prompt: its clean clip and its corruptions are the candidates
            row["prompt_id"] = f"scene{row['group']:04d}"
            row["prompt"] = f"a synthetic scene of boxes, the camera moves ({row['camera_path']})"
            row["seed"] = row["scene_seed"]
        write_jsonl_atomic(manifest, rows)
        self._say(
            "generate", f"{len(rows)} synthetic candidates of {syn.scenes} scenes (kinds {list(kinds)})"
        )

    def score(self, manifest: Path | None = None, stage: str = "score") -> Path:
        manifest = manifest or self.generated / MANIFEST
        scores = manifest.parent / "scores.jsonl"
        if not unscored(manifest, scores):
            self._say(stage, f"complete; skipped ({scores})")
            return scores
        if stage == "score" and self.cfg.candidates == "synthetic":  # exact geometry: the oracle
            oracle = dataclasses.replace(self.cfg.score, geometry="oracle", random_weights=False)
            Scorer.build(oracle).score(manifest, scores)
        else:
            self.scorer().score(manifest, scores)
        from videogpa.engine.data.records import read_jsonl

        self._say(stage, score_summary(read_jsonl(scores)))
        return scores

    def pairs(self) -> Path:
        from videogpa.engine.generation.pairs import PAIRS_FILE, build_pairs, format_report

        result = build_pairs(
            self.generated / "scores.jsonl", self.out / "pairs", manifest=self.generated / MANIFEST,
            min_gap=self.cfg.pairs.min_gap, min_motion=self.cfg.pairs.min_motion,
        )  # fmt: skip
        if not result.pairs:
            raise ValueError(
                f"pairs: no pair survived the filters ({format_report(result.report)}); nothing to train"
            )
        self._say("pairs", format_report(result.report) + ("" if result.changed else " (unchanged)"))
        return self.out / "pairs" / PAIRS_FILE

    def encode(self) -> None:
        from videogpa.engine.generation.encode import run_encode

        enc = self.cfg.encode
        summary = run_encode(
            self.cfg.generation.model, self.cfg.generation.pipeline, self.out / "pairs" / "pairs.jsonl",
            self.out / "shards", heldout_fraction=enc.heldout_fraction, seed=self.setup.trainer.get("seed", 0),
            shard_size=enc.shard_size, device=enc.device,
        )  # fmt: skip
        self._say("encode", str(summary))

    def trainer_config(self) -> dict:
        """The trainer config of this loop: its shards, its pipeline's transformer, DIR/train."""
        from videogpa.engine.data.preference import PreferenceDataset

        data = copy.deepcopy(self.setup.trainer)
        shards = self.out / "shards"
        data["data"] = {"train": str(shards / "train"), "heldout": None, "synthetic": None}
        if (shards / "heldout").is_dir():
            data["data"]["heldout"] = str(shards / "heldout")
        data.setdefault("model", {})["path"] = str(Path(self.cfg.generation.pipeline).resolve())
        data["output_dir"] = str(self.out / "train")
        for item in self.cfg.train_overrides:
            apply_override(data, item)
        n_train = len(PreferenceDataset(shards / "train"))
        train = data.setdefault("train", {})
        global_batch = train.get("global_batch_size", 16)
        if n_train < global_batch:  # a small loop: one global batch is the whole training set
            train["global_batch_size"] = n_train
            micro = train.get("micro_batch_size")  # None: the trainer splits the global batch over the ranks
            if micro is not None:
                train["micro_batch_size"] = math.gcd(min(micro, n_train), n_train)
            print(
                f"[train] {n_train} training pairs < global batch {global_batch}: global batch {n_train}",
                flush=True,
            )
        config_from_dict(copy.deepcopy(data))  # validate before launching
        return data

    def train(self) -> Path:
        from videogpa.engine.checkpoint import latest_checkpoint

        run = self.out / "train"
        if (run / LORA_FILE).is_file():
            self._say("train", f"complete; skipped ({run / LORA_FILE})")
            return run
        if self.setup.trainer.get("lora", {}).get("enabled", True) is False:
            raise ValueError(
                "loop: evaluation needs a LoRA run (lora.enabled: true); full fine-tuning is not wired"
            )
        config = self.out / "train_config.yaml"
        write_atomic(config, yaml.safe_dump(self.trainer_config(), sort_keys=False))
        command = [
            *(self.cfg.train_launcher or [sys.executable]),
            str(self.dpo_script),
            "--config",
            str(config),
        ]
        command += ["--output-dir", str(run)]
        if run.is_dir() and latest_checkpoint(run) is not None:
            command.append("--resume")
        print(f"[train] {' '.join(command)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0 or not (run / LORA_FILE).is_file():
            raise RuntimeError(f"train: {' '.join(command)} failed (exit {done.returncode}); rerun to resume")
        accuracy = ""
        if (run / "eval.json").is_file():
            ev = json.loads((run / "eval.json").read_text())
            accuracy = (f"; held-out pair accuracy {100 * ev['heldout_accuracy_before']:.1f}% -> "
                        f"{100 * ev['heldout_accuracy_after']:.1f}%")  # fmt: skip
        self._say("train", f"LoRA {run / LORA_FILE} in {time.perf_counter() - start:.0f} s{accuracy}")
        return run

    def evaluate(self, lora: str | os.PathLike | None = None) -> dict:
        """Held-out prompts with the same seeds, without and with the LoRA; DIR/evaluation.json."""
        from videogpa.engine.evaluation import compare_scores, format_table, plot_comparison

        path = self.out / EVALUATION_FILE
        if path.is_file():
            self._say("evaluate", f"complete; skipped ({path})")
            return json.loads(path.read_text())
        ev = self.cfg.evaluate
        lora = Path(lora) if lora is not None else self.out / "train" / LORA_FILE
        prompts = self._prompt_file("eval_prompts", ev.prompts, TINY_EVAL_PROMPTS)
        gen = dataclasses.replace(self.cfg.generation, num_candidates=ev.num_candidates, seed=ev.seed)
        scores = {}
        for name, adapter in (("base", None), ("lora", lora)):
            folder = self.out / "eval" / name
            summary = run_generation(gen, folder, prompts=prompts, lora=adapter, lora_scale=ev.lora_scale)
            print(f"[evaluate] {name}: {summary}", flush=True)
            scores[name] = self.score(folder / MANIFEST, stage=f"evaluate/{name} score")
        result = compare_scores(scores["base"], scores["lora"])
        result.update({"lora": str(lora), "lora_scale": ev.lora_scale, "prompts_file": prompts,
                       "seeds": list(range(ev.seed, ev.seed + ev.num_candidates))})  # fmt: skip
        train_eval = lora.parent / "eval.json" if lora.is_file() else lora / "eval.json"
        if train_eval.is_file():  # the trainer's preference accuracy on held-out pairs, before/after
            result["heldout_pairs"] = json.loads(train_eval.read_text())
        table = format_table(result)
        write_atomic(self.out / "evaluation.md", table + "\n")
        plot_comparison(result, self.out / "evaluation.png")
        write_json_atomic(path, result)
        print(table, flush=True)
        self._say("evaluate", f"{path}: LoRA wins {100 * result['prompt_win_rate']:.1f}% of prompts")
        return result

    @contextlib.contextmanager
    def lock(self):
        """One loop per folder at a time: DIR/.loop.lock holds the owner's pid (a dead owner's lock is taken
        over)."""
        path = self.out / ".loop.lock"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                owner = path.read_text().strip()
                if owner.isdigit() and _alive(int(owner)):
                    raise ValueError(
                        f"{self.out} is in use by another loop (pid {owner}; lock {path})"
                    ) from None
                path.unlink(missing_ok=True)  # stale: its process is gone
        else:
            raise ValueError(f"could not take the lock {path}")
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def run(self) -> dict:
        with self.lock():
            return self._run()

    def _run(self) -> dict:
        start = time.perf_counter()
        self.prepare_models()
        self.generate()
        self.score()
        self.pairs()
        self.encode()
        self.train()
        result = self.evaluate()
        self.report["seconds"] = f"{time.perf_counter() - start:.0f}"
        write_json_atomic(self.out / "loop_summary.json", self.report)
        print(
            f"\nloop done in {self.report['seconds']} s; before/after table: {self.out / EVALUATION_FILE}",
            flush=True,
        )
        return result
