"""recipes/dpo.py end to end: the embedded default (two CPU ranks against one, under both launchers, are
tests/reliability/test_two_rank_resume.py's)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videogpa.engine.runtime.distributed import child_env
from videogpa.engine.train.run_logs import read_metrics

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
    faster a launch than the deepspeed launcher (tests/reliability/test_two_rank_resume.py runs both)."""
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
