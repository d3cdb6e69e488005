"""Shared helpers of the pipeline tests: load a recipe script as a module, read JSONL."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(
        f"{name}_recipe_under_test", REPO / "recipes" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_rows(path, rows) -> Path:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)
