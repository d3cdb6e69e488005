"""DeepSpeed set-up: the DeepSpeed JSON generated from the one YAML config, process-group start-up."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import merge_dicts


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What init_distributed puts in this process's environment for torch's env:// rendezvous.
PROCESS_GROUP_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child job (a trainer, a launcher): this one's, without this process's rank and
    rendezvous address (a child that inherited them would join, or collide with, this process group)."""
    env = {k: v for k, v in os.environ.items() if k not in PROCESS_GROUP_ENV}
    return {**env, **extra}


def init_distributed() -> None:
    """Start the process group; without a launcher (plain `python`) act as rank 0 of a world of 1."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    _unlink_shared_memory_buffer()


def shared_memory_buffer() -> Path:
    """The /dev/shm file of this rank's buffer in DeepSpeed's CPU shared-memory all-reduce, named as its
    op names it (ops/csrc/cpu/comm/shm.cpp): a prefix, the user id, MASTER_ADDR, MASTER_PORT, the rank."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm", f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{dist.get_rank()}")


def _unlink_shared_memory_buffer() -> None:
    """Unlink this rank's shared-memory buffer once every rank has mapped every buffer.

    Under the deepspeed launcher on a CPU machine, DeepSpeed creates one ~69 MB file per rank in /dev/shm
    (RAM) and never unlinks it: each run leaked that much memory until reboot (a CI run of the suite leaked
    GBs, until a later test was killed for memory). Every rank maps all the buffers before init returns, so
    after a barrier the names are no longer needed: the mappings live until the processes exit, crashed or
    not."""
    own = shared_memory_buffer()
    if not own.exists():  # the same on every rank: the op creates all the buffers or none
        return
    dist.barrier()
    own.unlink(missing_ok=True)


def local_ranks() -> int:
    """How many ranks the launcher started on this machine (torchrun: LOCAL_WORLD_SIZE; the deepspeed
    launcher: LOCAL_SIZE); 1 without a launcher."""
    for name in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def share_cpu_threads() -> int:
    """On a machine without a GPU, unless OMP_NUM_THREADS says otherwise, give this rank an equal share of
    torch's threads (all of them for a single process, one each when the ranks fill the cores: more only
    contend). Returns the thread count now in use."""
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, torch.get_num_threads() // local_ranks()))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators from one seed."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _all_gather_json(value) -> list:
    """Every rank's JSON-serialisable value, in rank order (exchanged as JSON text)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, json.dumps(value))
    return [json.loads(v) for v in out]


def gather_dicts(part: dict) -> dict:
    """The union of every rank's dict."""
    merged: dict = {}
    for d in _all_gather_json(part):
        merged.update(d)
    return merged


def first_message(message: str | None) -> str | None:
    """The lowest rank's non-None message, on every rank (so all ranks decide alike)."""
    return next((m for m in _all_gather_json(message) if m is not None), None)


def raise_together(error: Exception | None) -> None:
    """Collective: if any rank has an error, every rank raises it (the lowest such rank's message) as a
    ValueError, instead of one rank failing while the others wait in the next collective."""
    message = first_message(None if error is None else str(error))
    if message is not None:
        raise ValueError(message)


# Sequence parallelism (engine/runtime/sequence_parallel.py): groups of consecutive ranks share each sample's
# tokens.
_SEQUENCE_GROUP: tuple[int, object] = (1, None)  # (size, this rank's process group or None)


def init_sequence_parallel(size: int) -> None:
    """Collective: split the world into groups of `size` consecutive ranks (one node's GPUs, so the
    all-to-alls stay on NVLink); each group is one data-parallel rank. size 1 = plain data parallelism."""
    global _SEQUENCE_GROUP
    world = world_size()
    if world % size:
        raise ValueError(
            f"config key 'distributed.sequence_parallel' ({size}) must divide the number of ranks ({world})"
        )
    group = None
    if size > 1:  # every rank creates every group (torch requires it), keeps its own
        for start in range(0, world, size):
            created = dist.new_group(list(range(start, start + size)))
            if start <= rank() < start + size:
                group = created
    _SEQUENCE_GROUP = (size, group)


def sequence_parallel_size() -> int:
    return _SEQUENCE_GROUP[0]


def sequence_group():
    """This rank's sequence-parallel process group (None without sequence parallelism)."""
    return _SEQUENCE_GROUP[1]


def data_parallel_rank() -> int:
    """This rank's data-parallel index: the ranks of one sequence-parallel group share it (and their
    pairs)."""
    return rank() // sequence_parallel_size()


def data_parallel_size() -> int:
    return world_size() // sequence_parallel_size()


def sum_over_data_parallel(values: torch.Tensor) -> torch.Tensor:
    """In place: the sum over data-parallel ranks of a tensor that every rank of a sequence-parallel group
    holds alike (only the group's first rank contributes)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        if rank() % sequence_parallel_size():
            values.zero_()
        dist.all_reduce(values)
    return values


def device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (returns a new tensor)."""
    out = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    out = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def micro_batch_size(cfg: Config, world: int) -> int:
    """Pairs per data-parallel rank per forward: the configured value, or (None) the global batch split over
    `world` data-parallel ranks."""
    micro = cfg.train.micro_batch_size
    if micro is None:
        if cfg.train.global_batch_size % world:
            raise ValueError(
                f"config key 'train.global_batch_size' ({cfg.train.global_batch_size}) must be a multiple of "
                f"the number of data-parallel ranks ({world})"
            )
        return cfg.train.global_batch_size // world
    return micro


def accumulation_steps(cfg: Config, world: int) -> int:
    """Gradient-accumulation steps so that micro × accumulation × ranks = the global batch."""
    micro = micro_batch_size(cfg, world)
    if cfg.train.global_batch_size % (micro * world):
        raise ValueError(
            f"config key 'train.global_batch_size' ({cfg.train.global_batch_size}) must be a multiple of "
            f"train.micro_batch_size × data-parallel ranks = {micro} × {world}"
        )
    return cfg.train.global_batch_size // (micro * world)


def deepspeed_config(cfg: Config, world: int) -> dict:
    """The DeepSpeed JSON for this run; a user's `distributed.deepspeed_config` file is merged over it."""
    dcfg = cfg.distributed
    zero: dict = {"stage": dcfg.zero_stage}
    if dcfg.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False)
    if dcfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if dcfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    ds = {
        "train_micro_batch_size_per_gpu": micro_batch_size(cfg, world),
        "gradient_accumulation_steps": accumulation_steps(cfg, world),
        # DeepSpeed counts every rank as data-parallel: a sequence-parallel group's ranks share their pairs.
        "train_batch_size": cfg.train.global_batch_size * dcfg.sequence_parallel,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.train.precision == "bf16"},
        # The optimizer is torch AdamW, handed to DeepSpeed (its own fused/CPU Adam compile at start-up).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if dcfg.deepspeed_config is not None:
        path = Path(dcfg.deepspeed_config)
        if not path.is_file():
            raise ValueError(f"config key 'distributed.deepspeed_config': file {str(path)!r} does not exist")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"config key 'distributed.deepspeed_config': {path} is not valid JSON: {err}"
            ) from None
        ds = merge_dicts(ds, user)
    return ds


def inference_config(cfg: Config, world: int, offload: bool) -> dict:
    """DeepSpeed JSON for a frozen ZeRO-3 inference engine (the `separate` reference)."""
    zero: dict = {"stage": 3}
    if offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size(cfg, world),
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.train.precision == "bf16"},
        "steps_per_print": 2**31 - 1,
    }
