"""The built-in tiny demo, in one place: the loop's defaults for a model that ships its pipeline in code (the
tiny one), its prompts, and the random models it builds once (pipeline, VGGT, LightGlue). Its scores mean
nothing: it exercises every stage on a CPU in minutes."""

from __future__ import annotations

from pathlib import Path

from videogpa.engine.core.config import LoopConfig, ScoreConfig

TINY_PROMPTS = (
    "a red barn in a green field",
    "an old stone bridge over a river",
    "a quiet library with tall shelves",
    "a lighthouse on a rocky coast",
    "a kitchen with a wooden table",
    "a narrow street in an old town",
    "a greenhouse full of plants",
    "a snowy mountain cabin",
)
TINY_EVAL_PROMPTS = ("a sunlit museum hall", "a harbour with fishing boats", "a desert canyon")
# The built-in model's loop: every stage on a CPU in minutes. Scores from a random VGGT are noise, so no
# pair filter.
BUILTIN_LOOP: dict = {
    "generation": {"num_candidates": 3, "camera_motion": True, "batch_size": 3, "steps": 4},
    "score": {"geometry": "vggt", "num_frames": 8, "random_weights": True},
    "pairs": {"min_gap": 0.0, "min_motion": 0.0},
    "encode": {"heldout_fraction": 0.25},
    "evaluate": {"num_candidates": 2},
    "train_overrides": ["train.max_steps=30", "train.checkpoint_every=15", "train.log_every=10"],
}


def has_builtin_model(model: object) -> bool:
    """A family that ships its pipeline built in code (the tiny model): the loop can run with no files."""
    from videogpa.engine.models import adapter_class  # imported here: the loop's config is read without it

    try:
        return adapter_class(model).ships_pipeline
    except (ValueError, TypeError):
        return False  # an unknown model: the config's validation names it


def tiny_matcher(builtin: bool, cfg: ScoreConfig, models: Path, seed: int) -> list[str]:
    """A built-in model's loop asking for the epipolar metric without LightGlue weights gets a random tiny
    LightGlue + SuperPoint (written once into `models`; matching at the scored size, 256 keypoints; its scores
    are flagged as not meaningful); a real model's loop gets a clear error instead. Returns what was built."""
    epi = cfg.epipolar
    if "epipolar" not in cfg.metrics or epi.matcher != "lightglue" or epi.lightglue_weights:
        return []
    if not builtin:
        raise ValueError("loop: set loop.score.epipolar.lightglue_weights (a local LightGlue folder)")
    from videogpa.engine.geometry.lightglue import write_random_lightglue

    folder = models / "lightglue_tiny_random"
    built = [] if (folder / "config.json").is_file() else ["tiny random LightGlue"]
    if built:
        write_random_lightglue(folder, seed=seed)
    epi.lightglue_weights, cfg.random_weights = str(folder), True
    # matched at the scored size with the folder's 256 keypoints: the authors' 1024-px resize and 2,048
    # keypoints cost seconds per frame on a CPU, for matches that mean nothing with random weights
    epi.size = epi.max_keypoints = None
    return built


def prepare_models(
    loop: LoopConfig, model_path: str | None, builtin: bool, models: Path, seed: int
) -> list[str]:
    """Fill in the loop's model folders: the pipeline from model.path, or for a built-in model its random
    pipeline, random VGGT and random LightGlue (written once into `models`); a real model missing one is a
    one-line error. Returns what was built."""
    from videogpa.engine.models import adapter_class
    from videogpa.engine.models.pipelines import pipeline_folder, save_pipeline

    gen, sc = loop.generation, loop.score
    if gen.pipeline is None and model_path is not None:
        gen.pipeline = str(pipeline_folder(model_path))
    built = []
    if gen.pipeline is None:
        if not builtin:
            raise ValueError("loop: set loop.generation.pipeline (a local diffusers pipeline folder)")
        folder = models / "pipeline"
        if not (folder / "model_index.json").is_file():
            save_pipeline(adapter_class(gen.model).builtin_pipeline(), folder)
            built.append("built-in random pipeline")
        gen.pipeline = str(folder)
    loop.encode.pipeline = loop.encode.pipeline or gen.pipeline
    if sc.geometry == "vggt" and sc.weights is None:
        if not builtin:
            raise ValueError("loop: set loop.score.weights (a local VGGT safetensors file)")
        weights = models / "vggt_tiny_random.safetensors"
        if not weights.is_file():
            import torch

            from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                save_vggt(random_vggt(TINY_CONFIG), weights)
            built.append("tiny random VGGT")
        sc.weights, sc.random_weights = str(weights), True
    built += tiny_matcher(builtin, sc, models, seed)
    return built
