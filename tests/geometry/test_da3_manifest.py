"""Every released DA3 size built on the meta device has exactly the official state dict
(da3_manifests.json)."""

import json

import pytest
import torch

from videogpa.engine.geometry.da3 import SIZES, DA3Config, build_da3, config_from_official
from videogpa.engine.geometry.da3.loading import tied_groups

NAMES = ("da3-small", "da3-base", "da3-large", "da3-giant", "da3mono-large", "da3metric-large")


@pytest.fixture(scope="module")
def manifests(fixtures_dir):
    return json.loads((fixtures_dir / "da3_manifests.json").read_text())["models"]


def test_the_six_sizes_are_the_manifests(manifests):
    assert sorted(manifests) == sorted(NAMES) == sorted(SIZES)


@pytest.mark.parametrize("name", NAMES)
def test_meta_build_matches_the_manifest(manifests, name):
    manifest = manifests[name]
    with torch.device("meta"):
        model = build_da3(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: entry["shape"] for k, entry in manifest["state_dict"].items()}
    assert len(ours) == manifest["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    for module, count in manifest["num_parameters_by_module"].items():
        assert sum(p.numel() for p in getattr(model, module).parameters()) == count, module
    expected_ties = sorted(sorted(group) for group in manifest["tied_state_dict_entries"])
    assert sorted(sorted(group) for group in tied_groups(model)) == expected_ties
    assert not list(model.buffers())


@pytest.mark.parametrize("name", NAMES)
def test_official_configs_give_the_same_architecture(manifests, name):
    config = manifests[name]["config"]  # the derived section, with the official YAML under "yaml"
    assert config_from_official(config, name) == SIZES[name]
    assert config_from_official(config["yaml"], name) == SIZES[name]


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown DA3 size 'da3-huge'"):
        build_da3("da3-huge")
    with pytest.raises(ValueError, match="out_layers must index blocks"):
        DA3Config(depth=12, out_layers=(5, 7, 9, 12))
    with pytest.raises(ValueError, match="head must be one of"):
        DA3Config(head="dpt3")
    with pytest.raises(ValueError, match="missing or malformed DA3 config entry 'net'"):
        config_from_official({"head": {}}, "cfg.json")
    net = {"name": "vits", "out_layers": [5, 7, 9, 11], "alt_start": 4, "qknorm_start": 4, "rope_start": 4}
    head = {"dim_in": 768, "output_dim": 2, "features": 64, "out_channels": [48, 96, 192, 384]}
    official = {"net": {**net, "cat_token": True}, "head": head, "cam_enc": {"dim_out": 384}}
    official["cam_dec"] = {"dim_in": 1024}
    with pytest.raises(ValueError, match=r"cam_dec.dim_in = 1024 cannot be built; DA3 derives 768"):
        config_from_official(official, "cfg.json")


def test_config_json_round_trip():
    config = SIZES["da3-giant"]
    assert DA3Config.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="x.json: not a DA3Config"):
        DA3Config.from_json('{"embed_dim": 64, "enable_gs": true}', "x.json")
