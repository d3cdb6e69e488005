"""Loop units: one loop per folder, and the trainer config the loop derives."""

import json
import os

import pytest

from tests.stages.stage_helpers import REPO
from videogpa.engine.loop.demo import BUILTIN_LOOP
from videogpa.engine.loop.loop import Loop
from videogpa.engine.loop.loop_config import load_loop_config


def test_one_loop_per_folder(tmp_path):
    loop = Loop(load_loop_config(REPO / "recipes" / "configs" / "tiny.yaml"), tmp_path)
    with loop.lock() as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(ValueError, match=f"in use by another process \\(pid {os.getpid()}"):
            with loop.lock():
                pass
    assert not lock.exists()


@pytest.mark.parametrize(("micro", "expected_micro"), [(None, None), (8, 3), (2, 1)])
def test_trainer_config_points_at_the_loop_and_fits_a_small_set(tmp_path, micro, expected_micro):
    import torch

    from videogpa.engine.data.preference import PreferenceShardWriter

    cfg = load_loop_config(
        REPO / "recipes" / "configs" / "tiny.yaml", [f"train.micro_batch_size={micro or 'null'}"]
    )
    loop = Loop(cfg, tmp_path)
    loop.cfg.generation.pipeline = str(tmp_path / "models" / "pipeline")
    with PreferenceShardWriter(tmp_path / "shards" / "train") as writer:
        for i in range(3):
            writer.add(
                f"pair{i}", torch.zeros(3, 4, 8, 8), torch.ones(3, 4, 8, 8), torch.zeros(8, 32), 0.1, 0.2
            )
    cfg = loop.trainer_config(tmp_path / "shards")
    assert cfg["data"] == {"train": str(tmp_path / "shards" / "train"), "heldout": None, "synthetic": None}
    assert cfg["model"]["path"] == str((tmp_path / "models" / "pipeline").resolve())
    assert cfg["output_dir"] == str(tmp_path / "train")
    assert cfg["train"]["global_batch_size"] == 3 and cfg["train"]["micro_batch_size"] == expected_micro
    assert f"train.max_steps={cfg['train']['max_steps']}" in BUILTIN_LOOP["train_overrides"]
    assert cfg["loop"] is None  # the trainer's config carries no loop section


def test_round_k_takes_the_kth_slice_of_the_prompts_with_their_ids(tmp_path):
    from videogpa.engine.data.prompts import load_prompts
    from videogpa.engine.loop.rounds import prompt_slice

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(5)))
    second = load_prompts(prompt_slice(prompts, 2, 2, tmp_path / "round_2"))
    assert [(it.prompt_id, it.prompt) for it in second] == [("p00002", "prompt 2"), ("p00003", "prompt 3")]
    with pytest.raises(
        ValueError, match=r"loop.round_prompts 2: round 3 needs prompts 5..6 of .*, which has 5"
    ):
        prompt_slice(prompts, 3, 2, tmp_path / "round_3")


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        (["python3"], ["python3", "-m", "videogpa.recipes.score"]),
        (["/venv/bin/python"], ["/venv/bin/python", "-m", "videogpa.recipes.score"]),
        (
            ["torchrun", "--nproc-per-node", "8"],
            ["torchrun", "--nproc-per-node", "8", "-m", "videogpa.recipes.score"],
        ),
        (
            ["deepspeed", "--num_gpus", "8"],
            ["deepspeed", "--num_gpus", "8", "--module", "videogpa.recipes.score"],
        ),
        (["srun", "-n", "8", "python"], ["srun", "-n", "8", "python", "-m", "videogpa.recipes.score"]),
    ],
)
def test_stages_launch_as_modules(launcher, expected):
    from videogpa.engine.loop.launch import recipe_command

    assert recipe_command(launcher, "score") == expected


def test_a_launcher_that_cannot_run_a_module_is_named():
    from videogpa.engine.loop.launch import recipe_command

    with pytest.raises(
        ValueError, match=r"launcher \['mpirun', '-n', '8'\]: expected a python, torchrun or deepspeed"
    ):
        recipe_command(["mpirun", "-n", "8"], "score")


def test_the_loop_names_a_bad_launcher_before_any_stage(tmp_path):
    with pytest.raises(ValueError, match=r"launcher \['mpirun'\]"):
        load_loop_config(REPO / "recipes" / "configs" / "tiny.yaml", ["loop.train_launcher=['mpirun']"])
