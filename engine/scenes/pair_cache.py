"""A content-addressed cache of the synthetic preference sets: a set is rendered and encoded once per
(data.synthetic, model, latent and text shapes, the code that makes it, torch and diffusers versions) and
copied into each run folder after that.

The cache lives in $VIDEOGPA_CACHE_DIR (`off` or empty: no cache), else $XDG_CACHE_HOME/videogpa, else
~/.cache/videogpa. An entry is written beside its final name and renamed into place when complete, so a
killed writer leaves no half entry, and two writers of one entry both finish (the second keeps the first's).
A cache folder that cannot be written is passed over with a warning: the set is then made in the run folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from videogpa.engine.scenes.preference_pairs import SPLITS

CACHE_ENV = "VIDEOGPA_CACHE_DIR"
log = logging.getLogger(__name__)


def cache_root() -> Path | None:
    """Where cached sets live; None when the cache is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "videogpa"


def cache_key(identity: dict, sources: Iterable[Path]) -> str:
    """SHA-256 of the identity (JSON) and of the source files that make the set."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for source in sorted(sources):
        digest.update(source.name.encode() + hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def _complete(entry: Path) -> bool:
    return all((entry / split / "index.jsonl").is_file() for split in SPLITS)


def _fill(entry: Path, build: Callable[[Path], None]) -> None:
    """Build the entry in a temporary folder beside it and rename it into place (a racing writer's entry is
    kept; an incomplete one is replaced)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}.", dir=entry.parent))
    try:
        build(tmp)
        if entry.exists() and not _complete(entry):
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _complete(entry):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_sets(out: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Fill out/{train,heldout} (replacing what is there) from the cache entry `key`, building the entry with
    build(folder) when it is missing; without a usable cache, build(out) directly. Returns out."""
    root = cache_root()
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    if root is None:
        build(out)
        return out
    entry = root / "synthetic" / key
    try:
        if not _complete(entry):
            _fill(entry, build)
    except OSError as err:
        log.warning("synthetic-pair cache %s is not usable (%s); making the pairs in %s", root, err, out)
        build(out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        shutil.copytree(entry / split, out / split)
    return out
