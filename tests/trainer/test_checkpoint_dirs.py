"""The checkpoint folder protocol: complete folders only, stale temporaries removed, newest K kept."""

import json
from pathlib import Path

import pytest
import torch

from videogpa.engine.train import checkpoint as ckpt


class FolderEngine:
    """Writes one file where DeepSpeed's engine would write its state (the folder protocol is under test)."""

    def save_checkpoint(self, save_dir, tag, save_latest):
        assert not save_latest
        (Path(save_dir) / tag).mkdir()
        (Path(save_dir) / tag / "weights.pt").write_bytes(b"x")


def test_saves_are_complete_and_pruned_and_stale_temporaries_vanish(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    (root / ".tmp-step_00000003").mkdir(parents=True)  # a save interrupted by a kill
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (2, 4, 6):
        ckpt.save_checkpoint(FolderEngine(), tmp_path, step, {"nan_skipped": 0}, {"seed": 0}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    assert sorted(p.name for p in root.iterdir()) == ["step_00000004", "step_00000006"]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert json.loads((latest / "trainer.json").read_text()) == {"step": 6, "nan_skipped": 0}
    assert (latest / "state" / "weights.pt").is_file() and (latest / "rng_rank0.safetensors").is_file()
    assert ckpt.read_trainer_state(latest)["config"] == {"seed": 0} and ckpt.damage(latest) is None


def test_rng_state_round_trip():
    import random

    import numpy as np

    tensors, meta = ckpt.rng_tensors()
    expected = (torch.rand(3), np.random.rand(2), random.random(), np.random.randn())
    torch.rand(5), np.random.rand(5), random.random()
    ckpt.set_rng_tensors(tensors, meta)
    again = (torch.rand(3), np.random.rand(2), random.random(), np.random.randn())
    assert (
        torch.equal(again[0], expected[0]) and (again[1] == expected[1]).all() and again[2:] == expected[2:]
    )


def test_loading_an_incomplete_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="damaged, not loaded: no readable manifest.json"):
        ckpt.load_checkpoint(FolderEngine(), tmp_path / "step_00000002")
