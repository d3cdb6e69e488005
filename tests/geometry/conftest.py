"""Geometry test helpers."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a whole module: tiny networks run several times faster on the shared 2-core CI."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
