"""The epipolar scores: the authors' Epi against kornia's functions written out here (fixed matches with
outliers), our robust score (Sampson distance against a NumPy reference, the true fundamental matrix of the
synthetic scenes' cameras, the batched robust fit), the < 20-match skip and the no-value video, and clean
clips ranked above corrupted ones by both."""

import random

import numpy as np
import pytest
import torch

from videogpa.engine.geometry.epipolar import (
    MIN_MATCHES,
    EpipolarScorer,
    fit_fundamental_batched,
    fundamental_from_cameras,
    sampson_distance,
    score_matches,
)
from videogpa.engine.geometry.matching import (
    GeometryMatcher,
    PairMatches,
    build_matcher,
    frame_pairs,
    pad_matches,
)
from videogpa.engine.geometry.pointcloud import unproject_depth
from videogpa.engine.scenes.matches import true_matches
from videogpa.engine.scenes.procedural import corrupt, make_scene, render_clip
from videogpa.engine.scenes.video_set import clip_geometry

SIZE, FRAMES = 48, 8
pytestmark = pytest.mark.usefixtures("one_thread")


def numpy_sampson(x1: np.ndarray, x2: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Hartley & Zisserman's first-order geometric error: |x2ᵀFx1| / sqrt((Fx1)₁² + (Fx1)₂² +
    (Fᵀx2)₁² + (Fᵀx2)₂²)."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    fx1, ftx2 = h1 @ f.T, h2 @ f
    return np.abs((h2 * fx1).sum(1)) / np.sqrt(
        fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    )


def numpy_fundamental(k1, e1, k2, e2) -> np.ndarray:
    """F = [e2]× P2 P1⁺ from the projection matrices (Hartley & Zisserman 9.2.2), an independent
    construction."""
    p1, p2 = k1 @ e1, k2 @ e2
    centre = np.linalg.svd(np.vstack([p1, [0, 0, 0, 0]]))[2][
        -1
    ]  # null vector of P1: the first camera's centre
    epipole = p2 @ centre
    cross = np.array(
        [[0, -epipole[2], epipole[1]], [epipole[2], 0, -epipole[0]], [-epipole[1], epipole[0], 0]]
    )
    return cross @ p2 @ np.linalg.pinv(p1)


def test_frame_pairs():
    assert frame_pairs(4) == [(0, 1), (1, 2), (2, 3)]
    assert frame_pairs(5, stride=3) == [(0, 1), (1, 2), (2, 3), (3, 4), (0, 3), (1, 4)]
    with pytest.raises(ValueError, match="at least 2 frames"):
        frame_pairs(1)


def test_sampson_distance_matches_the_numpy_reference():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 3))
    x1, x2 = rng.uniform(0, 64, (50, 2)), rng.uniform(0, 64, (50, 2))
    ours = sampson_distance(
        torch.from_numpy(x1)[None], torch.from_numpy(x2)[None], torch.from_numpy(f)[None]
    )[0]
    np.testing.assert_allclose(ours.numpy(), numpy_sampson(x1, x2, f), rtol=1e-9)


@pytest.mark.parametrize("path", ["dolly", "orbit"])
def test_true_fundamental_matrix_gives_near_zero_sampson_on_projected_points(path):
    clip = render_clip(make_scene(7), path, FRAMES, SIZE, SIZE)
    k, e = clip.intrinsics.double(), clip.extrinsics.double()
    world = unproject_depth(clip.depth.double(), k, e, dtype=torch.float64)[:, ::4, ::4].reshape(
        FRAMES, -1, 3
    )
    for i, j in frame_pairs(FRAMES, stride=3):
        points = world[i].numpy()
        x = [
            (kk @ (ee[:, :3] @ points.T + ee[:, 3:])).T
            for kk, ee in ((k[i].numpy(), e[i].numpy()), (k[j].numpy(), e[j].numpy()))
        ]
        x1, x2 = (h[:, :2] / h[:, 2:] for h in x)
        ours = fundamental_from_cameras(k[i], e[i], k[j], e[j]).numpy()
        reference = numpy_fundamental(k[i].numpy(), e[i].numpy(), k[j].numpy(), e[j].numpy())
        unit = lambda f: f / np.linalg.norm(f) * np.sign(f.flat[np.abs(f).argmax()])
        np.testing.assert_allclose(unit(ours), unit(reference), atol=1e-5)  # cameras are float32 values
        assert numpy_sampson(x1, x2, ours).max() < 1e-4  # pixels (float32 cameras: R is orthonormal to ~1e-7)
        shifted = x2 + np.array([0.0, 2.0])  # two pixels off: clearly not zero
        assert numpy_sampson(x1, shifted, ours).mean() > 0.1


