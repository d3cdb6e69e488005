"""`python tests/trainer/zero3_worker.py ARGS...`: recipes/dpo.py with ARGS, printing the process group's
backend and the trainer's device once they are set up (tests/trainer/test_zero3_gpu.py reads them)."""

import runpy
import sys
from pathlib import Path

import torch.distributed as dist

from videogpa.engine.runtime import distributed as D

_init = D.init_distributed


def _init_and_say() -> None:
    _init()
    print(f"ZERO3_WORKER backend={dist.get_backend()} device={D.device()}", flush=True)


D.init_distributed = _init_and_say
recipe = Path(__file__).resolve().parents[2] / "recipes" / "dpo.py"
sys.argv = [str(recipe), *sys.argv[1:]]
runpy.run_path(str(recipe), run_name="__main__")
