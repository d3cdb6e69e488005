"""Running a stage's recipe under the loop's launcher (python, torchrun, the deepspeed launcher) as the module
videogpa.recipes.<stage>, not by a file path: each rank takes its share of the stage's items, with the loop's
resolved config written beside the loop's outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from videogpa.engine.core.config import Config
from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.runtime.distributed import child_env

RECIPES = "videogpa.recipes"
MODULE_FLAGS = {"python": "-m", "torchrun": "-m", "deepspeed": "--module"}


def recipe_command(launcher: list[str], recipe: str) -> list[str]:
    """The launcher's command for recipes/<recipe>.py as a module: `python -m`, `torchrun ... -m`,
    `deepspeed ... --module` (the launcher's last program among python*, torchrun and deepspeed decides, so
    wrappers such as `srun` may come first). Another launcher is a ValueError naming it."""
    programs = [Path(arg).name for arg in launcher]
    known = [p for p in programs if p in MODULE_FLAGS or p.startswith("python")]
    if not known:
        raise ValueError(
            f"launcher {launcher}: expected a python, torchrun or deepspeed command "
            "(the loop runs its stages as modules: python -m, torchrun -m, deepspeed --module)"
        )
    flag = MODULE_FLAGS.get(known[-1], "-m")
    return [*launcher, flag, f"{RECIPES}.{recipe}"]


def launch_recipe(
    launcher: list[str], recipe: str, config: Config, out: Path, *args: str | os.PathLike
) -> None:
    """`launcher -m videogpa.recipes.RECIPE --config OUT/stage_config.yaml ARGS`; a failure is a RuntimeError
    saying to rerun."""
    path = out / "stage_config.yaml"
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    command = [*recipe_command(launcher, recipe), "--config", str(path), *map(str, args)]
    print(f"[{recipe}] {' '.join(command)}", flush=True)
    done = subprocess.run(command, env=child_env(PYTHONUNBUFFERED="1"))
    if done.returncode != 0:
        raise RuntimeError(f"{recipe}: {' '.join(command)} failed (exit {done.returncode}); rerun to resume")
