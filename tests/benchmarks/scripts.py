"""Loads a script of the repository (benchmarks/*.py, scripts/*.py: not packages) as a module, once per
session."""

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def load_script(path: str) -> ModuleType:
    """The module of the script at `path`, relative to the repository root (e.g.
    "benchmarks/bench_step.py")."""
    file = REPO / path
    spec = importlib.util.spec_from_file_location(f"script_{file.parent.name}_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look a module up by name
    spec.loader.exec_module(module)
    return module
