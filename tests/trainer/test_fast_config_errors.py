"""recipes/dpo.py, the generate and encode stages, the loop and its evaluation report a bad --set, a
placeholder, a bad launcher or a missing input folder before they import the model stack (DeepSpeed,
diffusers, transformers): seconds, not the minute those imports take on a busy machine."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("deepspeed", "diffusers", "transformers", "peft")
PROBE = """
import sys
sys.argv = ["{recipe}.py", *{args!r}]
sys.path.insert(0, {recipes!r})
import {recipe} as recipe
status = recipe.main(sys.argv[1:])
print("STATUS", status, "HEAVY", sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _run(*args: str, recipe: str = "dpo") -> tuple[str, str]:
    code = PROBE.format(recipe=recipe, args=list(args), recipes=str(REPO / "recipes"), heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    return done.stdout, done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.max_stepz=3"], "train.max_stepz"),
        (["--set", "train.max_steps=many"], "train.max_steps"),
        (["--config", str(REPO / "recipes/configs/cogvideox_5b_t2v.yaml")], "2 placeholder"),
        (["--set", "model.path=/nowhere/model"], "'model.path'.*'/nowhere/model' does not exist"),
    ],
)
def test_config_errors_come_before_the_model_stack_is_imported(args, message, tmp_path):
    stdout, stderr = _run(*args, "--output-dir", str(tmp_path / "out"))
    assert "STATUS 2 HEAVY []" in stdout, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), stderr

    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "recipe, args, message",
    [
        ("generate", ["--set", "loop.generation.num_candidatez=3"], "loop.generation.num_candidatez"),
        ("encode", ["--pairs", "p.jsonl", "--set", "loop.encode.heldout_fraction=lots"], "heldout_fraction"),
    ],
)
def test_stage_config_errors_come_before_the_model_stack_is_imported(recipe, args, message, tmp_path):
    stdout, stderr = _run(*args, "--out-dir", str(tmp_path / "out"), recipe=recipe)
    assert "STATUS 2 HEAVY []" in stdout, stdout + stderr
    lines = stderr.strip().splitlines()
    assert lines and re.search(message, lines[-1]), stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "recipe, args, message",
    [
        ("pipeline", ["--set", "loop.pairs.gap=0.2"], "loop.pairs.gap"),
        ("pipeline", ["--config", str(REPO / "recipes/configs/cogvideox_5b_t2v.yaml")], "placeholder"),
        ("evaluate", ["--set", "loop.evaluate.num_candidates=zero"], "loop.evaluate.num_candidates"),
        ("evaluate", ["--set", "loop.launcher=['mpirun']"], "mpirun"),
    ],
)
def test_loop_config_errors_come_before_the_model_stack_is_imported(recipe, args, message, tmp_path):
    stdout, stderr = _run(*args, "--output-dir", str(tmp_path / "out"), recipe=recipe)
    assert "STATUS 2 HEAVY []" in stdout, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), stderr
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_named_before_the_model_stack(tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "run"
    stdout, stderr = _run("--output-dir", str(out))
    assert "STATUS 2 HEAVY []" in stdout, stdout + stderr
    assert stderr.strip().splitlines() == [f"error: cannot write the output folder {out}: Not a directory"]