def _scene_matches(n: int, outliers: int, seed: int):
    """Exact matches of random 3D points seen by two cameras, the first `outliers` of them replaced by
    noise."""
    g = torch.Generator().manual_seed(seed)
    points = (
        torch.rand(n, 3, generator=g, dtype=torch.float64) * 4
        - 2
        + torch.tensor([0.0, 0.0, 8.0], dtype=torch.float64)
    )
    k = torch.tensor([[60.0, 0, 32], [0, 60, 32], [0, 0, 1]], dtype=torch.float64)
    e1 = torch.cat([torch.eye(3, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)], 1)
    a = 0.08
    rot = torch.tensor(
        [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=torch.float64
    )
    e2 = torch.cat([rot, torch.tensor([[0.6], [0.1], [0.0]], dtype=torch.float64)], 1)
    proj = lambda e: (lambda h: h[:, :2] / h[:, 2:])((points @ e[:, :3].T + e[:, 3]) @ k.T)
    x1, x2 = proj(e1), proj(e2)
    x2[:outliers] = torch.rand(outliers, 2, generator=g, dtype=torch.float64) * 64
    return x1.float(), x2.float(), fundamental_from_cameras(k, e1, k, e2)


def test_batched_fit_finds_the_inliers_among_outliers_and_is_deterministic():
    pairs = [_scene_matches(120, outliers, seed) for seed, outliers in enumerate((0, 20, 40))]
    x1 = torch.stack([p[0] for p in pairs])
    x2 = torch.stack([p[1] for p in pairs])
    valid = torch.ones(3, 120, dtype=torch.bool)
    fit = fit_fundamental_batched(x1, x2, valid, threshold=0.5, seed=3)
    for k, outliers in enumerate((0, 20, 40)):
        true = sampson_distance(x1[k].double(), x2[k].double(), pairs[k][2])
        is_inlier = true < 0.5
        assert is_inlier[outliers:].all()
        found = fit.inliers[k]
        assert (found & is_inlier).sum() >= 0.95 * is_inlier.sum()  # the true inliers are found ...
        assert (found & ~is_inlier).sum() <= 2  # ... and hardly any outlier
    again = fit_fundamental_batched(x1, x2, valid, threshold=0.5, seed=3)
    assert torch.equal(fit.fundamental, again.fundamental) and torch.equal(fit.inliers, again.inliers)


def kornia_epi(points1: torch.Tensor, points2: torch.Tensor) -> float:
    """One pair's error as the authors compute it, written out: kornia's 8-point F on all matches (no weights,
    no RANSAC), then the mean of sqrt(squared Sampson distance + 1e-8), in pixels."""
    from kornia.geometry.epipolar import find_fundamental, sampson_epipolar_distance

    p1, p2 = points1.float()[None], points2.float()[None]
    f = find_fundamental(p1, p2)
    return float(torch.sqrt(sampson_epipolar_distance(p1, p2, f, squared=True) + 1e-8).mean())


def _padded(found: list[tuple[torch.Tensor, torch.Tensor]]) -> PairMatches:
    return pad_matches([(k, k + 1) for k in range(len(found))], found)


def test_authors_epi_on_matches_with_outliers_is_the_direct_kornia_computation():
    """Pairs of different lengths (padded in one PairMatches) with 0, 15, 40 and 10 outliers: each pair's
    error is kornia's 8-point fit on exactly its matches, outliers included, and the video's Epi is the mean
    over pairs; pixels, whatever frame size the scorer is told."""
    found = []
    for seed, (n, outliers) in enumerate([(100, 0), (100, 15), (100, 40), (60, 10)]):
        x1, x2, _ = _scene_matches(n, outliers, seed)
        found.append((x1, x2))
    score = score_matches(_padded(found), 64, 64)
    direct = [kornia_epi(a, b) for a, b in found]
    assert score.epi_pair_errors == pytest.approx(direct, rel=1e-6, abs=0)
    assert score.epi == pytest.approx(sum(direct) / 4, rel=1e-6) and score.epi_px == score.epi
    assert score.epi_pairs == score.epi_pairs_scored == 4 and score.epi_pair_matches == [100, 100, 100, 60]
    # outliers are averaged in (no RANSAC): they dominate; exact matches give about the 1e-4 px floor
    assert direct[0] < 1e-3 and min(direct[1:]) > 0.3
    clean = [kornia_epi(a[o:], b[o:]) for (a, b), o in zip(found[1:], (15, 40, 10))]
    assert all(c < 1e-3 for c in clean)
    # pixels, not normalised: the frame size does not enter, and scaling the image scales Epi
    assert score_matches(_padded(found), 640, 480).epi == score.epi
    doubled = score_matches(_padded([(2 * a, 2 * b) for a, b in found]), 128, 128)
    assert doubled.epi == pytest.approx(2 * score.epi, rel=1e-3)
    # ours differs by definition: robust, normalised by max(H, W), and it ignores the outliers
    assert score.epi_robust is not None and score.epi_robust_px == pytest.approx(64 * score.epi_robust)
    assert score.epi_robust_px < 0.1 * score.epi


def test_fewer_than_20_matches_skip_the_pair_and_no_valid_pair_is_no_value():
    assert MIN_MATCHES == 20
    x1, x2, _ = _scene_matches(40, 5, 0)
    valid = torch.ones(5, 40, dtype=torch.bool)
    for k, n in enumerate([40, 20, 19, 10, 5]):  # 20 is kept, 19 is not; 5 is below even the 8-point sample
        valid[k, n:] = False
    pairs = torch.tensor([[k, k + 1] for k in range(5)])
    matches = PairMatches(pairs, x1.expand(5, -1, -1), x2.expand(5, -1, -1), valid)
    score = score_matches(matches, 64, 64)
    assert (
        score.epi_pairs == 5 and score.epi_pairs_scored == 2 and score.epi_pair_matches == [40, 20, 19, 10, 5]
    )
    assert score.epi_pair_errors[2:] == [None] * 3
    assert score.epi_pair_errors[:2] == pytest.approx([kornia_epi(x1, x2), kornia_epi(x1[:20], x2[:20])])
    assert score.epi == pytest.approx(sum(score.epi_pair_errors[:2]) / 2)  # the skipped pairs are not 0
    assert score.epi_robust_pair_errors[2:] == [None] * 3
    # every pair below 20 matches: no value at all (None, never 0 or -1), for both scores
    valid[:2, 19:] = False
    none = score_matches(PairMatches(pairs, matches.points1, matches.points2, valid), 64, 64)
    assert none.epi is None and none.epi_px is None and none.epi_pairs_scored == 0
    assert none.epi_pair_errors == [None] * 5 and none.epi_pair_matches == [19, 19, 19, 10, 5]
    assert none.epi_robust is None and none.epi_robust_px is None and none.epi_inlier_ratio is None
    empty = PairMatches(
        pairs[:1], torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.bool)
    )
    nothing = score_matches(empty, 64, 64)
    assert nothing.epi is None and nothing.epi_pair_errors == [None] and nothing.epi_robust is None


