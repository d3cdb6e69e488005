"""Shared helpers of the stage tests: load a recipe script as a module, write JSONL rows."""

import importlib.util
from pathlib import Path

from videogpa.engine.config import PairsConfig
from videogpa.engine.io.records import write_jsonl_atomic
from videogpa.engine.stages import pairs

REPO = Path(__file__).resolve().parents[2]


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
