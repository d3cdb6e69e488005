"""recipes/score.py --metrics: the epipolar scores beside the reprojection one or alone, its errors one line
with exit 2, and the score stage (engine.stages.score) with the same settings: the authors' defaults, their
518-px frames when no reconstruction is scored, and a video without an Epi left out of the summary's mean."""

import pytest

from tests.stages.stage_helpers import load_recipe
from videogpa.engine.core.config import EpipolarConfig, ScoreConfig
from videogpa.engine.geometry.lightglue import write_random_lightglue
from videogpa.engine.io.records import read_jsonl, write_jsonl_atomic
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages.score import Scorer, summarize_scores

EPI_FIELDS = {
    "epi",
    "epi_px",
    "epi_pairs",
    "epi_pairs_scored",
    "epi_pair_errors",
    "epi_pair_matches",
    "epi_robust",
    "epi_robust_px",
    "epi_robust_pairs_scored",
    "epi_robust_pair_errors",
}
SMALL = ["--match-size", "64", "--epipolar-max-keypoints", "256"]  # the tiny random matcher, fast on a CPU

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("score")


def test_metrics_and_epipolar_settings_are_checked_when_the_config_is_read():
    ScoreConfig(metrics=["epipolar", "reprojection"]).check("loop.score")
    bad = [
        (ScoreConfig(metrics=["3dcs"]), r"'loop.score.metrics': expected a non-empty list .* got \['3dcs'\]"),
        (ScoreConfig(metrics=[]), "'loop.score.metrics': expected a non-empty list"),
        (
            ScoreConfig(epipolar=EpipolarConfig(matcher="sift")),
            "'loop.score.epipolar.matcher': expected one of",
        ),
        (
            ScoreConfig(epipolar=EpipolarConfig(robust="lmeds")),
            "'loop.score.epipolar.robust': expected one of",
        ),
        (
            ScoreConfig(epipolar=EpipolarConfig(min_matches=4)),
            "'loop.score.epipolar.min_matches': expected at least 8",
        ),
        (
            ScoreConfig(epipolar=EpipolarConfig(inlier_threshold=1.5)),
            "'loop.score.epipolar.inlier_threshold'",
        ),
        (ScoreConfig(epipolar=EpipolarConfig(stride=0)), "'loop.score.epipolar.stride': expected a positive"),
        (
            ScoreConfig(epipolar=EpipolarConfig(max_keypoints=0)),
            "'loop.score.epipolar.max_keypoints': expected a positive",
        ),
        (
            ScoreConfig(epipolar=EpipolarConfig(keypoint_threshold=2.0)),
            "'loop.score.epipolar.keypoint_threshold'",
        ),
    ]
    for cfg, message in bad:
        with pytest.raises(ValueError, match=message):
            cfg.check("loop.score")


def test_both_metrics_and_epipolar_alone(recipe, tmp_path, capsys):
    work = tmp_path / "both"
    common = ["--synthetic", "1", "--num-frames", "5", "--seed", "3"]
    argv = [*common, "--workdir", str(work), "--metrics", "reprojection,epipolar", "--matcher", "oracle"]
    assert recipe.main(argv) == 0
    rows = read_jsonl(work / "videos" / "scores.jsonl")
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert EPI_FIELDS <= r.keys() and "score" in r and r["epi_matcher"] == "oracle"
        assert r["epi_pairs"] == 4 and len(r["epi_pair_errors"]) == 4
    out = capsys.readouterr().out
    assert "mean 3DCS" in out and "mean Epi" in out
    lightglue = write_random_lightglue(tmp_path / "lightglue", initializer_range=0.3)
    alone = tmp_path / "alone"
    argv = [*common, "--workdir", str(alone), "--metrics", "epipolar", "--lightglue-weights", str(lightglue)]
    argv += ["--pair-stride", "2", *SMALL]
    assert recipe.main(argv) == 0
    rows = read_jsonl(alone / "videos" / "scores.jsonl")
    assert all(r["status"] == "ok" and EPI_FIELDS <= r.keys() and "score" not in r for r in rows)
    assert all(r["epi_pairs"] == 4 + 3 for r in rows)  # consecutive pairs and stride-2 pairs
    assert all(r["size"] == [518, 518] for r in rows)  # no reconstruction: the authors' 518-px frames
    out = capsys.readouterr().out
    assert "frame pairs with too few matches" in out and "mean Epi n/a (5 videos without a value" in out


def test_short_and_config_flags_set_the_same_keys(recipe):
    short = recipe.parse_args(
        [
            "--metrics",
            "epipolar",
            "--matcher",
            "oracle",
            "--pair-stride",
            "3",
            "--match-size",
            "64",
            "--min-matches",
            "20",
            "--robust",
            "kornia",
        ]
    )
    long = recipe.parse_args(
        [
            "--metrics",
            "epipolar",
            "--epipolar-matcher",
            "oracle",
            "--epipolar-stride",
            "3",
            "--epipolar-size",
            "64",
            "--epipolar-min-matches",
            "20",
            "--epipolar-robust",
            "kornia",
        ]
    )
    assert vars(short) == vars(long)
    cfg = recipe.stage_config(ScoreConfig, "score", short)
    assert cfg.metrics == ["epipolar"] and cfg.size is None  # --match-size is the epipolar section's
    assert cfg.epipolar == EpipolarConfig(
        matcher="oracle", stride=3, size=64, min_matches=20, robust="kornia"
    )


