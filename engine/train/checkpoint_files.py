"""A checkpoint folder's files read as data, never as code, and only as the bytes its manifest recorded.

`VerifiedFiles` reads a file's bytes once, checks their SHA-256 against the manifest read when loading began,
and parses those same bytes (no gap between the check and the load: a file swapped after it was hashed is
never read again). DeepSpeed's `*_model_states.pt` / `*_optim_states.pt` are pickles; DeepSpeed loads them
with `torch.load(weights_only=False)`, which runs whatever a planted pickle asks. `VerifiedCheckpointEngine`
takes DeepSpeed's checkpoint engine's place while a checkpoint loads: its `load` unpickles with
`weights_only=True`, allowing tensors, containers and the three DeepSpeed types its ZeRO states hold
(stages 1-3, fp32 and bf16; found by saving real checkpoints), so a manifest rewritten to match a planted
file still runs nothing. The hash check stays as an integrity check.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

MANIFEST = "manifest.json"


def allowed_types() -> list[type]:
    """The only non-tensor, non-container types in DeepSpeed 0.19's checkpoint states."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def read_manifest(folder: Path) -> dict:
    """manifest.json of a checkpoint folder: {"files": {relative path: sha256}, "world_size": n}."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("'files' is not a mapping of paths to SHA-256 strings")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"checkpoint {folder}: no readable {MANIFEST} ({type(err).__name__}: {err})"
        ) from None
    return manifest


def _unpickle_refusal(err: Exception) -> str:
    """What torch's weights-only unpickler refused, in a few words (its message is a page long)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+) was not an allowed global", text)
    if found:
        return f"a reference to {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return f"a pickle operation no state needs ({(found.group(1) if found else text).strip()[:120]})"


class VerifiedFiles:
    """The files of one checkpoint folder, each read once, checked against the manifest read at the start."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        manifest = read_manifest(self.folder)
        self.recorded: dict[str, str] = manifest["files"]
        self.world_size = manifest.get("world_size")

    def relative(self, path: str | Path) -> str:
        """A file's name in the folder, from that name or from the file's absolute path; a ValueError for a
        path that leads out of the folder."""
        full = Path(path) if Path(path).is_absolute() else self.folder / path
        try:
            return full.resolve().relative_to(self.folder).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside checkpoint {self.folder}: not loaded") from None

    def read(self, path: str | Path) -> bytes:
        """The file's bytes, once they match the SHA-256 recorded for it; else a ValueError naming it."""
        name = self.relative(path)
        full = self.folder / name
        if name not in self.recorded:
            raise ValueError(f"{full} is not in its {MANIFEST} (planted or left over): not loaded")
        try:
            data = full.read_bytes()
        except OSError as err:
            raise ValueError(f"{full}: cannot read it ({err.strerror or err})") from None
        if hashlib.sha256(data).hexdigest() != self.recorded[name]:
            raise ValueError(f"{full} differs from the SHA-256 recorded in its {MANIFEST}: not loaded")
        return data

    def json(self, path: str | Path) -> dict:
        data = self.read(path)
        try:
            return json.loads(data)
        except ValueError as err:
            raise ValueError(f"{self.folder / self.relative(path)}: not JSON ({err})") from None

    def torch_state(self, path: str | Path, map_location=None):
        """A torch-saved state (DeepSpeed's), unpickled with weights_only=True and the allow-listed types."""
        data = self.read(path)
        full = self.folder / self.relative(path)
        try:
            with torch.serialization.safe_globals(allowed_types()):
                return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{full} refused: it holds {_unpickle_refusal(err)}, which is not checkpoint data (tensors "
                "and DeepSpeed's states only; nothing else is unpickled)"
            ) from None
        except (RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise ValueError(f"{full}: not a readable torch state ({first})") from None


class VerifiedCheckpointEngine:
    """Stands in for a DeepSpeed engine's checkpoint engine while a checkpoint loads: every `load` is
    VerifiedFiles.torch_state (served from `preloaded` when the state was parsed ahead); anything else is the
    original engine's."""

    def __init__(self, inner, files: VerifiedFiles, preloaded: dict[str, object] | None = None):
        self._inner, self._files, self._preloaded = inner, files, dict(preloaded or {})

    def load(self, path: str, map_location=None):
        name = self._files.relative(Path(path).resolve())  # DeepSpeed's path: from the working directory
        if name in self._preloaded:
            return self._preloaded.pop(name)
        return self._files.torch_state(name, map_location)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@contextlib.contextmanager
def verified_loads(engine, files: VerifiedFiles, preloaded: dict[str, object]) -> Iterator[None]:
    """Within the block, `engine` (a DeepSpeedEngine) loads its states only through VerifiedCheckpointEngine.
    A DeepSpeed universal checkpoint (read by torch.load(weights_only=False) directly) is refused."""
    if getattr(engine, "load_universal_checkpoint", lambda: False)():
        raise ValueError(
            "DeepSpeed's checkpoint.load_universal (distributed.deepspeed_config) is not supported: "
            "DeepSpeed unpickles those files without restriction"
        )
    inner = engine.checkpoint_engine
    engine.checkpoint_engine = VerifiedCheckpointEngine(inner, files, preloaded)
    try:
        yield
    finally:
        engine.checkpoint_engine = inner


class NamingCheckpointEngine:
    """Stands in for a DeepSpeed engine's checkpoint engine while a checkpoint is written: torch.save's writer
    reports a full disk as a RuntimeError without a path ("[enforce fail at inline_container.cc:...]"); here
    it becomes an OSError naming the file and the cause."""

    def __init__(self, inner):
        self._inner = inner

    def save(self, state_dict, path: str):
        try:
            return self._inner.save(state_dict, path)
        except RuntimeError as err:
            free = shutil.disk_usage(Path(path).parent).free if Path(path).parent.is_dir() else None
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            if free is not None and free < (1 << 20):
                raise OSError(
                    errno.ENOSPC, f"No space left on device ({free} bytes free; torch: {first})", path
                ) from None
            raise OSError(errno.EIO, f"torch.save could not write it ({first})", path) from None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@contextlib.contextmanager
def naming_saves(engine) -> Iterator[None]:
    """Within the block, `engine`'s state files are written through NamingCheckpointEngine."""
    inner = getattr(engine, "checkpoint_engine", None)
    if inner is None:
        yield
        return
    engine.checkpoint_engine = NamingCheckpointEngine(inner)
    try:
        yield
    finally:
        engine.checkpoint_engine = inner
