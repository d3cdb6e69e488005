"""A finished tiny training run (checkpoints at steps 2 and 4) that the reliability tests copy and break."""

import shutil

import pytest

from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.train.trainer import Trainer

STEPS = {"max_steps": 4}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_config(out, train=STEPS)).run()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A private copy of the finished run to damage."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out
