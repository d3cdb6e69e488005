"""Loading VGGT weights: formats, the stored config, and clear errors for files that do not fit."""

import json

import pytest
import torch
from safetensors.torch import save_file

from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGT, load_vggt, save_vggt


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(7)
    return VGGT(TINY_CONFIG).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(3))


def assert_same_outputs(a, b, images):
    with torch.no_grad():
        out_a, out_b = a(images), b(images)
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        torch.testing.assert_close(out_a[key], out_b[key], rtol=0, atol=0)


def test_safetensors_round_trip_reads_the_config_from_metadata(tmp_path, tiny_model, images):
    path = save_vggt(tiny_model, tmp_path / "vggt.safetensors")
    loaded = load_vggt(path)
    assert loaded.config == TINY_CONFIG
    assert not loaded.training
    assert not loaded.aggregator.patch_embed.mask_token.requires_grad
    assert_same_outputs(tiny_model, loaded, images)


def test_torch_checkpoint_with_sidecar_config_and_track_head_keys(tmp_path, tiny_model, images):
    state = dict(tiny_model.state_dict())
    # dropped, like the public checkpoint's
    state["track_head.tracker.query_ref_token"] = torch.zeros(1, 2, 8)
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "vggt_config.json").write_text(json.dumps(TINY_CONFIG.to_dict()))
    loaded = load_vggt(tmp_path / "model.pt")
    assert loaded.config == TINY_CONFIG
    assert_same_outputs(tiny_model, loaded, images)


def test_explicit_config_wins_and_bf16_weights_load_as_float32(tmp_path, tiny_model):
    state = {k: v.to(torch.bfloat16) for k, v in tiny_model.state_dict().items()}
    save_file(state, str(tmp_path / "plain.safetensors"))
    loaded = load_vggt(tmp_path / "plain.safetensors", config=TINY_CONFIG)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    del state["camera_head.embed_pose.bias"]
    state["depth_head.extra.weight"] = torch.zeros(3)
    state["point_head.norm.weight"] = torch.zeros(5)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"vggt_config": TINY_CONFIG.to_json()})
    with pytest.raises(ValueError) as info:
        load_vggt(path)
    message = str(info.value)
    assert "1 missing keys: camera_head.embed_pose.bias" in message
    assert "1 unexpected keys: depth_head.extra.weight" in message
    assert "point_head.norm.weight (expected [64], got [5])" in message
    assert str(path) in message


def test_default_config_is_vggt_1b_and_a_mismatch_is_reported(tmp_path, tiny_model):
    save_file(dict(tiny_model.state_dict()), str(tmp_path / "no_config.safetensors"))
    with pytest.raises(ValueError, match=r"aggregator\.camera_token \(expected \[1, 2, 1, 1024\]"):
        load_vggt(tmp_path / "no_config.safetensors")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_vggt(tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_vggt(corrupt)
    bad_meta = tmp_path / "bad_meta.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad_meta), metadata={"vggt_config": '{"embed_dim": "big"'})
    with pytest.raises(ValueError, match="vggt_config"):
        load_vggt(bad_meta)


class NotAStateDict:
    pass


def test_torch_checkpoints_are_never_unpickled_beyond_weights(tmp_path):
    pickled = tmp_path / "object.pt"
    torch.save({"model": NotAStateDict()}, pickled)
    with pytest.raises(ValueError, match="weights-only"):
        load_vggt(pickled, config=TINY_CONFIG)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is neither safetensors nor"):
        load_vggt(garbage, config=TINY_CONFIG)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="dict of name"):
        load_vggt(listed, config=TINY_CONFIG)
