"""train.export_formats and recipes/export.py: a finished run's weights in every format, carrying the run's
metadata (base model, rank, alpha, targets, steps, β, held-out accuracy from eval.json); bad input is one
line and exit status 2."""

import json
from pathlib import Path

import pytest
from diffusers import CogVideoXTransformer3DModel
from safetensors import safe_open
from safetensors.torch import load_file

from tests.stages.stage_helpers import load_recipe
from tests.trainer.trainer_helpers import BASE, tiny_config
from videogpa.engine.core.config_loading import config_from_dict
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, METADATA_KEY
from videogpa.engine.train.exports import COMFYUI_NAME, INFO_KEY, MERGED_NAME
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
ALL = ["diffusers", "comfyui", "merged"]


def _recipe():
    return load_recipe("export")


def _info(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()[INFO_KEY])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(
        out, train={**BASE["train"], "max_steps": 2, "checkpoint_every": 0, "export_formats": ALL}
    )
    return out, Trainer(cfg).run()


def test_the_trainer_writes_every_format_with_the_runs_metadata(finished):
    out, result = finished
    expected = {
        "base_model": {"name": "tiny", "path": None},
        "rank": BASE["lora"]["rank"],
        "alpha": float(BASE["lora"]["alpha"]),
        "targets": ["to_q", "to_k", "to_v", "to_out.0"],
        "steps": 2,
        "beta": BASE["dpo"]["beta"],
        "heldout_accuracy_before": result["heldout_accuracy_before"],
        "heldout_accuracy_after": result["heldout_accuracy_after"],
    }
    assert json.loads((out / "eval.json").read_text()) == result
    for path in (out / LORA_WEIGHT_NAME, out / COMFYUI_NAME):
        assert _info(path) == expected
    with safe_open(str(out / LORA_WEIGHT_NAME), "pt") as f:
        assert METADATA_KEY in f.metadata()  # diffusers' LoRA config kept beside ours
    assert json.loads((out / f"{MERGED_NAME}.json").read_text()) == expected
    merged = CogVideoXTransformer3DModel.from_pretrained(out / MERGED_NAME)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_the_recipe_exports_a_finished_run_folder(finished, tmp_path, capsys):
    out, _ = finished
    assert _recipe().main(["--run", str(out), "--formats", "comfyui", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / COMFYUI_NAME)]
    theirs, ours = load_file(str(out / COMFYUI_NAME)), load_file(str(tmp_path / COMFYUI_NAME))
    assert theirs.keys() == ours.keys() and all((theirs[k] == ours[k]).all() for k in ours)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "{tmp}/nothing"], r"^error: run folder \S+/nothing does not exist$"),
        (["--run", "{tmp}"], r"^error: \S+ is not a trainer run folder: no config.yaml and no checkpoint$"),
        (
            ["--run", "{run}", "--formats", "comfyui,onnx", "--out", "{tmp}/x"],
            r"^error: export formats \['comfyui', 'onnx'\]: "
            r"expected some of \['diffusers', 'comfyui', 'merged'\]$",
        ),
        (
            ["--run", "{run}", "--set", "lora.rank=8", "--out", "{tmp}/x"],
            r"^error: \S+/pytorch_lora_weights.safetensors: rank 4, alpha 8.0 differ from the run's config "
            r"\(lora.rank 8, lora.alpha 8.0\)$",
        ),
        (
            ["--run", "{run}", "--set", "model.path={tmp}/base", "--formats", "merged", "--out", "{tmp}/x"],
            r"^error: .*\S+/base.* does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(finished, tmp_path, capsys, args, message):
    import re

    argv = [a.format(tmp=tmp_path, run=finished[0]) for a in args]
    assert _recipe().main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.match(message, err.strip()), err


def test_a_run_without_its_lora_file_is_named(finished, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text((finished[0] / "config.yaml").read_text())
    assert _recipe().main(["--run", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path} holds no {LORA_WEIGHT_NAME}: the run has not finished"
    )


@pytest.mark.parametrize(
    "train, lora, message",
    [
        ({"export_formats": ["comfyui"]}, {}, "must include 'diffusers'"),
        ({"export_formats": ["diffusers", "onnx"]}, {}, "expected distinct values among"),
        ({"export_formats": ["diffusers", "diffusers"]}, {}, "expected distinct values among"),
        ({"export_formats": ["diffusers", "merged"]}, {"enabled": False}, "need LoRA"),
    ],
)
def test_export_formats_are_validated(train, lora, message):
    data = {
        **BASE,
        "train": {**BASE["train"], **train},
        "lora": {**BASE["lora"], **lora},
        "dpo": {**BASE["dpo"], "reference": "separate"},
    }
    with pytest.raises(ValueError, match=rf"config key 'train.export_formats': .*{message}"):
        config_from_dict(data)