def test_bad_epipolar_input_is_one_line_exit_2(recipe, tmp_path, capsys):
    cases = [
        (
            ["--metrics", "reprojection,epi"],
            "error: config key 'loop.score.metrics': expected a non-empty list",
        ),
        (["--metrics", "epipolar"], "error: epipolar: matcher 'lightglue' needs lightglue_weights"),
        (
            ["--metrics", "epipolar", "--lightglue-weights", str(tmp_path / "none")],
            f"error: LightGlue weights folder {tmp_path / 'none'} has no config.json",
        ),
        (
            ["--metrics", "epipolar", "--matcher", "oracle", "--min-matches", "4"],
            "error: config key 'loop.score.epipolar.min_matches': expected at least 8",
        ),
        (
            [
                "--metrics",
                "reprojection,epipolar",
                "--matcher",
                "oracle",
                "--geometry",
                "vggt",
                "--weights",
                "v.safetensors",
            ],
            "error: score: epipolar matcher 'oracle' matches through each video's stored geometry",
        ),
    ]
    for argv, message in cases:
        assert recipe.main([*argv, "--workdir", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "w").exists()  # nothing was written before the check


def test_score_stage_with_the_epipolar_metric(tmp_path):
    manifest = write_synthetic_set(
        tmp_path / "gen", 1, n_frames=4, size=32, kinds=("warp",), seed=1, progress=False
    )
    write_jsonl_atomic(
        manifest, [{**r, "prompt_id": "s0", "seed": k} for k, r in enumerate(read_jsonl(manifest))]
    )
    cfg = ScoreConfig(
        geometry="oracle",
        num_frames=4,
        device="cpu",
        metrics=["epipolar"],
        epipolar=EpipolarConfig(matcher="oracle"),
    )
    scorer = Scorer.build(cfg)
    assert scorer.model is None and scorer.lpips is None and scorer.epipolar is not None
    new = scorer.score(manifest, tmp_path / "gen" / "scores.jsonl", progress=False)
    assert len(new) == 2 and all(
        r["status"] == "ok" and "score" not in r and r["epi"] is not None for r in new
    )
    summary = summarize_scores(tmp_path / "gen" / "scores.jsonl")
    assert summary.mean_epi == pytest.approx(sum(r["epi"] for r in new) / 2) and summary.epi_missing == 0
    assert "mean Epi" in str(summary) and "3DCS" not in str(summary)
    with pytest.raises(ValueError, match="needs lightglue_weights"):
        Scorer.build(ScoreConfig(geometry="oracle", metrics=["reprojection", "epipolar"]))


def test_epipolar_alone_needs_no_geometry_sidecar(tmp_path):
    """With the learned matcher and no reprojection, a video without a stored geometry is scored anyway."""
    manifest = write_synthetic_set(
        tmp_path / "gen", 1, n_frames=4, size=32, kinds=("warp",), seed=1, progress=False
    )
    for sidecar in (tmp_path / "gen").rglob("*.geometry.safetensors"):
        sidecar.unlink()
    lightglue = write_random_lightglue(tmp_path / "lightglue", initializer_range=0.3)
    settings = EpipolarConfig(lightglue_weights=str(lightglue), size=64, max_keypoints=256)
    cfg = ScoreConfig(num_frames=4, device="cpu", metrics=["epipolar"], epipolar=settings)
    new = Scorer.build(cfg).score(manifest, tmp_path / "scores.jsonl", progress=False)
    assert len(new) == 2 and all(r["status"] == "ok" and r["epi_pairs"] == 3 for r in new), new
    assert all(r["size"] == [518, 518] for r in new)  # the authors' frames: centre crop, 518 px


def test_the_defaults_are_the_authors_settings():
    from videogpa.engine.geometry import epipolar, lightglue

    cfg = EpipolarConfig()
    assert (
        (cfg.size, cfg.max_keypoints, cfg.keypoint_threshold)
        == (
            lightglue.MATCH_SIZE,
            lightglue.MAX_KEYPOINTS,
            lightglue.KEYPOINT_THRESHOLD,
        )
        == (1024, 2048, 0.0005)
    )
    assert cfg.min_matches == epipolar.MIN_MATCHES == 20 and cfg.stride is None and cfg.matcher == "lightglue"
    assert ScoreConfig().num_frames == 10


def test_a_video_without_an_epi_is_counted_apart_never_averaged_in(tmp_path):
    rows = [
        {"video": "a.mp4", "status": "ok", "epi": 0.5, "epi_pairs": 9, "epi_robust": 0.001},
        {"video": "b.mp4", "status": "ok", "epi": 0.7, "epi_pairs": 9, "epi_robust": 0.003},
        {"video": "c.mp4", "status": "ok", "epi": None, "epi_pairs": 9, "epi_robust": None},
        {"video": "d.mp4", "status": "ok", "epi": float("nan"), "epi_pairs": 9, "epi_robust": None},
        {"video": "e.mp4", "status": "error", "error": "unreadable"},
    ]
    write_jsonl_atomic(tmp_path / "scores.jsonl", rows)
    summary = summarize_scores(tmp_path / "scores.jsonl")
    assert summary.ok == 4 and summary.errors == 1 and summary.epi_missing == 2
    assert summary.mean_epi == pytest.approx(0.6) and summary.mean_epi_robust == pytest.approx(0.002)
    assert "mean Epi 0.6 px (2 videos without a value)" in str(summary)
    for r in rows[:2]:
        r["epi"] = None
    write_jsonl_atomic(tmp_path / "scores.jsonl", rows)
    summary = summarize_scores(tmp_path / "scores.jsonl")
    assert summary.mean_epi is None and "mean Epi n/a (4 videos without a value)" in str(summary)
