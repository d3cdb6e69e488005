"""Every stage on every GPU: one process's share of a stage's items.

A stage run by a launcher (torchrun, the deepspeed launcher: RANK / WORLD_SIZE / LOCAL_RANK in the
environment) or given `--shard I/N` (independent processes, e.g. a Slurm array) takes every count-th item of
its sorted item list (or of its fixed batches of it), starting at index; both together compose (`--shard I/N`
on N nodes of W ranks each is shard I·W + rank of N·W). Each shard writes its own record files
(engine.io.sharded: `manifest.shard-I-of-N.jsonl`), holds its own folder lock (`.lock.STAGE.shard-I-of-N`),
and readers take the union, so an item's output depends on the item only and a rerun with any N finishes what
a killed shard left. One process (no launcher, no --shard) is shard 0 of 1 and keeps the unsharded file names.
No process group is started for this; `barrier` uses one only if the caller already initialised it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.sharded import shard_path

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"shard count must be ≥ 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` (as --shard takes it)."""
        m = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text)
        try:
            if not m:
                raise ValueError("expected I/N, e.g. 0/4")
            return cls(int(m[1]), int(m[2]))
        except ValueError as err:
            raise ValueError(f"--shard {text}: {err}") from None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def select(self, items: list[T]) -> list[T]:
        """This shard's share: items[index], items[index + count], ... (the items in a deterministic
        order)."""
        return items[self.index :: self.count]

    def stream(self, items: Iterable[T]) -> Iterator[T]:
        """select's share of an iterable, taken lazily as it streams by (nothing else of it is kept)."""
        return itertools.islice(items, self.index, None, self.count)

    def path(self, path: str | os.PathLike) -> Path:
        """The file of a record set (logical name `path`) that this shard writes."""
        return shard_path(path, self.index, self.count)

    def lock_name(self, stage: str) -> str:
        """The folder lock of this shard of `stage` (one process: the folder's `.lock`)."""
        return ".lock" if not self.sharded else f".lock.{stage}.shard-{self.index}-of-{self.count}"

    def lock_shares_with(self, stage: str) -> str | None:
        """The lock names of this run's other shards: one stage and one sharding in a folder at a time."""
        return f".lock.{stage}.shard-*-of-{self.count}" if self.sharded else None


WHOLE = Shard()  # one process: every item, the unsharded file names


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {value!r}") from None


def launcher_shard() -> Shard:
    """RANK of WORLD_SIZE when a launcher started this process, else 0 of 1."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if world is None:
        return Shard()
    return Shard(rank or 0, world)


def current_shard(cli_value: Shard | str | None = None) -> Shard:
    """This process's shard: the launcher's rank within `cli_value` (`--shard I/N`; None: 0/1). A Shard is
    taken as it is (already resolved, or WHOLE: every item in this process, whatever the launcher)."""
    if isinstance(cli_value, Shard):
        return cli_value
    given = Shard.parse(cli_value) if cli_value is not None else WHOLE
    rank = launcher_shard()
    return Shard(given.index * rank.count + rank.index, given.count * rank.count)


def shard_device(configured: str | None, default: str) -> str:
    """The device of this process: cuda:LOCAL_RANK when a launcher started it and it runs on plain "cuda"
    (configured, or the default when none is), else the configured one (None: `default`)."""
    device = configured or default
    local = _env_int("LOCAL_RANK")
    if local is not None and device == "cuda":
        import torch

        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def barrier() -> None:
    """Wait for the launcher's other ranks, if the caller started a process group (never starts one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def one_process_per_shard(run):
    """Decorator for a sharded stage's `run(config, inputs, out_dir, ..., shard=None)`: resolves the shard
    (current_shard of the `shard` argument), passes it on as a Shard and holds the shard's lock of out_dir
    while the stage runs (two copies of one shard, another stage, or another sharding of the folder are
    refused). The stage is named by its module (engine.stages.generate: "generate")."""
    stage = run.__module__.rpartition(".")[2]

    @functools.wraps(run)
    def locked(cfg, inputs, out_dir, *args, shard: Shard | str | None = None, **kwargs):
        shard = current_shard(shard)
        with folder_lock(out_dir, shard.lock_name(stage), shares_with=shard.lock_shares_with(stage)):
            return run(cfg, inputs, out_dir, *args, shard=shard, **kwargs)

    return locked


def _group_rank() -> int | None:
    """This process's rank in the caller's process group; None when there is none."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


def finishes(shard: Shard, complete: Callable[[], bool]) -> bool:
    """Whether this process does its stage's once-only step (assembling, reporting) now that its own share is
    done: with a launcher's process group, rank 0 after a barrier (every rank's share is done; with
    `--shard I/N` on top, only if the whole set is done, as for independent shards); without one, every
    item of the whole set must be done (`complete()`, checked after this shard's own share is written, so the
    last of several independent shards to finish sees it); one process (not sharded): always."""
    import torch.distributed as dist

    rank = _group_rank()
    if rank is not None and dist.get_world_size() > 1:  # (a group of one, e.g. a test's, is no launcher)
        barrier()
        if rank or shard.count == dist.get_world_size():
            return rank == 0  # the group is the whole set
        # rank 0 of one of several independent --shard groups: like an independent shard below
    return not shard.sharded or complete()


@contextlib.contextmanager
def sole(folder: str | os.PathLike, step: str) -> Iterator[bool]:
    """Hold the folder's lock of a once-only step (`.STEP.lock`, beside the shards' own locks) while the block
    runs; yields False, holding nothing, when another live process holds it (that process does the step)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(folder, f".{step}.lock"))
            held = True
        except ValueError:
            held = False
        yield held


@contextlib.contextmanager
def one_at_a_time(folder: str | os.PathLike, step: str, poll_s: float = 0.2) -> Iterator[None]:
    """Hold the folder's `.STEP.lock` while the block runs, waiting while another live process holds it (the
    shards of a run building one shared thing: the first builds it, the others then find it built)."""
    while True:
        with sole(folder, step) as held:
            if held:
                yield
                return
        time.sleep(poll_s)
