"""Loading DA3 weights offline: files and folders, the hub prefix, the shared LayerNorm, one-line errors."""

import re

import pytest
import torch
from safetensors.torch import save_file

from videogpa.engine.geometry.da3 import SIZES, TINY_CONFIG, build_da3, load_da3, random_da3, save_da3
from videogpa.engine.geometry.da3.loading import infer_config

SHARED_NORM = [f"head.scratch.output_conv2_aux.{k}.2.{p}" for k in range(4) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def tiny(single_thread):
    torch.manual_seed(5)
    return random_da3(TINY_CONFIG).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def reference(tiny, images):
    with torch.no_grad():
        return tiny(images)


def official_state(model):
    """The state dict as separate tensors (what a checkpoint file holds)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_loads_the_same(path, reference, images, **kwargs):
    loaded = load_da3(path, **kwargs)
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        out = loaded(images)
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics", "ray"):
        torch.testing.assert_close(out[key], reference[key], rtol=0, atol=0)
    return loaded


def one_line_error(path, match, **kwargs):
    with pytest.raises(ValueError, match=re.escape(match)) as info:
        load_da3(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_save_and_load_round_trip_reads_the_config_from_metadata(tmp_path, tiny, images, reference):
    path = save_da3(tiny, tmp_path / "tiny.safetensors")
    loaded = assert_loads_the_same(path, reference, images)
    assert loaded.config == TINY_CONFIG


def test_hub_prefix_and_one_shared_norm_name_are_accepted(tmp_path, tiny, images, reference):
    state = official_state(tiny)
    for level in (0, 3):  # 0: the name safetensors' save_model keeps; any other single one works too
        kept = {f"head.scratch.output_conv2_aux.{level}.2.{p}" for p in ("weight", "bias")}
        hub = {f"model.{k}": v for k, v in state.items() if k not in SHARED_NORM or k in kept}
        assert len(hub) == len(state) - 6
        save_file(hub, str(tmp_path / "model.safetensors"))
        assert_loads_the_same(tmp_path / "model.safetensors", reference, images, config=TINY_CONFIG)


def test_four_stored_copies_of_the_shared_norm_must_agree(tmp_path, tiny):
    state = official_state(tiny)
    state[SHARED_NORM[4]] = state[SHARED_NORM[4]] + 1.0
    save_file(state, str(tmp_path / "w.safetensors"))
    message = one_line_error(tmp_path / "w.safetensors", "one shared parameter", config=TINY_CONFIG)
    assert SHARED_NORM[4] in message and "w.safetensors" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "missing key cam_dec.fc_t.bias"),
        ("unexpected", "unexpected key head.extra.weight"),
        ("misshaped", "mis-shaped key head.norm.weight (expected [64], got [65])"),
        ("integer", "non-floating-point tensor cam_enc.token_norm.bias"),
    ],
)
def test_a_key_that_does_not_fit_is_a_one_line_error_naming_it_and_the_file(tmp_path, tiny, change, expected):
    state = official_state(tiny)
    if change == "missing":
        del state["cam_dec.fc_t.bias"]
    elif change == "unexpected":
        state["head.extra.weight"] = torch.zeros(2)
    elif change == "misshaped":
        state["head.norm.weight"] = torch.ones(65)
    else:
        state["cam_enc.token_norm.bias"] = torch.zeros(32, dtype=torch.int32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    message = one_line_error(tmp_path / "bad.safetensors", expected, config=TINY_CONFIG)
    assert str(tmp_path / "bad.safetensors") in message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_file_is_a_one_line_error_naming_it(tmp_path, tiny, damage):
    path = save_da3(tiny, tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes(b"not a safetensors file at all" if damage == "garbage" else data[: len(data) // 2])
    message = one_line_error(path, "is not a valid safetensors file")
    assert str(path) in message


def test_a_folder_of_shards_loads_and_its_problems_are_named(tmp_path, tiny, images, reference):
    state = official_state(tiny)
    keys = list(state)
    folder = tmp_path / "da3-tiny"
    folder.mkdir()
    save_file({k: state[k] for k in keys[:100]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in keys[100:]}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text("{}")
    assert_loads_the_same(folder, reference, images, config=TINY_CONFIG)
    save_file({keys[0]: state[keys[0]]}, str(folder / "model-extra.safetensors"))
    one_line_error(folder, f"key {keys[0]} is in both", config=TINY_CONFIG)
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "holds no .safetensors file")
    one_line_error(tmp_path / "absent.safetensors", "absent.safetensors do not exist")


def test_the_size_is_inferred_from_the_weights(tmp_path, tiny):
    for name in ("da3-small", "da3-giant", "da3mono-large"):
        with torch.device("meta"):
            state = build_da3(name).state_dict()
        assert infer_config(state, name) == SIZES[name]
    save_file(official_state(tiny), str(tmp_path / "plain.safetensors"))  # no config in the metadata
    one_line_error(tmp_path / "plain.safetensors", "no released DA3 size has a ViT of width 32 with 8 blocks")
