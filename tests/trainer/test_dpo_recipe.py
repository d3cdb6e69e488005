"""recipes/dpo.py end to end: the embedded default, and 2 CPU ranks (deepspeed launcher) vs 1 rank."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.core.config_loading import save_config
from videogpa.engine.runtime.distributed import child_env
from videogpa.engine.train.run_logs import read_metrics
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "dpo.py"
# OMP_NUM_THREADS as the session has it (usually unset): the recipe then shares the cores among its local
# ranks, all of them for a single process.
ENV = child_env(DS_ACCELERATOR="cpu")


def threads_per_rank(ranks: int) -> int:
    """The torch threads recipes/dpo.py gives each of `ranks` local CPU ranks."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // ranks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: int, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def launch_dpo(ranks: int, config: Path, *extra: str, timeout: int = 400) -> subprocess.CompletedProcess:
    """The trainer on `ranks` CPU ranks under torchrun, as `-m videogpa.recipes.dpo` (the loop's way); ~8 s
    faster a launch than the deepspeed launcher, which test_two_ranks_match_one_rank... below runs."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc-per-node", str(ranks), "--master-port", str(_free_port())]
    return _run([*cmd, "-m", "videogpa.recipes.dpo", "--config", str(config), *extra], timeout=timeout)


def test_embedded_default_raises_heldout_accuracy(tmp_path):
    proc = _run([sys.executable, str(RECIPE), "--output-dir", str(tmp_path)], timeout=300)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["pairs"] == 48
    # LoRA starts at B = 0: the policy is the reference, every logit is 0, each pair counts ½.
    assert result["heldout_accuracy_before"] == 0.5
    assert result["heldout_accuracy_after"] >= 0.8
    assert "held-out preference accuracy" in proc.stdout
    for name in ("heldout_accuracy.png", "training_curves.png", "pytorch_lora_weights.safetensors"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len(read_metrics(tmp_path)) == 150
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["world_size"] == 1 and info["torch_threads"] == threads_per_rank(1)


def test_two_ranks_match_one_rank_for_the_same_global_batch(tmp_path):
    train = {"max_steps": 3, "micro_batch_size": 1, "global_batch_size": 2, "checkpoint_every": 0}
    one = tiny_config(tmp_path / "one", train=train)  # one rank: 2 accumulation micro-steps
    Trainer(one).run()
    two = tiny_config(tmp_path / "two", train=train)  # two ranks: one micro-step each
    save_config(two, tmp_path / "two.yaml")
    deepspeed = Path(sys.executable).parent / "deepspeed"
    cmd = [str(deepspeed), "--num_gpus", "2", "--master_port", str(_free_port()), str(RECIPE)]
    _run([*cmd, "--config", str(tmp_path / "two.yaml")], timeout=300)
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("loss", "reward_margin", "policy_err_w", "policy_err_l", "ref_err_w", "ref_err_l", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-9), (ra["step"], key)
    wa = load_file(str(tmp_path / "one" / "pytorch_lora_weights.safetensors"))
    wb = load_file(str(tmp_path / "two" / "pytorch_lora_weights.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["torch_threads"] == threads_per_rank(2)
