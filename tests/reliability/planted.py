"""A planted pickle: unpickling it would create a marker file (so a test can tell whether it ran)."""

import pickle
from pathlib import Path


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
