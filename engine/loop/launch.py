"""Running a stage's recipe under the loop's launcher (torchrun, the deepspeed launcher): each rank takes its
share of the stage's items, with the loop's resolved config written beside the loop's outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from videogpa.engine.core.config import Config
from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.runtime.distributed import child_env


def launch_recipe(
    launcher: list[str], script: Path, config: Config, out: Path, *args: str | os.PathLike
) -> None:
    """`launcher script --config OUT/stage_config.yaml ARGS`; a failure is a RuntimeError saying to rerun."""
    path = out / "stage_config.yaml"
    write_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    command = [*launcher, str(script), "--config", str(path), *map(str, args)]
    print(f"[{script.stem}] {' '.join(command)}", flush=True)
    done = subprocess.run(command, env=child_env(PYTHONUNBUFFERED="1"))
    if done.returncode != 0:
        raise RuntimeError(
            f"{script.stem}: {' '.join(command)} failed (exit {done.returncode}); rerun to resume"
        )
