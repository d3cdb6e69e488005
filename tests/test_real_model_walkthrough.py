"""docs/real-model.md followed as written, on tiny stand-ins of every file it names: the commands of its
"One command per stage" block and its my_loop.yaml are read from the page, the /models/... paths point at
tiny random files in the layout the page gives, and each command runs (in this process, the launcher
dropped) with a few size overrides appended. A page edit that breaks a command breaks this test."""

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from tests.geometry.lpips_weights import random_weight_files
from tests.stages.stage_helpers import load_recipe
from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models.tiny import write_tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "real-model.md"

# What makes each stage tiny: appended to the page's command, never replacing what it shows.
TINY_SIZES = {
    "generate": [
        "--num-frames",
        "13",
        "--height",
        "64",
        "--width",
        "64",
        "--steps",
        "2",
        "--num-candidates",
        "2",
    ],
    "pairs": ["--min-gap", "0"],  # a random model's videos differ by less than the real threshold
    "encode": ["--max-sequence-length", "48", "--heldout-fraction", "0.25"],  # 4 pairs: 5% holds none
    "dpo": [
        "--set=train.max_steps=2",
        "--set=train.global_batch_size=2",
        "--set=train.checkpoint_every=0",
        "--set=train.precision=fp32",
        "--set=train.progress_bar=false",
        "--set=optim.warmup_steps=1",
        "--set=eval.draws=1",
    ],
    "evaluate": [
        "--set=loop.evaluate.num_candidates=1",
        "--set=loop.generation.steps=2",
        "--set=loop.generation.num_frames=13",
        "--set=loop.generation.height=64",
        "--set=loop.generation.width=64",
    ],
}


def _stage_commands() -> list[list[str]]:
    """The page's "One command per stage" block: one token list per command (continuations joined)."""
    section = PAGE.read_text().split("## 2. One command per stage", 1)[1].split("```yaml", 1)[0]
    block = re.sub(r"\\\n\s*", " ", section)
    lines = [line.strip() for line in block.splitlines() if line.startswith("    ")]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def _my_loop(training_config: Path) -> dict:
    """my_loop.yaml as the page says to write it: the training config with model.path set, plus its loop:."""
    page = PAGE.read_text()
    loop = yaml.safe_load(page.split("```yaml", 1)[1].split("```", 1)[0])
    config = yaml.safe_load(training_config.read_text())
    config["model"]["path"] = "/models/CogVideoX-5b"
    return {**config, **loop}


def _stand_ins(root: Path) -> dict[str, str]:
    """Tiny random files in the page's layout; returns /models/... → its stand-in."""
    models = root / "models"
    pipeline = write_tiny_pipeline(models / "CogVideoX-5b")
    vggt = save_vggt(random_vggt(TINY_CONFIG), models / "vggt" / "model.safetensors")
    (models / "lpips").mkdir(parents=True)
    vgg, lins, _, _ = random_weight_files(models / "lpips")
    return {
        "/models/CogVideoX-5b": str(pipeline),
        "/models/vggt/model.safetensors": str(vggt),
        "/models/lpips/vgg16-397923af.pth": str(vgg),
        "/models/lpips/vgg.pth": str(lins),
    }


def _localised(tokens: list[str], paths: dict[str, str]) -> list[str]:
    out = []
    for token in tokens:
        for page_path, local in paths.items():
            token = token.replace(page_path, local)
        out.append(token)
    return out


@pytest.mark.slow
def test_the_real_model_page_runs_on_tiny_stand_ins(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(2)
    paths = _stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)  # the page's commands run in a checkout: recipes/ beside runs/
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    (tmp_path / "prompts.txt").write_text("a red barn\nan old stone bridge\na quiet library\na snowy cabin\n")
    (tmp_path / "heldout_prompts.txt").write_text("a sunlit museum hall\n")
    loop = _my_loop(REPO / "recipes" / "configs" / "cogvideox_5b_t2v.yaml")
    (tmp_path / "my_loop.yaml").write_text(
        yaml.safe_dump(json.loads(json.dumps(_localised_yaml(loop, paths))))
    )

    commands = _stage_commands()
    stages = [Path(next(t for t in c if t.endswith(".py"))).stem for c in commands]
    assert stages == ["generate", "score", "pairs", "encode", "dpo", "export", "evaluate"], stages
    for tokens, stage in zip(commands, stages):
        script = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
        assert tokens[script] == f"recipes/{stage}.py"
        argv = _localised(tokens[script + 1 :], paths) + TINY_SIZES.get(stage, [])
        status = load_recipe(stage).main(argv)
        assert status in (0, None), f"{stage}: {shlex.join(tokens)} exited {status}"
        capsys.readouterr()

    rows = read_jsonl(tmp_path / "runs" / "gen" / "scores.jsonl")
    assert len(rows) == 8 and all(r["status"] == "ok" and r["backend"] == "vggt" for r in rows)
    assert (tmp_path / "runs" / "shards" / "train" / "index.jsonl").is_file()
    assert (tmp_path / "runs" / "dpo" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "runs" / "dpo" / "exports" / "comfyui_lora.safetensors").is_file()
    assert (tmp_path / "runs" / "eval" / "evaluation.md").is_file()


def _localised_yaml(value, paths: dict[str, str]):
    """Every string of a parsed YAML with the page's /models/... paths pointed at the stand-ins."""
    if isinstance(value, dict):
        return {k: _localised_yaml(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_localised_yaml(v, paths) for v in value]
    if isinstance(value, str):
        return _localised([value], paths)[0]
    return value
