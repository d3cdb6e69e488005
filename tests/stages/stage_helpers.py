"""Shared helpers of the stage tests: load a recipe script as a module, write JSONL rows, start recipes as
separate processes (one thread each, no launcher variables inherited)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from videogpa.engine.core.config import PairsConfig
from videogpa.engine.io.records import write_jsonl_atomic
from videogpa.engine.stages import pairs

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = (str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2")


def child_env() -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**out, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def start(recipe: str, *args, launcher: tuple = ()) -> subprocess.Popen:
    """recipes/RECIPE.py with `args` in a new process (under `launcher`, e.g. TORCHRUN)."""
    command = [*(launcher or (sys.executable,)), str(REPO / "recipes" / f"{recipe}.py"), *map(str, args)]
    return subprocess.Popen(
        command, env=child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(*procs: subprocess.Popen) -> list[str]:
    """Wait for the processes; each must succeed. Their outputs."""
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


def files(folder: Path) -> set[str]:
    """Every file under folder, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(
        f"{name}_recipe_under_test", REPO / "recipes" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_rows(path, rows) -> Path:
    write_jsonl_atomic(path, rows)
    return Path(path)


def build_pairs(scores, out_dir, manifest=None, **settings) -> pairs.PairsSummary:
    """The pairs stage with PairsConfig(**settings)."""
    return pairs.run(PairsConfig(**settings), scores, out_dir, manifest)