def test_a_pair_whose_fit_is_not_finite_is_skipped():
    x1, x2, _ = _scene_matches(40, 0, 0)
    bad = x1.clone()
    bad[3, 0] = torch.nan
    score = score_matches(_padded([(x1, x2), (bad, x2)]), 64, 64)
    assert score.epi_pair_errors[1] is None and score.epi_pairs_scored == 1
    assert score.epi == pytest.approx(kornia_epi(x1, x2))
    assert score.epi_robust_pair_errors[1] is None and score.epi_robust_pairs_scored == 1


def test_oracle_matcher_agrees_with_the_true_matches_of_a_clean_clip():
    clip = render_clip(make_scene(11), "orbit", FRAMES, SIZE, SIZE)
    pairs = frame_pairs(FRAMES)
    oracle = GeometryMatcher().match(clip.frames, pairs, clip_geometry(clip))
    true = true_matches(clip, pairs)
    for k in range(len(pairs)):
        mine = {
            tuple(a.tolist()): b
            for a, b in zip(oracle.points1[k][oracle.valid[k]], oracle.points2[k][oracle.valid[k]])
        }
        exact = {
            tuple(a.tolist()): b
            for a, b in zip(true.points1[k][true.valid[k]], true.points2[k][true.valid[k]])
        }
        common = mine.keys() & exact.keys()
        # visibility edges differ
        assert len(common) >= 0.95 * max(len(mine), len(exact)) and len(common) > 50
        torch.testing.assert_close(
            torch.stack([mine[c] for c in common]), torch.stack([exact[c] for c in common]), atol=1e-3, rtol=0
        )
    score = EpipolarScorer(build_matcher("oracle"))(clip.frames, clip_geometry(clip))
    assert score.epi_pairs_scored == FRAMES - 1 and score.epi_px < 0.01
    # the scorer's defaults are the authors' Epi: consecutive pairs, every match, kornia's fit
    direct = [
        kornia_epi(oracle.points1[k][oracle.valid[k]], oracle.points2[k][oracle.valid[k]])
        for k in range(len(pairs))
    ]
    assert score.epi_pair_errors == pytest.approx(direct, rel=1e-6, abs=0)
    assert score.epi_px == pytest.approx(sum(direct) / len(direct), rel=1e-6)
    with pytest.raises(ValueError, match="needs the video's geometry"):
        EpipolarScorer(GeometryMatcher())(clip.frames)


