"""Nothing from a file the user did not write as code is ever unpickled: a planted pickle in each loadable
place (checkpoint RNG state, DeepSpeed's states, VGGT / LPIPS weights, a model folder) runs nothing, and the
error names the file."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import STEPS
from tests.reliability.planted import plant, plant_torch, rewrite_manifest
from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.geometry.lpips import LPIPS
from videogpa.engine.geometry.vggt import load_vggt
from videogpa.engine.models import get_adapter
from videogpa.engine.models.tiny import build_tiny_transformer
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train.checkpoint_files import VerifiedFiles
from videogpa.engine.train.trainer import Trainer


@pytest.mark.parametrize(
    "target",
    [
        "rng_rank0.safetensors",
        "state/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ],
)
def test_planted_pickle_in_a_checkpoint_is_refused(run_copy, tmp_path, target):
    out = run_copy
    marker = tmp_path / "ran"
    for step in ckpt.list_checkpoints(out):  # every checkpoint damaged: nothing to fall back on
        plant(step / target, marker)
    with pytest.raises(
        ValueError, match=f"no intact checkpoint .*{target.split('/')[-1]}.* differs from the SHA-256"
    ):
        Trainer(tiny_config(out, train=STEPS), resume=True)
    with pytest.raises(ValueError, match=f"{target.split('/')[-1]} differs"):
        ckpt.load_checkpoint(None, ckpt.latest_checkpoint(out))
    assert not marker.exists()


def test_planted_extra_file_and_a_missing_manifest_are_damage(run_copy, tmp_path):
    latest = ckpt.latest_checkpoint(run_copy)
    plant(latest / "state" / "extra.pt", tmp_path / "ran")
    assert "extra.pt is not in its manifest.json" in ckpt.damage(latest)
    (latest / "manifest.json").unlink()
    assert "no readable manifest.json" in ckpt.damage(latest)


def test_planted_pickle_weights_are_refused(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(Exception, match="vggt.pt"):
        load_vggt(plant(tmp_path / "vggt.pt", marker))
    with pytest.raises(ValueError, match="vgg.pth could not be read"):
        LPIPS.from_files(plant(tmp_path / "vgg.pth", marker), plant(tmp_path / "lin.pth", marker))
    assert not marker.exists()


def test_planted_pickle_in_a_model_folder_is_refused(tmp_path):
    folder = tmp_path / "transformer"
    build_tiny_transformer().save_pretrained(folder, safe_serialization=False)
    marker = tmp_path / "ran"
    plant(folder / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(ValueError, match=str(folder)):
        get_adapter("tiny").load_transformer(folder, torch.float32)
    assert not marker.exists()
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "CogVideoXTransformer3DModel"


MODEL_STATES = "state/zero_pp_rank_0_mp_rank_00_model_states.pt"
OPTIM_STATES = "state/zero_pp_rank_0_mp_rank_00_optim_states.pt"


def test_planted_pickles_with_a_rewritten_manifest_run_nothing(run_copy, tmp_path):
    """The attacker plants a pickle in every loadable file of every checkpoint and rewrites the manifests to
    match: the hashes pass, yet DeepSpeed's states are unpickled as data only (weights_only and an
    allow-list), nothing runs, and the one-line error names the file."""
    marker, latest = tmp_path / "ran", ckpt.latest_checkpoint(run_copy)
    refusal = "refused: it holds .*, which is not checkpoint data"
    for step in ckpt.list_checkpoints(run_copy):
        plant(step / MODEL_STATES, marker)  # a bare pickle
        plant_torch(step / OPTIM_STATES, marker)  # a torch.save'd (zip) state
        rewrite_manifest(step)
    assert all(ckpt.damage(step) is None for step in ckpt.list_checkpoints(run_copy))
    with pytest.raises(ValueError, match=f"^{latest / MODEL_STATES} {refusal}") as caught:
        Trainer(tiny_config(run_copy, train=STEPS), resume=True)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=f"^{latest / OPTIM_STATES} {refusal}"):
        VerifiedFiles(latest).torch_state(OPTIM_STATES)
    for step in ckpt.list_checkpoints(run_copy):
        plant(step / "rng_rank0.safetensors", marker)
        rewrite_manifest(step)
    with pytest.raises(ValueError, match=r"rng_rank0.safetensors: not a valid safetensors RNG file"):
        Trainer(tiny_config(run_copy, train=STEPS), resume=True)
    assert not marker.exists()


def test_a_file_swapped_after_its_check_is_not_loaded(run_copy, tmp_path, monkeypatch):
    """The gap between hashing a file and loading it: a file replaced after newest_intact verified it."""
    marker = tmp_path / "ran"
    real = ckpt.damage

    def damage_then_swap(folder):
        verdict = real(folder)
        plant(folder / MODEL_STATES, marker)  # swapped once the check is done
        return verdict

    monkeypatch.setattr(ckpt, "damage", damage_then_swap)
    with pytest.raises(
        ValueError, match=r"model_states.pt differs from the SHA-256 recorded in its manifest.json"
    ):
        Trainer(tiny_config(run_copy, train=STEPS), resume=True)
    assert not marker.exists()


def test_states_load_through_the_verified_engine_from_a_relative_output_folder(tmp_path, monkeypatch):
    """`--output-dir runs/dpo`: DeepSpeed asks for runs/dpo/checkpoints/.../state/*.pt, relative to the
    working directory; the verified engine finds it in the manifest (and refuses a path that leads out)."""
    from videogpa.engine.train.checkpoint_files import VerifiedCheckpointEngine

    folder = tmp_path / "runs" / "dpo" / "checkpoints" / "step_00000002"
    (folder / "state").mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2)}}, folder / "state" / "model_states.pt")
    data = (folder / "state" / "model_states.pt").read_bytes()
    files = {"state/model_states.pt": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps({"files": files, "world_size": 1}))
    monkeypatch.chdir(tmp_path)
    relative = Path("runs/dpo/checkpoints/step_00000002")
    engine = VerifiedCheckpointEngine(None, VerifiedFiles(relative))
    assert torch.equal(engine.load(str(relative / "state" / "model_states.pt"))["module"]["w"], torch.ones(2))
    with pytest.raises(ValueError, match="is outside checkpoint"):
        VerifiedFiles(relative).read("../step_00000001/trainer.json")
