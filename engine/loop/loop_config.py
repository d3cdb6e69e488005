"""Reading the loop's config: the trainer YAML plus its `loop:` section, checked whole before any model is
imported (a bad `--set` or placeholder is reported in seconds)."""

from __future__ import annotations

import os
from pathlib import Path

from videogpa.engine.core.config import Config, ModelConfig
from videogpa.engine.core.config_loading import (
    config_from_dict,
    config_tree,
    merge_dicts,
    read_config_dict,
    require_real_paths,
)
from videogpa.engine.loop.demo import BUILTIN_LOOP, has_builtin_model
from videogpa.engine.loop.launch import recipe_command
from videogpa.engine.train.run_logs import wandb_login_problem


def load_loop_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read the YAML with its overrides (`loop.*` for the loop) and validate the whole tree; a built-in
    model's loop starts from BUILTIN_LOOP, a real model needs its own `loop:` section. Unknown keys, wrong
    types, placeholders (but `data`, which the encode stage fills) and launchers that cannot run a stage are
    named before anything heavy is imported."""
    path = Path(path)
    data = read_config_dict(path, overrides)
    # keys, types, placeholders and launchers first: seconds, before the model registry is imported
    given_config = config_tree(data, path)
    require_real_paths(given_config, set_later=("data",))  # the training stage's data: the encode stage's
    if given_config.loop is not None:
        for launcher in (given_config.loop.launcher, given_config.loop.train_launcher):
            if launcher:
                recipe_command(launcher, "dpo")
    model = (data.get("model") or {}).get("name", ModelConfig.name)
    given = data.get("loop")
    try:
        if given is None and not has_builtin_model(model):
            raise ValueError(
                "section 'loop' is missing: a real model needs loop.generation.prompts and "
                "loop.score.weights "
                "(and loop.generation.pipeline or model.path inside a local diffusers pipeline folder)"
            )
        for stage in ("generation", "encode"):
            named = ((given or {}).get(stage) or {}).get("model")
            if named is not None and named != model:
                raise ValueError(f"loop.{stage}.model ({named!r}) must match model.name ({model!r})")
        if has_builtin_model(model):
            data["loop"] = merge_dicts(BUILTIN_LOOP, given or {})
        cfg = config_from_dict(data)
        problem = wandb_login_problem(cfg)  # the training stage logs to W&B: known before any generation
        if problem:
            raise ValueError(problem)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    cfg.loop.encode.seed = cfg.seed
    return cfg
