"""The trainer's output folder: claiming it (one trainer per folder, never mixed with another run) and
choosing what a resume continues from (the newest intact checkpoint, made with the same config)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from videogpa.engine.core.config_loading import STRUCTURAL_KEYS, config_changes
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.records import append_jsonl
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train.checkpoint_files import read_manifest

LOCK_NAME = ".train.lock"
CHANGES_FILE = "config_changes.jsonl"


def claim_output_dir(stack: contextlib.ExitStack, out: Path, resume: bool, overwrite: bool) -> None:
    """Collective: rank 0 locks `out` (held until `stack` closes) and checks it holds no other run unless
    resuming or overwriting; every rank raises the same error if that fails."""
    error = None
    if D.is_main():
        try:
            stack.enter_context(folder_lock(out, LOCK_NAME))
            other = ckpt.previous_run(out)
            if other and not resume and not overwrite:
                raise ValueError(
                    f"{out} holds another run ({other}); continue it with --resume or replace it "
                    "with --overwrite"
                )
        except ValueError as err:
            error = err
        except OSError as err:  # a read-only or full disk, a path through a file
            error = ValueError(f"cannot write the output folder {err.filename or out}: {err.strerror or err}")
    D.raise_together(error)


def resume_point(out: Path, config: dict, allow_config_change: bool) -> tuple[Path, dict]:
    """Collective: (the newest intact checkpoint, the config changes since it); damaged newer ones are named
    and passed over; a changed config (bookkeeping aside) is a ValueError unless allowed."""
    path, passed = ckpt.newest_intact(out)
    for line in passed if D.is_main() else []:
        print(f"resume: passing over damaged checkpoint {line}", flush=True)
    if path is None:
        found = "; ".join(passed) or f"no checkpoint folder under {ckpt.checkpoint_root(out)}"
        raise ValueError(f"--resume: no intact checkpoint in {out} ({found})")
    ckpt.check_world_size(path, read_manifest(path).get("world_size"))
    changes = config_changes(ckpt.read_trainer_state(path)["config"], config)
    fixed = [key for key in changes if key in STRUCTURAL_KEYS]
    if fixed:
        listed = "; ".join(
            f"{k}: {changes[k][0]!r} -> {changes[k][1]!r} ({STRUCTURAL_KEYS[k]})" for k in fixed
        )
        raise ValueError(
            f"--resume: {listed} cannot change in a resumed run, not even with --allow-config-change: "
            f"{path.name}'s tensors would not fit; start a new run for it"
        )
    if changes and not allow_config_change:
        listed = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
        raise ValueError(
            f"--resume: the config differs from {path.name}'s ({listed}); "
            "pass --allow-config-change to resume with it"
        )
    return path, changes


def record_resume(out: Path, path: Path, step: int, changes: dict) -> None:
    """Rank 0: say where the run resumed, and append the allowed config changes to config_changes.jsonl."""
    if D.is_main():
        if changes:
            append_jsonl(out / CHANGES_FILE, {"step": step, "changes": changes})
        print(f"resumed from {path} at step {step}", flush=True)