def _score(clip, **settings):
    return score_matches(true_matches(clip, frame_pairs(FRAMES)), SIZE, SIZE, **settings)


def test_clean_clips_score_better_than_warped_and_drifting_ones():
    """Warp (non-rigid) and drift (an object moving) break epipolar geometry, in both scores. Drift needs a
    baseline: under a pure rotation (the "pan" path) every match obeys a homography, which F also fits."""
    rng = random.Random(2024)
    cases = [(kind, path) for kind in ("warp", "drift") for path in ("dolly", "orbit")] + [("warp", "pan")]
    correct = {"epi": 0, "epi_robust": 0}
    for i in range(30):
        kind, path = cases[i % len(cases)]
        clip = render_clip(make_scene(1000 + i), path, FRAMES, SIZE, SIZE)
        clean, bad = _score(clip), _score(corrupt(clip, kind, rng.uniform(0.3, 1.0), seed=i))
        for key in correct:
            correct[key] += getattr(clean, key) < getattr(bad, key)
    assert correct["epi"] / 30 >= 0.9 and correct["epi_robust"] / 30 >= 0.9, correct


@pytest.mark.parametrize("kind", ["scale", "jitter"])
def test_per_frame_similarities_are_invisible_to_the_epipolar_error(kind):
    """A per-frame zoom or shift is a projective change of one image, which F absorbs (F' = A⁻ᵀ F): with
    exact matches such clips score like clean ones, far below a warp (the reprojection score does see
    them)."""
    clip = render_clip(make_scene(5), "orbit", FRAMES, SIZE, SIZE)
    warped, similar = _score(corrupt(clip, "warp", 0.6, seed=0)), _score(corrupt(clip, kind, 1.0, seed=0))
    assert similar.epi < 0.1 * warped.epi and similar.epi_robust < 0.1 * warped.epi_robust


def test_kornia_ransac_agrees_on_the_ranking():
    clip = render_clip(make_scene(3), "dolly", FRAMES, SIZE, SIZE)
    bad = corrupt(clip, "warp", 0.8, seed=1)
    clean, warped = _score(clip, robust="kornia").epi_robust, _score(bad, robust="kornia").epi_robust
    assert clean < 0.2 * warped
    assert _score(bad).epi_robust == pytest.approx(
        warped, rel=0.5
    )  # the batched MSAC measures the same thing
    with pytest.raises(ValueError, match="robust must be one of"):
        _score(clip, robust="lmeds")


@pytest.mark.gpu
def test_batched_fit_on_the_gpu_is_deterministic_and_agrees_with_the_cpu():
    pairs = [_scene_matches(500, 100, seed) for seed in range(9)]
    x1, x2 = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    valid = torch.ones(9, 500, dtype=torch.bool)
    cpu = fit_fundamental_batched(x1, x2, valid, threshold=1.0, seed=0)
    gpu = fit_fundamental_batched(x1.cuda(), x2.cuda(), valid.cuda(), threshold=1.0, seed=0)
    again = fit_fundamental_batched(x1.cuda(), x2.cuda(), valid.cuda(), threshold=1.0, seed=0)
    assert torch.equal(gpu.fundamental, again.fundamental) and torch.equal(gpu.inliers, again.inliers)
    # different random streams on the two devices: the same inliers up to a few borderline matches
    assert (gpu.inliers.cpu() != cpu.inliers).sum(dim=1).max() <= 10


@pytest.mark.gpu
def test_authors_epi_on_the_gpu_agrees_with_the_cpu():
    found = [_scene_matches(300, outliers, seed)[:2] for seed, outliers in enumerate((0, 30, 60, 90))]
    cpu = score_matches(_padded(found), 64, 64)
    gpu = score_matches(_padded([(a.cuda(), b.cuda()) for a, b in found]), 64, 64)
    assert gpu.epi_pairs_scored == cpu.epi_pairs_scored == 4
    assert gpu.epi_pair_errors == pytest.approx(cpu.epi_pair_errors, rel=1e-3, abs=1e-5)
