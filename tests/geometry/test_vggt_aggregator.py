"""Aggregator alternation: block order, chaining and output pairing for any aa_order / aa_block_size."""

import dataclasses
import json

import pytest
import torch

from videogpa.engine.geometry.vggt import TINY_CONFIG, VGGTConfig, config_from_official_args
from videogpa.engine.geometry.vggt.aggregator import Aggregator


def run_with_trace(config, images):
    aggregator = Aggregator(config).eval()
    calls = []
    for kind in ("frame", "global"):
        for i, block in enumerate(getattr(aggregator, f"{kind}_blocks")):
            block.register_forward_hook(lambda m, args, out, n=(kind, i): calls.append((n, args[0], out)))
    with torch.no_grad():
        outputs = aggregator(images)
    return calls, outputs


@pytest.mark.parametrize(
    ("order", "block_size", "expected"),
    [
        (("frame", "global"), 1, ["f0", "g0", "f1", "g1", "f2", "g2", "f3", "g3"]),
        (("frame", "global"), 2, ["f0", "f1", "g0", "g1", "f2", "f3", "g2", "g3"]),
        (("global", "frame"), 2, ["g0", "g1", "f0", "f1", "g2", "g3", "f2", "f3"]),
    ],
)
def test_blocks_alternate_chain_and_pair(order, block_size, expected):
    config = dataclasses.replace(
        TINY_CONFIG, depth=4, dpt_layers=(0, 1, 2, 3), aa_order=order, aa_block_size=block_size
    )
    b, s = 2, 3
    calls, outputs = run_with_trace(config, torch.rand(b, s, 3, 28, 42))
    assert [f"{kind[0]}{i}" for (kind, i), _, _ in calls] == expected
    for (_, _, previous), (name, current, _) in zip(calls, calls[1:]):
        torch.testing.assert_close(current.reshape(previous.shape), previous, rtol=0, atol=0, msg=str(name))
        assert current.shape[0] == (b * s if name[0] == "frame" else b)  # frame: per image; global: per video
    last = {name: out for name, _, out in calls}
    assert len(outputs) == 4
    for i, output in enumerate(outputs):
        frame, global_ = (last[(k, i)].reshape(b, s, -1, config.embed_dim) for k in ("frame", "global"))
        torch.testing.assert_close(output, torch.cat([frame, global_], dim=-1), rtol=0, atol=0)


def test_config_rejects_bad_alternation():
    with pytest.raises(ValueError, match="aa_order"):
        VGGTConfig(aa_order=("frame", "frame"))
    with pytest.raises(ValueError, match="aa_block_size"):
        VGGTConfig(aa_block_size=5)


def test_official_arguments_that_vggt_cannot_build_are_named(fixtures_dir):
    folder = sorted(fixtures_dir.glob("vggt_tiny_*"))[0]
    construction = json.loads((folder / "config.json").read_text())["construction"]
    construction["camera_head"]["args"]["dim_in"] = 48
    with pytest.raises(ValueError, match="camera_head.dim_in = 48"):
        config_from_official_args(construction, "config.json")
    del construction["depth_head"]
    with pytest.raises(ValueError, match="depth_head"):
        config_from_official_args(construction, "config.json")
