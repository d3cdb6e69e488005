"""One process per output folder: every stage refuses a folder another process is writing (before it reads
its inputs), and releases the folder when done."""

import os

import pytest

from videogpa.engine.core.config import (
    EncodeConfig,
    EvaluateConfig,
    GenerationConfig,
    PairsConfig,
    ScoreConfig,
)
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.stages import encode, evaluate, generate, pairs, score

STAGES = {
    "generate": (generate.run, GenerationConfig()),
    "score": (score.run, ScoreConfig()),
    "pairs": (pairs.run, PairsConfig()),
    "encode": (encode.run, EncodeConfig()),
    "evaluate": (evaluate.run, EvaluateConfig()),
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_refuses_a_folder_in_use(name, tmp_path):
    run, cfg = STAGES[name]
    with folder_lock(tmp_path):  # as another process writing there would hold it
        with pytest.raises(ValueError, match=rf"{tmp_path} is in use by another process \(pid {os.getpid()}"):
            run(cfg, tmp_path / "inputs-never-read", tmp_path)


def test_a_stage_releases_its_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        pairs.run(PairsConfig(), tmp_path / "missing.jsonl", tmp_path)  # fails on its input...
    with folder_lock(tmp_path):  # ...and the folder is free again
        pass
