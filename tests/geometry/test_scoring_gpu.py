"""On a CUDA device: the scorer's own path (score_reconstruction with its default backend, i.e. the fused
reprojection-error kernel when only the MSE is asked for, the render kernel otherwise) against the same scores
computed with the plain-PyTorch render, on a synthetic clip and its oracle geometry."""

import pytest

from videogpa.engine.geometry.scoring import score_reconstruction
from videogpa.engine.scenes.procedural import corrupt, make_scene, render_clip
from videogpa.engine.scenes.video_set import clip_geometry

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("corrupted", [False, True])
@pytest.mark.parametrize("image_metrics", [False, True])
def test_kernel_scores_match_the_reference_render(corrupted, image_metrics):
    clip = render_clip(make_scene(7), "orbit", 10, 96, 128)
    if corrupted:
        clip = corrupt(clip, "jitter", 1.0, seed=3)
    frames, geometry = clip.frames.cuda(), clip_geometry(clip)
    want = score_reconstruction(frames, geometry, image_metrics=image_metrics, backend="torch")
    got = score_reconstruction(frames, geometry, image_metrics=image_metrics)
    assert got.mse == pytest.approx(want.mse, rel=1e-3, abs=1e-7)
    assert got.mvcs == pytest.approx(want.mvcs, rel=1e-5) and got.n_points == want.n_points
    if image_metrics:
        assert got.coverage == pytest.approx(want.coverage, abs=1e-3)
        assert got.psnr == pytest.approx(want.psnr, rel=1e-3)
