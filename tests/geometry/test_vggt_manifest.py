"""VGGT() with the defaults has exactly the public VGGT-1B state-dict contract (built on the meta device)."""

import json

import pytest
import torch

from videogpa.engine.geometry.vggt import VGGT, VGGTConfig
from videogpa.engine.geometry.vggt.loading import check_state_dict


def test_default_state_dict_equals_the_vggt_1b_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "vggt_1b_manifest.json").read_text())
    with torch.device("meta"):
        model = VGGT()
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(e["key"], e["shape"]) for e in manifest["keys"] if not e["key"].startswith("track_head.")]
    assert ours == theirs  # same keys, same shapes, same order
    assert len(ours) + manifest["per_module"]["track_head"]["num_keys"] == manifest["num_keys"]
    frozen = sorted(name for name, p in model.named_parameters() if not p.requires_grad)
    assert frozen == manifest["non_trainable_parameters"]
    assert not list(model.buffers())  # ImageNet constants are not in the state dict


def test_per_module_parameter_counts_match_the_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "vggt_1b_manifest.json").read_text())
    with torch.device("meta"):
        model = VGGT()
    for name in ("aggregator", "camera_head", "depth_head", "point_head"):
        module = getattr(model, name)
        assert sum(p.numel() for p in module.parameters()) == manifest["per_module"][name]["num_params"], name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"img_size": 100}, "multiple of patch_size"),
        ({"num_heads": 0}, "num_heads must be positive"),
        ({"embed_dim": 30, "num_heads": 3}, "multiple of 4"),
        ({"dpt_layers": (0, 1, 2, 24)}, "dpt_layers"),
        ({"dpt_out_channels": (8, 16, 32)}, "dpt_out_channels"),
    ],
)
def test_config_rejects_impossible_architectures(overrides, message):
    with pytest.raises(ValueError, match=message):
        VGGTConfig(**overrides)


def test_config_json_round_trip_and_unknown_keys():
    config = VGGTConfig(embed_dim=64, depth=3, dpt_layers=(0, 1, 2, 2))
    assert VGGTConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="enable_track"):
        VGGTConfig.from_dict({"embed_dim": 64, "enable_track": True}, "x.json")
    with pytest.raises(ValueError, match="embed_dim must look like 1024"):
        VGGTConfig.from_dict({"embed_dim": "big"}, "x.json")
    with pytest.raises(ValueError, match="dpt_layers"):
        VGGTConfig.from_dict({"dpt_layers": [0, 1, 2, 2.5]}, "x.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        VGGTConfig.from_json("{", "x.json")


def manifest_state_dict(manifest):
    return {e["key"]: torch.empty(e["shape"], device="meta") for e in manifest["keys"]}


def test_full_checkpoint_check_drops_exactly_the_track_head(fixtures_dir):
    manifest = json.loads((fixtures_dir / "vggt_1b_manifest.json").read_text())
    with torch.device("meta"):
        model = VGGT()
    kept = check_state_dict(model, manifest_state_dict(manifest), "manifest")
    dropped = {e["key"] for e in manifest["keys"]} - set(kept)
    assert dropped == {e["key"] for e in manifest["keys"] if e["module"] == "track_head"}
    assert list(kept) == list(model.state_dict())


def test_full_checkpoint_check_names_a_missing_and_a_misshaped_key(fixtures_dir):
    manifest = json.loads((fixtures_dir / "vggt_1b_manifest.json").read_text())
    with torch.device("meta"):
        model = VGGT()
    state = manifest_state_dict(manifest)
    del state["aggregator.global_blocks.23.ls2.gamma"]
    state["depth_head.scratch.output_conv2.2.weight"] = torch.empty(3, 32, 1, 1, device="meta")
    with pytest.raises(ValueError) as info:
        check_state_dict(model, state, "public.safetensors")
    assert "missing keys: aggregator.global_blocks.23.ls2.gamma" in str(info.value)
    assert "depth_head.scratch.output_conv2.2.weight (expected [2, 32, 1, 1], got [3, 32, 1, 1])" in str(
        info.value
    )
