"""The learned matcher end to end with tiny random SuperPoint + LightGlue configs of transformers' own
classes: loading from local folders (clear errors), the authors' matching settings, shapes, coordinates,
determinism, too-few-match reporting. Frames of 48 px are matched as given (size=None) with the folder's 256
keypoints (max_keypoints=None): the authors' 1024-px resize and 2,048 keypoints cost seconds per frame on a
CPU."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import SuperPointConfig, SuperPointForKeypointDetection

from videogpa.engine.geometry.epipolar import EpipolarScorer
from videogpa.engine.geometry.lightglue import write_random_lightglue
from videogpa.engine.geometry.matching import build_matcher, frame_pairs
from videogpa.engine.scenes.procedural import make_scene, render_clip

SMALL = {"size": None, "max_keypoints": None}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("matchers")
    full = write_random_lightglue(root / "lightglue", seed=0, initializer_range=0.3)
    # a LightGlue folder without its keypoint detector, and a SuperPoint folder of its own
    bare = root / "lightglue_bare"
    write_random_lightglue(bare, seed=0, initializer_range=0.3)
    weights = load_file(str(bare / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("keypoint_detector.")},
        str(bare / "model.safetensors"),
        metadata={"format": "pt"},
    )
    detector = SuperPointForKeypointDetection(
        SuperPointConfig(
            encoder_hidden_sizes=[8, 8, 16, 16],
            decoder_hidden_size=32,
            descriptor_decoder_dim=32,
            max_keypoints=256,
        )
    )
    detector.save_pretrained(str(root / "superpoint"))
    return {"full": full, "bare": bare, "superpoint": root / "superpoint", "root": root}


@pytest.fixture(scope="module")
def frames():
    return render_clip(make_scene(3), "orbit", 5, 48, 48).frames


def test_missing_or_invalid_folders_are_clear_errors(folders, tmp_path):
    with pytest.raises(ValueError, match=f"LightGlue weights folder {tmp_path / 'nope'} has no config.json"):
        build_matcher("lightglue", lightglue_path=tmp_path / "nope")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="LightGlue weights folder .*broken could not be loaded"):
        build_matcher("lightglue", lightglue_path=tmp_path / "broken")
    with pytest.raises(
        ValueError, match=r"lightglue_bare lacks weights: \['keypoint_detector.*give superpoint_weights"
    ):
        build_matcher("lightglue", lightglue_path=folders["bare"])
    with pytest.raises(ValueError, match="needs lightglue_weights"):
        build_matcher("lightglue")
    with pytest.raises(ValueError, match="matcher must be one of"):
        build_matcher("sift")


def test_matches_shapes_coordinates_and_determinism(folders, frames):
    pairs = frame_pairs(5, stride=2)
    for kwargs in (
        {"lightglue_path": folders["full"], **SMALL},
        {"lightglue_path": folders["bare"], "superpoint_path": folders["superpoint"], **SMALL},
        {"lightglue_path": folders["full"], **SMALL, "size": 32},
    ):
        matcher = build_matcher("lightglue", **kwargs)
        first, again = matcher.match(frames, pairs), matcher.match(frames, pairs)
        assert first.points1.shape[0] == len(pairs) and first.pairs.tolist() == [list(p) for p in pairs]
        assert torch.equal(first.valid, again.valid) and torch.equal(first.points1, again.points1)
        assert torch.equal(first.points2, again.points2)
        for points in (first.points1[first.valid], first.points2[first.valid]):
            assert (points >= -0.5).all() and (
                points <= 47.5
            ).all()  # in the frames' pixels, whatever the size
    # a pair alone gives what it gives inside the batch (no adaptive stopping across pairs); the batch shape
    # may change float summation order, so one match decided by a near-tie may differ
    matcher = build_matcher("lightglue", lightglue_path=folders["full"], **SMALL)
    batch = matcher.match(frames, pairs)
    alone = [matcher.match(frames, [pair]) for pair in pairs[:2]]
    differing = sum(len(_matched(batch, k) ^ _matched(one, 0)) for k, one in enumerate(alone))
    assert sum(len(_matched(one, 0)) for one in alone) >= 8 and differing <= 1


def _matched(matches, k: int) -> set[tuple[float, ...]]:
    """Pair k's matches as (x1, y1, x2, y2) to 0.01 px (keypoints sit at pixel centres)."""
    v = matches.valid[k]
    rows = torch.cat([matches.points1[k][v], matches.points2[k][v]], dim=1).tolist()
    return {tuple(round(x, 2) for x in row) for row in rows}


def test_random_weights_give_too_few_matches_reported_as_such(folders, frames):
    """Random weights hardly match anything: every pair is reported unscored, and Epi is None, not 0."""
    matcher = build_matcher("lightglue", lightglue_path=folders["full"], **SMALL)
    score = EpipolarScorer(matcher, stride=2)(frames)
    assert score.epi_pairs == len(frame_pairs(5, stride=2)) and len(score.epi_pair_matches) == score.epi_pairs
    assert max(score.epi_pair_matches) < 20  # random weights: few mutual matches
    assert score.epi_pairs_scored == 0 and score.epi_pair_errors == [None] * score.epi_pairs
    assert score.epi is None and score.epi_px is None and score.epi_inlier_ratio is None
    assert score.epi_robust is None and score.epi_robust_pair_errors == [None] * score.epi_pairs


def test_defaults_are_the_authors_matching_settings(folders, frames):
    """SuperPoint at most 2,048 keypoints above 0.0005 (replacing the folder's 256 and transformers' 0.005),
    the longer side resized to 1024, 8-bit grey input in [0, 1]; None keeps the folder's settings."""
    matcher = build_matcher("lightglue", lightglue_path=folders["full"])
    decoder = matcher.model.keypoint_detector.keypoint_decoder
    assert (matcher.size, decoder.max_keypoints, decoder.keypoint_threshold) == (1024, 2048, 0.0005)
    assert matcher.model.filter_threshold == 0.0  # LightGlue's filtering is the folder's (the tiny one: 0)
    kept = build_matcher(
        "lightglue", lightglue_path=folders["full"], max_keypoints=None, keypoint_threshold=None
    )
    decoder = kept.model.keypoint_detector.keypoint_decoder
    assert (decoder.max_keypoints, decoder.keypoint_threshold) == (256, 0.005)
    gray, sx, sy = matcher._gray(frames)
    assert gray.shape == (5, 3, 1024, 1024) and sx == sy == 48 / 1024
    at_size, _, _ = build_matcher("lightglue", lightglue_path=folders["full"], size=None)._gray(frames)
    levels = at_size * 255
    assert torch.equal(levels, levels.round()) and 0 <= at_size.min() and at_size.max() <= 1  # 8-bit grey
    expected = ((frames * 255).floor() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(
        1
    ).round() / 255
    torch.testing.assert_close(at_size[:, 0], expected, rtol=0, atol=0)


def test_max_keypoints_caps_the_matches(folders, frames):
    few = build_matcher(
        "lightglue", lightglue_path=folders["full"], size=None, max_keypoints=3
    )  # not the 256
    matches = few.match(frames, frame_pairs(5))
    assert int(matches.counts.max()) <= 3
