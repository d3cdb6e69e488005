"""What every recipe shares (engine.cli): a flag per config field, --config (a whole config's loop section, or
the section alone) and --set, and bad input as one `error: ...` line with exit status 2."""

import argparse
import dataclasses
import typing

import pytest
import yaml

from tests.stages.stage_helpers import load_recipe, write_rows
from videogpa.engine.core.cli import add_config_file_flags, add_config_flags, stage_config
from videogpa.engine.core.config import EncodeConfig, GenerationConfig, PairsConfig, ScoreConfig

RECIPES = ("dpo", "pipeline", "generate", "score", "pairs", "encode", "evaluate", "export")


def parser_for(cls, section):
    p = argparse.ArgumentParser()
    add_config_flags(p, cls)
    add_config_file_flags(p, section)
    return p


@pytest.mark.parametrize("cls", [GenerationConfig, ScoreConfig, PairsConfig, EncodeConfig])
def test_every_config_field_has_a_flag(cls):
    """A nested section's fields too (dest `section.field`: ScoreConfig.epipolar)."""
    actions = {a.dest for a in parser_for(cls, "x")._actions}
    hints, fields = typing.get_type_hints(cls), set()
    for f in dataclasses.fields(cls):
        section = hints[f.name]
        nested = dataclasses.is_dataclass(section)
        fields |= {f"{f.name}.{g.name}" for g in dataclasses.fields(section)} if nested else {f.name}
    assert fields <= actions and (cls is not ScoreConfig or {"metrics", "epipolar.matcher"} <= actions)


def test_list_and_nested_flags_reach_the_config():
    args = parser_for(ScoreConfig, "score").parse_args(
        [
            "--metrics",
            "reprojection, epipolar",
            "--epipolar-stride",
            "2",
            "--epipolar-lightglue-weights",
            "lg",
        ]
    )
    cfg = stage_config(ScoreConfig, "score", args)
    assert cfg.metrics == ["reprojection", "epipolar"]
    assert (cfg.epipolar.stride, cfg.epipolar.lightglue_weights, cfg.epipolar.matcher) == (
        2,
        "lg",
        "lightglue",
    )
    args = parser_for(ScoreConfig, "score").parse_args(
        ["--set", "loop.score.epipolar.robust=kornia", "--epipolar-size", "9"]
    )
    cfg = stage_config(ScoreConfig, "score", args)
    assert (cfg.epipolar.robust, cfg.epipolar.size, cfg.size) == ("kornia", 9, None)  # --set and flag merge


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_takes_config_and_set(name, capsys):
    with pytest.raises(SystemExit):
        load_recipe(name).main(["--help"])
    text = capsys.readouterr().out
    assert "--config" in text and "--set" in text


def test_config_file_then_set_then_flags(tmp_path):
    whole = tmp_path / "loop.yaml"
    whole.write_text(
        yaml.safe_dump({"model": {"name": "wan2.2-ti2v"}, "loop": {"generation": {"steps": 7, "seed": 3}}})
    )
    p = parser_for(GenerationConfig, "generation")
    cfg = stage_config(
        GenerationConfig,
        "generation",
        p.parse_args(["--config", str(whole), "--set", "loop.generation.seed=5"]),
    )
    assert (cfg.model, cfg.steps, cfg.seed) == ("wan2.2-ti2v", 7, 5)  # the whole config's model and section
    args = p.parse_args(
        ["--config", str(whole), "--set", "loop.generation.seed=5", "--seed", "9", "--camera-motion"]
    )
    cfg = stage_config(GenerationConfig, "generation", args)
    assert (cfg.seed, cfg.camera_motion) == (9, True)  # flags last
    section = tmp_path / "pairs.yaml"
    section.write_text(yaml.safe_dump({"min_gap": 0.2}))
    cfg = stage_config(
        PairsConfig, "pairs", parser_for(PairsConfig, "pairs").parse_args(["--config", str(section)])
    )
    assert cfg.min_gap == 0.2 and cfg.min_motion == PairsConfig.min_motion
    assert not stage_config(
        PairsConfig, "pairs", parser_for(PairsConfig, "pairs").parse_args(["--no-plots"])
    ).plots


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    scores = write_rows(
        tmp_path / "scores.jsonl", [{"video": "a.mp4", "status": "ok", "score": 0.1, "motion": 1}]
    )
    recipe = load_recipe("pairs")
    assert (
        recipe.main(
            ["--scores", str(scores), "--out-dir", str(tmp_path / "p"), "--set", "loop.pairs.min_gap=-1"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == "error: config key 'loop.pairs.min_gap': expected a non-negative value"
    assert (
        recipe.main(["--scores", str(scores), "--out-dir", str(tmp_path / "p"), "--set", "loop.pairs.gap=1"])
        == 2
    )
    assert "unknown config key(s) ['loop.pairs.gap']" in capsys.readouterr().err
    assert recipe.main(["--scores", str(tmp_path / "missing.jsonl"), "--out-dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl does not exist" in err
    assert not (tmp_path / "p" / "pairs.jsonl").exists()


def test_one_override_grammar_full_keys_everywhere(tmp_path, capsys):
    """Stage recipes take --set with the same full dotted keys as dpo.py and pipeline.py."""
    scores = write_rows(tmp_path / "scores.jsonl", [])
    recipe = load_recipe("pairs")
    assert (
        recipe.main(["--scores", str(scores), "--out-dir", str(tmp_path / "p"), "--set", "min_gap=0.1"]) == 2
    )
    err = capsys.readouterr().err
    assert "expected --set loop.pairs.KEY=VALUE (e.g. --set loop.pairs.min_gap=0.1)" in err
    assert (
        recipe.main(["--scores", str(scores), "--out-dir", str(tmp_path / "p"), "--set", "loop.score.size=4"])
        == 2
    )
    assert "this recipe runs the loop.pairs section" in capsys.readouterr().err
