"""The in-tree VGGT reproduces the authors' tiny VGGT (weights, input, every output) in float32."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from videogpa.engine.geometry.vggt import config_from_official_args, depth_to_world_points, load_vggt
from videogpa.engine.geometry.vggt.aggregator import IMAGENET_MEAN, IMAGENET_STD

OUTPUTS = ("pose_enc", "pose_enc_list", "extrinsic", "intrinsic", "depth", "depth_conf")
OUTPUTS += ("world_points", "world_points_conf")
TOL = {"rtol": 1e-4, "atol": 1e-4}  # the fixture's suggestion; float32 noise there is ~1e-6 relative


def fixture_dirs(root):
    return sorted(p for p in root.glob("vggt_tiny_*") if p.is_dir())


@pytest.fixture(scope="module")
def tiny_cases(fixtures_dir):
    cases = []
    for folder in fixture_dirs(fixtures_dir):
        meta = json.loads((folder / "config.json").read_text())
        config = config_from_official_args(meta["construction"], str(folder / "config.json"))
        model = load_vggt(folder / "weights.safetensors", config=config)
        io = load_file(str(folder / "io.safetensors"))
        with torch.no_grad():
            outputs = model(io["images"])
        cases.append((folder.name, meta, model, io, outputs))
    assert cases, f"no vggt_tiny_* fixture under {fixtures_dir}"
    return cases


def test_outputs_match_the_reference(tiny_cases):
    for name, _, _, io, outputs in tiny_cases:
        for key in OUTPUTS:
            assert outputs[key].shape == io[key].shape, (name, key)
            torch.testing.assert_close(
                outputs[key], io[key], **TOL, msg=lambda m, k=key, n=name: f"{n} {k}: {m}"
            )
            relative = (outputs[key] - io[key]).abs().max() / io[key].abs().max()
            assert relative <= 1e-4, (name, key, float(relative))


def test_intermediate_tokens_match_the_reference(tiny_cases):
    for name, meta, model, io, _ in tiny_cases:
        images = io["images"]
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        with torch.no_grad():
            patch_tokens = model.aggregator.patch_embed(((images - mean) / std).flatten(0, 1))
            aggregated = torch.stack(model.aggregator(images))
        torch.testing.assert_close(patch_tokens, io["patch_embed.x_norm_patchtokens"], **TOL)
        torch.testing.assert_close(aggregated, io["aggregated_tokens"], **TOL)
        assert model.aggregator.patch_start_idx == meta["patch_start_idx"], name
        last = len(aggregated) - 1
        with torch.no_grad():
            kept = model.aggregator(images, keep={last})
        assert all(t is None for t in kept[:last])
        torch.testing.assert_close(kept[last], aggregated[last], rtol=0, atol=0)


def test_points_unprojected_from_depth_match_the_reference(tiny_cases):
    for _, _, _, io, outputs in tiny_cases:
        points = depth_to_world_points(outputs["depth"][0], outputs["extrinsic"][0], outputs["intrinsic"][0])
        expected = io["world_points_from_depth"][0]
        assert points.dtype == expected.dtype == torch.float64
        torch.testing.assert_close(points, expected, **TOL)


def test_unbatched_input_gives_the_same_outputs(tiny_cases):
    _, _, model, io, outputs = tiny_cases[0]
    with torch.no_grad():
        single = model(io["images"][0])
    for key in OUTPUTS:
        torch.testing.assert_close(single[key], outputs[key], rtol=1e-5, atol=1e-5)


def test_image_sizes_that_are_not_patch_multiples_are_rejected(tiny_cases):
    _, _, model, io, _ = tiny_cases[0]
    with pytest.raises(ValueError, match=f"multiples of {model.config.patch_size}"):
        model(io["images"][..., :-1])


@pytest.mark.gpu
def test_cuda_float32_matches_and_bf16_autocast_stays_close(tiny_cases):
    _, _, model, io, _ = tiny_cases[0]
    cuda_model = copy.deepcopy(model).to("cuda")
    images = io["images"].cuda()
    with torch.no_grad():
        full = cuda_model(images)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = cuda_model(images)
    for key in OUTPUTS:
        torch.testing.assert_close(full[key].cpu(), io[key], rtol=1e-3, atol=1e-3)  # TF32 convolutions
        assert low[key].dtype == torch.float32  # the heads run in float32
    torch.testing.assert_close(low["depth"].cpu(), io["depth"], rtol=0.05, atol=0.05)
