"""The trainer's preference sets: shard folders from the config, or the embedded default's synthetic scene
pairs written into the run folder with the model's own built-in pipeline."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from videogpa.engine.core.config import Config
from videogpa.engine.data.preference import PreferenceDataset, check_preference_set
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.pipeline_encoder import PipelineEncoder
from videogpa.engine.runtime import distributed as D


def _synthetic_key(cfg: Config, adapter: ModelAdapter) -> str:
    """The cache key of a synthetic set: its config, the model's shapes, the code and library versions."""
    import diffusers
    import torch

    from videogpa.engine.data import preference
    from videogpa.engine.models import pipeline_encoder
    from videogpa.engine.scenes import pair_cache, preference_pairs, procedural

    spec = adapter.spec
    identity = {
        "synthetic": dataclasses.asdict(cfg.data.synthetic),
        "model": cfg.model.name,
        "latent_shape": list(spec.latent_shape),
        "text_shape": list(spec.text_shape),
        "layout": adapter.latent_layout,
        "versions": [torch.__version__, diffusers.__version__],
    }
    family = sys.modules[type(adapter).__module__]  # its built-in pipeline
    modules = (pair_cache, preference_pairs, procedural, preference, pipeline_encoder, family)
    sources = {Path(module.__file__) for module in modules}
    return pair_cache.cache_key(identity, sources)


def _write_synthetic(cfg: Config, adapter: ModelAdapter, root: Path) -> tuple[Path, Path]:
    """Rank 0 writes the scene pairs (encoded by the family's built-in pipeline; made once per set and kept in
    engine.scenes.pair_cache's cache); every rank gets the paths."""
    from videogpa.engine.scenes.pair_cache import cached_sets
    from videogpa.engine.scenes.preference_pairs import write_synthetic_pairs

    spec = getattr(adapter, "spec", None)
    if spec is None or not adapter.ships_pipeline:
        raise ValueError(
            f"config section 'data.synthetic': model {cfg.model.name!r} has no built-in pipeline and sample "
            "shapes; synthetic pairs are for the tiny model (set data.train to preference shards)"
        )

    def build(folder: Path) -> None:
        encoder = PipelineEncoder(adapter.builtin_pipeline(), adapter.latent_convention, spec.text_shape[0])
        write_synthetic_pairs(
            folder,
            cfg.data.synthetic,
            encoder,
            spec.latent_shape,
            adapter.latent_layout,
            spec.text_shape,
            progress=cfg.train.progress_bar,
        )

    if D.is_main():
        cached_sets(root, _synthetic_key(cfg, adapter), build)
    D.barrier()
    return root / "train", root / "heldout"


def load_training_sets(
    cfg: Config, adapter: ModelAdapter, out_dir: Path
) -> tuple[PreferenceDataset, PreferenceDataset | None]:
    """(training set, held-out set or None), checked up front from their shard headers (every pair's shapes
    and dtypes alike, the held-out set's like the training set's, the built-in model's text width); an
    empty or inconsistent set is a ValueError naming its folder, shard and pair."""
    train, heldout = cfg.data.train, cfg.data.heldout
    if cfg.data.synthetic is not None:
        train, heldout = _write_synthetic(cfg, adapter, out_dir / "data")
    train_set = PreferenceDataset(train)
    if len(train_set) == 0:
        raise ValueError(f"training preference set {str(train)!r} is empty")
    spec = getattr(adapter, "spec", None)  # the built-in model knows its text width (its frame count is free)
    expect = {} if spec is None else {"text_dim": spec.text_shape[1]}
    layout = check_preference_set(train_set, where="data.train", **expect)
    if spec is not None:  # the training set first: a wrong one must not blame a correct held-out set
        axis = adapter.latent_layout.index("C") - 1  # one sample's latents: [F, C, H, W] or [C, F, H, W]
        have, want = layout.latent_shape[axis], spec.latent_shape[axis]
        if have != want:
            raise ValueError(
                f"data.train: {train_set.describe_pair(0)} (like every pair of the set): latents have {have} "
                f"channels (shape {list(layout.latent_shape)}), but model {cfg.model.name!r} takes {want}"
            )
    heldout_set = PreferenceDataset(heldout) if heldout is not None else None
    if heldout_set is not None:
        if len(heldout_set) == 0:
            raise ValueError(f"held-out preference set {str(heldout)!r} is empty")
        check_preference_set(
            heldout_set,
            layout.latent_shape,
            layout.text_shape[1],
            where="data.heldout",
            expected_by=f"the training set (data.train {str(train)!r})",
        )
    return train_set, heldout_set
