"""A planted pickle: unpickling it would create a marker file (so a test can tell whether it ran)."""

import hashlib
import json
import pickle
from pathlib import Path

import torch


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path) -> Path:
    """Overwrite `path` with a pickle that touches `marker` when loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state": Payload(marker)}))
    return path


def plant_torch(path: Path, marker: Path) -> Path:
    """Overwrite `path` with a torch.save'd state (zip format) holding the payload."""
    torch.save({"optimizer_state_dict": {"loss_scaler": Payload(marker)}}, path)
    return path


def rewrite_manifest(folder: Path) -> None:
    """What an attacker who can plant files can do too: record every file's current SHA-256."""
    manifest = folder / "manifest.json"
    data = json.loads(manifest.read_text())
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    data["files"] = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    manifest.write_text(json.dumps(data))
