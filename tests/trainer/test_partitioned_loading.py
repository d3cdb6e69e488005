"""Partitioned loading under ZeRO-3 (engine/runtime/partitioned_loading.py), on two CPU ranks (deepspeed
launcher, gloo): a ~214 M-parameter CogVideoX transformer saved on disk is set up with each rank's peak
resident memory well under the model's full fp32 size (and under that of two models with the `separate`
reference, loaded partitioned too), and training from it (LoRA, activation checkpointing) equals training from
a plain whole load (ZeRO-2); parameter and optimizer CPU offload from the config are in effect and train the
same."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from safetensors.torch import load_file

from videogpa.engine.runtime.distributed import child_env

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("partitioned_worker.py")
REPO = Path(__file__).resolve().parents[2]
# Wide and shallow: 4 blocks of width 16 × 128 = 2048 (about 214 M parameters, 0.86 GB in fp32).
WIDE = dict(
    num_attention_heads=16,
    attention_head_dim=128,
    in_channels=4,
    out_channels=4,
    time_embed_dim=128,
    text_embed_dim=32,
    num_layers=4,
    sample_width=4,
    sample_height=4,
    sample_frames=5,
    patch_size=2,
    max_text_seq_length=8,
    use_rotary_positional_embeddings=True,
)


def _save_model(folder: Path) -> int:
    """A random WIDE transformer saved as a diffusers folder; returns its fp32 size in bytes."""
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**WIDE)
    size = sum(p.numel() for p in model.parameters()) * 4
    model.save_pretrained(folder, safe_serialization=True)
    return size


def _launch(*args: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    cmd = [deepspeed, "--num_gpus", "2", "--master_port", str(port), str(WORKER), *args]
    env = child_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")  # tests/conftest.py: the session's op folder
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("partitioned")
    full = _save_model(root / "transformer")
    _launch(str(root / "transformer"), str(root))
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]
    return full, ranks, load_file(str(root / "lora.safetensors"))


def test_each_rank_holds_well_under_a_full_copy(runs):
    full, ranks, _ = runs
    for rank in ranks:
        assert rank["zero3"]["setup_kib"] * 1024 < 0.75 * full, (rank["zero3"]["setup_kib"], full)
        # the policy and the `separate` reference: two models, each split over the two ranks
        assert rank["offload"]["setup_kib"] * 1024 < 0.75 * 2 * full, (rank["offload"]["setup_kib"], full)


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_training_from_a_partitioned_load_equals_a_plain_load_and_offload(runs):
    _, ranks, lora = runs
    zero3, offload, zero2 = (ranks[0][k] for k in ("zero3", "offload", "zero2"))
    # LoRA B starts at 0: the policy equals its reference (the separate one: if loaded right), softplus(0) =
    # log 2
    for run in (zero3, offload, zero2):
        assert run["losses"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert abs(zero3["losses"][1] - math.log(2)) > 1e-5  # after one update the policy has moved
    for run in (offload, zero2):
        assert run["losses"] == pytest.approx(zero3["losses"], rel=1e-5, abs=1e-7)
        assert run["grad_norm"] == pytest.approx(zero3["grad_norm"], rel=1e-5)
    names = [k.removeprefix("zero3/") for k in lora if k.startswith("zero3/")]
    trained = [n for n in names if "lora_B" in n]  # B starts at zero: nonzero after the step
    assert trained and all(lora[f"zero3/{n}"].abs().max() > 0 for n in trained)
    for other in ("offload", "zero2"):
        for n in names:
            assert _relative_difference(lora[f"{other}/{n}"], lora[f"zero3/{n}"]) < 1e-4, (other, n)


def test_offload_from_the_config_is_in_effect(runs):
    _, ranks, _ = runs
    for rank in ranks:
        assert rank["offload"]["offload_param"] == "cpu" and rank["offload"]["offload_optimizer"] == "cpu"
        assert rank["offload"]["optimizer"] == "DeepSpeedCPUAdam"
        assert rank["offload"]["reference"] == {
            "engine": "DeepSpeedEngine",
            "partitioned": True,
            "lora": False,
        }
        assert rank["zero3"]["offload_param"] == "None" and rank["zero3"]["optimizer"] == "AdamW"


def _small(folder: Path) -> CogVideoXTransformer3DModel:
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**{**WIDE, "num_attention_heads": 2, "attention_head_dim": 16})
    model.save_pretrained(folder, safe_serialization=True)
    return model


def _zero3_config() -> dict:
    return {"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1, "zero_optimization": {"stage": 3}}


def test_one_rank_partitioned_load_equals_from_pretrained(tmp_path):
    import deepspeed

    from videogpa.engine.runtime.distributed import init_distributed
    from videogpa.engine.runtime.partitioned_loading import load_partitioned

    expected = _small(tmp_path / "t").state_dict()
    init_distributed()
    state = torch.get_rng_state()
    model = load_partitioned(CogVideoXTransformer3DModel, tmp_path / "t", torch.float32, _zero3_config())
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    params = dict(model.named_parameters())
    assert all(p.numel() == 0 for p in params.values())  # partitioned: no full tensor stays behind
    with deepspeed.zero.GatheredParameters(list(params.values())):
        for name, tensor in expected.items():
            assert torch.equal(model.state_dict()[name], tensor), name


def test_weights_not_matching_the_config_are_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    from videogpa.engine.runtime.distributed import init_distributed
    from videogpa.engine.runtime.partitioned_loading import load_partitioned

    state = _small(tmp_path / "t").state_dict()
    state.pop("proj_out.weight")
    save_file(state, str(tmp_path / "t" / "diffusion_pytorch_model.safetensors"))
    init_distributed()
    with pytest.raises(ValueError, match=r"1 missing \(e.g. \['proj_out.weight'\]\)"):
        load_partitioned(CogVideoXTransformer3DModel, tmp_path / "t", torch.float32, _zero3_config())


def test_full_finetuning_against_the_separate_reference_keeps_it_frozen(tmp_path):
    from tests.trainer.trainer_helpers import tiny_config
    from videogpa.engine.train.run_logs import read_metrics
    from videogpa.engine.train.trainer import Trainer

    train = {"max_steps": 2, "checkpoint_every": 0}
    cfg = tiny_config(tmp_path, lora={"enabled": False}, dpo={"reference": "separate"}, train=train)
    Trainer(cfg).run()
    first, second = read_metrics(tmp_path)
    assert first["policy_err_w"] == pytest.approx(first["ref_err_w"], rel=1e-6)  # both the loaded weights
    assert abs(second["policy_err_w"] - second["ref_err_w"]) > 1e-6 * second["ref_err_w"]  # only one moved


def test_both_a14b_experts_load_partitioned_under_zero3(tmp_path):
    """A two-expert adapter's own load_transformer, with the partitioned loader for each expert."""
    import json

    import deepspeed

    from tests.models import model_builders as builders
    from videogpa.engine.models import get_adapter
    from videogpa.engine.models.wan22_a14b import WanExperts
    from videogpa.engine.runtime.distributed import init_distributed
    from videogpa.engine.runtime.partitioned_loading import load_transformer

    torch.manual_seed(0)
    experts = builders.wan_experts()
    for name, expert in experts.components():
        expert.save_pretrained(tmp_path / name)
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "WanPipeline", "boundary_ratio": 0.9})
    )
    expected = experts.state_dict()
    init_distributed()
    adapter = get_adapter("wan2.2-t2v-a14b", path=tmp_path)
    model = load_transformer(adapter, tmp_path, torch.float32, _zero3_config())
    assert isinstance(model, WanExperts) and model.boundary == 900.0
    params = dict(model.named_parameters())
    assert params and all(p.numel() == 0 for p in params.values())  # both experts partitioned
    with deepspeed.zero.GatheredParameters(list(params.values())):
        state = model.state_dict()
        assert state.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(state[name], tensor), name
