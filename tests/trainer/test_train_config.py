"""The YAML config schema, overrides and the generated DeepSpeed JSON."""

import json
from pathlib import Path

import pytest
import yaml

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import apply_override, config_from_dict, load_config
from videogpa.engine.runtime.distributed import accumulation_steps, deepspeed_config, micro_batch_size

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))
SYNTH = {"data": {"synthetic": {}}}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_recipe_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # The DeepSpeed JSON can be generated for one rank and its global batch is the config's.
    ds = deepspeed_config(cfg, world=1)
    assert ds["train_batch_size"] == cfg.train.global_batch_size


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem != "tiny"], ids=lambda p: p.stem)
def test_real_model_configs_carry_the_paper_hyperparameters(path):
    cfg = load_config(path)
    assert (cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha) == (True, 64, 128.0)
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.warmup_steps, cfg.optim.grad_clip) == (
        5e-6,
        "cosine",
        500,
        1.0,
    )
    # the authors trained CogVideoX 1.5 for 1,500 steps, the other models for 10,000
    steps = 1_500 if cfg.model.name == "cogvideox1.5-t2v" else 10_000
    assert (cfg.train.precision, cfg.train.global_batch_size, cfg.train.max_steps) == ("bf16", 16, steps)
    assert cfg.dpo.beta == 1.0 and cfg.distributed.zero_stage == 3
    assert cfg.model.path is not None


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"dpo\.betta"):
        config_from_dict({**SYNTH, "dpo": {"betta": 1.0}})
    with pytest.raises(ValueError, match=r"\['colour'\]"):
        config_from_dict({**SYNTH, "colour": 1})


def test_wrong_types_and_choices_are_named():
    with pytest.raises(ValueError, match=r"train\.max_steps.*expected int"):
        config_from_dict({**SYNTH, "train": {"max_steps": "many"}})
    with pytest.raises(ValueError, match=r"dpo\.reference.*adapters_off"):
        config_from_dict({**SYNTH, "dpo": {"reference": "frozen"}})
    with pytest.raises(ValueError, match=r"lora\.enabled"):
        config_from_dict({**SYNTH, "lora": {"enabled": False}, "dpo": {"reference": "adapters_off"}})
    with pytest.raises(ValueError, match=r"data"):
        config_from_dict({})
    with pytest.raises(ValueError, match=r"data\.synthetic\.corruptions.*'blur'"):
        config_from_dict({"data": {"synthetic": {"corruptions": ["jitter", "blur"]}}})
    with pytest.raises(ValueError, match=r"data\.synthetic\.corruptions.*at least one"):
        config_from_dict({"data": {"synthetic": {"corruptions": []}}})
    with pytest.raises(ValueError, match=r"data\.synthetic\.strength.*positive"):
        config_from_dict({"data": {"synthetic": {"strength": 0.0}}})


def test_yaml_exponent_floats_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**SYNTH, "optim": {"lr": "5e-6"}}))
    cfg = load_config(path, ["train.max_steps=7", "dpo.beta=2500"])
    assert cfg.optim.lr == 5e-6 and cfg.train.max_steps == 7 and cfg.dpo.beta == 2500.0
    with pytest.raises(ValueError, match="c.yaml"):
        load_config(path, ["train.bogus=1"])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_override({}, "no-equals-sign")


def test_accumulation_and_deepspeed_json(tmp_path):
    cfg = config_from_dict({**SYNTH, "train": {"micro_batch_size": 2, "global_batch_size": 16}})
    assert accumulation_steps(cfg, 1) == 8 and accumulation_steps(cfg, 4) == 2
    with pytest.raises(ValueError, match="global_batch_size"):
        accumulation_steps(cfg, 3)
    auto = config_from_dict({**SYNTH, "train": {"micro_batch_size": None, "global_batch_size": 8}})
    assert [(micro_batch_size(auto, w), accumulation_steps(auto, w)) for w in (1, 2, 8)] == [
        (8, 1),
        (4, 1),
        (1, 1),
    ]
    with pytest.raises(ValueError, match="multiple of the number of data-parallel ranks"):
        micro_batch_size(auto, 3)
    ds = deepspeed_config(cfg, world=2)
    assert ds["gradient_accumulation_steps"] == 4 and ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] and ds["gradient_clipping"] == cfg.optim.grad_clip
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}))
    cfg.distributed.deepspeed_config = str(user)
    merged = deepspeed_config(cfg, world=2)
    assert merged["zero_optimization"] == {**ds["zero_optimization"], "offload_optimizer": {"device": "cpu"}}
    cfg.distributed.deepspeed_config = str(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="nope.json"):
        deepspeed_config(cfg, world=2)
