"""DeepSpeed's CPU shared-memory all-reduce creates one ~69 MB /dev/shm file per rank under the deepspeed
launcher and never removes it. init_distributed (engine/runtime/distributed.py) unlinks each rank's name
once all ranks have mapped the buffers: the all-reduce still works, and a crash leaves nothing in RAM."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stages.stage_helpers import REPO
from tests.trainer.test_dpo_recipe import _free_port
from videogpa.engine.runtime.distributed import child_env

pytestmark = pytest.mark.slow

RANK_SCRIPT = """
import os, time, torch, deepspeed.comm
from videogpa.engine.runtime import distributed as D
D.init_distributed()
values = torch.full((5,), float(D.rank() + 1))
deepspeed.comm.inference_all_reduce(values)  # through the shared-memory buffers
print(f"rank {D.rank()}: sum {values.tolist()} buffer named {D.shared_memory_buffer().exists()}", flush=True)
D.barrier()
if D.rank() == 1:
    os._exit(3)  # a crash: no clean-up code runs on this rank
time.sleep(120)  # rank 0 waits to be killed by the launcher, which saw rank 1 fail
"""


def test_launcher_runs_leave_no_shared_memory_behind(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = _free_port()
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    cmd = [deepspeed, "--num_gpus", "2", "--master_port", str(port), str(script)]
    env = child_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):  # 1 + 2 on every element, and the name already gone while the rank runs
        assert f"rank {rank}: sum [3.0, 3.0, 3.0, 3.0, 3.0] buffer named False" in done.stdout, done.stdout
    leaked = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leaked, leaked
