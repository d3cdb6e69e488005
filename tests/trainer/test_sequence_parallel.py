"""Ulysses sequence parallelism (distributed.sequence_parallel): split steps equal unsplit ones.

The step-level check runs every tiny family (CogVideoX T2V with sincos and with rotary positions, CogVideoX
I2V, Wan T2V and I2V) with 27 video tokens split unevenly over 2 gloo ranks; the trainer-level checks run
recipes/dpo.py under torchrun (ZeRO-3, activation checkpointing) against fewer ranks.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_dpo_recipe import _free_port, _run, launch_dpo
from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.core.config_loading import config_from_dict, save_config
from videogpa.engine.train.run_logs import read_metrics
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
WORKER = "tests.trainer.sequence_parallel_worker"  # run as a module from the repository root
COMPARED = (
    "loss",
    "reward_margin",
    "policy_err_w",
    "policy_err_l",
    "ref_err_w",
    "ref_err_l",
    "lr",
    "grad_norm",
)


def _torchrun(args: list[str], **env: str) -> str:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", WORKER, *args]
    return _run(cmd, timeout=300, **env).stdout


def test_split_step_equals_the_unsplit_step_for_every_family():
    families = [
        "cogvideox-t2v",
        "cogvideox-t2v-rope",
        "cogvideox1.5-t2v",
        "cogvideox-i2v",
        "wan2.2-ti2v",
        "wan2.2-ti2v-i2v",
    ]
    out = _torchrun(["fp32", *families])
    for family in families:
        assert all(f"<rank {r} ok {family}>" in out for r in (0, 1)), (family, out[-2000:])


def test_split_step_in_bf16_with_compiled_blocks():
    """bf16, and model.compile's regional torch.compile over the split blocks (their hooks included), on one
    family (the split itself is checked for every family above; the compiled hooks are the same for all)."""
    out = _torchrun(["bf16", "wan2.2-ti2v"], SP_WORKER_COMPILE="aot_eager")
    assert all(f"<rank {r} ok wan2.2-ti2v>" in out for r in (0, 1)), out[-2000:]


def _launched(tmp_path: Path, name: str, ranks: int, *extra: str, **sections) -> Path:
    cfg = tiny_config(tmp_path / name, **sections)
    save_config(cfg, tmp_path / f"{name}.yaml")
    launch_dpo(ranks, tmp_path / f"{name}.yaml", *extra)
    return tmp_path / name


def _assert_same_run(a: Path, b: Path, weights: str = "pytorch_lora_weights.safetensors") -> None:
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] and ra
    for x, y in zip(ra, rb):
        for key in COMPARED:
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-7), (x["step"], key)
    wa, wb = load_file(str(a / weights)), load_file(str(b / weights))
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (a, b))
    assert eb["heldout_accuracy_before"] == ea["heldout_accuracy_before"]
    assert eb["heldout_accuracy_after"] == ea["heldout_accuracy_after"]


TRAIN = {"max_steps": 3, "micro_batch_size": 1, "global_batch_size": 2, "checkpoint_every": 0}


def test_two_ranks_with_sequence_parallel_2_equal_one_rank(tmp_path):
    """LoRA, adapters_off reference, 2 accumulation micro-steps: the group of 2 is one data-parallel rank."""
    Trainer(tiny_config(tmp_path / "one", train=TRAIN)).run()
    two = _launched(tmp_path, "two", 2, train=TRAIN, distributed={"sequence_parallel": 2})
    _assert_same_run(tmp_path / "one", two)
    assert json.loads((two / "run_info.json").read_text())["world_size"] == 2


def test_four_ranks_dp2_sp2_equal_one_rank(tmp_path):
    """Full fine-tuning against the `separate` (frozen, also split) reference, same global batch: two
    data-parallel groups of two sequence-parallel ranks each equal one rank accumulating two micro-steps."""
    sections = dict(
        train=TRAIN,
        lora={"enabled": False},
        dpo={"beta": 500.0, "reference": "separate"},
        optim={"lr": 1e-5, "warmup_steps": 2},
    )
    Trainer(tiny_config(tmp_path / "one", **sections)).run()
    sp = _launched(tmp_path, "sp", 4, **sections, distributed={"sequence_parallel": 2})
    _assert_same_run(tmp_path / "one", sp, weights="transformer/diffusion_pytorch_model.safetensors")


def test_resumed_sequence_parallel_run_equals_an_uninterrupted_one(tmp_path):
    """Precomputed reference; killed after 2 of 4 steps, resumed (the table is read back, not recomputed). The
    uninterrupted run is one rank: a sequence-parallel group of two is one data-parallel rank."""
    sections = dict(
        train={**TRAIN, "max_steps": 4, "checkpoint_every": 2},
        dpo={"beta": 500.0, "reference": "precomputed"},
    )
    Trainer(tiny_config(tmp_path / "whole", **sections)).run()
    part = _launched(
        tmp_path, "part", 2, "--stop-after-steps", "2", **sections, distributed={"sequence_parallel": 2}
    )
    assert [r["step"] for r in read_metrics(part)] == [1, 2]
    launch_dpo(2, tmp_path / "part.yaml", "--resume")
    _assert_same_run(tmp_path / "whole", part)


def test_bad_sequence_parallel_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="distributed.sequence_parallel"):
        tiny_config(tmp_path, distributed={"sequence_parallel": 0})
    with pytest.raises(ValueError, match="sequence parallelism exchanges PyTorch SDPA"):
        tiny_config(
            tmp_path, distributed={"sequence_parallel": 2}, model={"attention_backend": "diffusers:flash"}
        )
    with pytest.raises(ValueError, match=r"must divide the number of ranks \(1\)"):
        Trainer(tiny_config(tmp_path / "run", distributed={"sequence_parallel": 2}))
    data = tiny_config(tmp_path / "x").to_dict()
    data["distributed"]["sequence_paralel"] = 2
    with pytest.raises(ValueError, match="sequence_paralel"):
        config_from_dict(data)


def test_a_head_count_the_group_does_not_divide_is_named():
    from tests.models.model_builders import wan_ti2v
    from videogpa.engine.models import get_adapter
    from videogpa.engine.runtime.sequence_parallel import enable_sequence_parallel

    with pytest.raises(ValueError, match="must divide the model's 2 attention heads"):
        enable_sequence_parallel(wan_ti2v(), get_adapter("wan2.2-ti2v"), None, 4, 0)


def test_deepspeed_counts_every_rank_of_a_group(tmp_path):
    """DeepSpeed sees S·DP ranks of micro-batches; the pairs per step stay train.global_batch_size."""
    from videogpa.engine.runtime.distributed import deepspeed_config

    cfg = tiny_config(
        tmp_path, train={"micro_batch_size": 1, "global_batch_size": 4}, distributed={"sequence_parallel": 2}
    )
    ds = deepspeed_config(cfg, world=2)  # 4 ranks = 2 data-parallel ranks × 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (1, 2)
    assert (
        ds["train_batch_size"]
        == 8
        == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 4
    )
