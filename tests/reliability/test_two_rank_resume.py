"""Checkpoints across ranks: two CPU ranks (gloo) write a verified checkpoint (each rank hashes its own
files), are killed, resume from it, and end where one uninterrupted rank ends: every logged metric of every
step and the LoRA weights. The first run goes through the deepspeed launcher and the resumed one through
torchrun (`-m videogpa.recipes.dpo`, the loop's way), so both launchers train on two ranks."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.stages.stage_helpers import REPO
from tests.trainer.test_dpo_recipe import launch_dpo, threads_per_rank
from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.core.config_loading import save_config
from videogpa.engine.runtime.distributed import child_env
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train.run_logs import read_metrics
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
TRAIN = {"max_steps": 4, "micro_batch_size": 1, "global_batch_size": 2, "checkpoint_every": 2}


def _launch(config, *extra, status: int = 0):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    cmd = [
        deepspeed,
        "--num_gpus",
        "2",
        "--master_port",
        str(port),
        str(REPO / "recipes" / "dpo.py"),
        "--config",
        str(config),
        *extra,
    ]
    env = child_env(DS_ACCELERATOR="cpu")  # the recipe gives each rank its share of the threads
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == status, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_ranks_killed_and_resumed_equal_one_rank(tmp_path):
    one = tiny_config(tmp_path / "one", train=TRAIN)  # one rank: 2 accumulation micro-steps a step
    expected = Trainer(one).run()
    two = tiny_config(tmp_path / "two", train=TRAIN)  # two ranks: one micro-step each
    save_config(two, tmp_path / "two.yaml")
    # killed after step 3: its checkpoint is step 2's
    _launch(tmp_path / "two.yaml", "--stop-after-steps", "3")
    latest = ckpt.latest_checkpoint(tmp_path / "two")
    files = json.loads((latest / "manifest.json").read_text())["files"]
    assert {"rng_rank0.safetensors", "rng_rank1.safetensors"} <= set(files)
    assert any("zero_pp_rank_1" in name for name in files)  # rank 1's states, hashed by rank 1
    done = launch_dpo(2, tmp_path / "two.yaml", "--resume")
    assert "resumed from" in done.stdout and "step 2" in done.stdout
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("loss", "reward_margin", "policy_err_w", "policy_err_l", "ref_err_w", "ref_err_l", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-9), (ra["step"], key)
    wa, wb = (load_file(str(tmp_path / r / "pytorch_lora_weights.safetensors")) for r in ("one", "two"))
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    result = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert result["heldout_accuracy_after"] == pytest.approx(expected["heldout_accuracy_after"], abs=1e-9)
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["torch_threads"] == threads_per_rank(2)
    # Audit N31: one rank's checkpoint resumed on two ranks is the same one line on both, before any load
    # (under the deepspeed launcher, whose failure report has no traceback of its own).
    save_config(one, tmp_path / "one.yaml")
    done = _launch(tmp_path / "one.yaml", "--resume", status=2)
    verdict = "error: checkpoint .*?step_00000004 was written by 1 rank\\(s\\) and this run has 2: ZeRO's"
    assert len(re.findall(verdict, done.stderr)) == 2, done.stderr[-3000:]  # one each (lines may interleave)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
