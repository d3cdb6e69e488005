"""Provenance of a run or a score: package versions, the source's git commit, the machine."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: str | Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_info(seed: int, world_size: int, source_dir: str | Path) -> dict:
    """Versions and provenance written next to the resolved config."""
    info = {name: package_version(name) for name in ("torch", "diffusers", "deepspeed", "peft", "triton")}
    info.update(
        python=platform.python_version(),
        git_commit=git_commit(source_dir),
        seed=seed,
        world_size=world_size,
    )
    return info
