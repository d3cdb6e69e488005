"""How many torch threads a CPU rank takes (engine/runtime/distributed.py share_cpu_threads): every branch
forced, whatever machine the test runs on."""

import pytest
import torch

from videogpa.engine.runtime import distributed as D

LAUNCHER_VARIABLES = ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "LOCAL_SIZE")


@pytest.fixture
def eight_threads(monkeypatch):
    """A machine whose torch default is 8 threads, without a GPU, launched by nothing."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.set_num_threads(8)  # tests/conftest.py restores the session's count after the test


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, 8),  # a single process: every thread
        ({"LOCAL_WORLD_SIZE": "2"}, 4),  # torchrun, 2 ranks on this machine
        ({"LOCAL_SIZE": "4"}, 2),  # the deepspeed launcher, 4 ranks
        ({"LOCAL_WORLD_SIZE": "16"}, 1),  # more ranks than threads: one each, never zero
        ({"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "8"}, 8),  # the user's setting wins
    ],
)
def test_cpu_ranks_share_the_threads(eight_threads, monkeypatch, environment, expected):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert D.share_cpu_threads() == expected == torch.get_num_threads()


def test_a_gpu_machine_leaves_the_threads_alone(eight_threads, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert D.share_cpu_threads() == 8
