"""The evaluation table in the paper's column order, with Epi, differences, CIs and per-metric win rates."""

import pytest
import torch

from videogpa.engine.stages.evaluate import compare_scores, format_table

PAPER_ORDER = ["PSNR", "SSIM", "LPIPS", "MVCS", "3DCS", "Epi"]


def _rows(shift: float, n_prompts: int = 12):
    rows = []
    for p in range(n_prompts):
        for seed in (0, 1):
            base = 0.1 + 0.01 * ((p * 7 + seed * 3) % 5)
            rows.append(
                {
                    "video": f"{p}_{seed}.mp4",
                    "status": "ok",
                    "prompt_id": f"p{p}",
                    "seed": seed,
                    "score": base + shift,
                    "mse": base + shift,
                    "lpips": 0.2,
                    "psnr": 20.0 - 10 * shift,
                    "ssim": 0.5,
                    "mvcs": 0.6,
                    "motion": 0.1,
                    "epi": 0.01 + shift / 10,
                }
            )
    return rows


def test_paper_columns_in_order_with_intervals():
    result = compare_scores(_rows(0.0), _rows(-0.05))
    labels = [m["label"] for m in result["metrics"].values()]
    assert labels[:6] == PAPER_ORDER
    epi, lpips = result["metrics"]["epi"], result["metrics"]["lpips"]
    assert epi["delta"] == pytest.approx(-0.005) and epi["ci"] == pytest.approx([-0.005, -0.005])
    assert epi["prompt_win_rate"] == 1.0 and epi["improved"] and epi["prompts_compared"] == 12
    assert lpips["delta"] == 0.0 and lpips["prompt_win_rate"] == 0.5  # ties count half
    table = format_table(result)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| metric")]
    assert [r.split(" | ")[0][2:] for r in rows][:6] == PAPER_ORDER
    epi_row = next(r for r in rows if r.startswith("| Epi |"))
    assert "-0.005 [-0.005, -0.005]* | 100% of 12 |" in epi_row
    assert "+0 [+0, +0] | 50% of 12 |" in next(r for r in rows if r.startswith("| LPIPS |"))
    assert "bootstrap CI over prompts" in table


def test_epi_missing_from_the_rows_is_n_a():
    base, tuned = _rows(0.0, 3), _rows(0.01, 3)
    for r in base + tuned:
        del r["epi"]
    result = compare_scores(base, tuned)
    assert result["metrics"]["epi"]["base"] is None and result["metrics"]["epi"]["delta"] is None
    assert "| Epi | n/a | n/a | lower | n/a | n/a |" in format_table(result)
    assert "NOTE: Epi was computed" not in format_table(result)
    for r in base + tuned:  # computed, but no pair had enough matches
        r.update(epi=None, epi_pairs=4, epi_pairs_scored=0)
    assert "NOTE: Epi was computed, but no video had a frame pair with enough matches" in format_table(
        compare_scores(base, tuned)
    )


def test_a_video_without_an_epi_is_counted_apart_never_averaged_in():
    """A video whose Epi has no value (None, or NaN from elsewhere) is left out of the means, differences and
    win rates (never 0 or -1) and counted in a note; a column without any value reads n/a."""
    base, tuned = _rows(0.0, 3), _rows(-0.05, 3)
    base[0]["epi"] = None  # p0, seed 0: no frame pair with 20 matches
    tuned[3]["epi"] = float("nan")  # p1, seed 1
    result = compare_scores(base, tuned)
    epi = result["metrics"]["epi"]
    assert epi["base"] == pytest.approx(sum(r["epi"] for r in base[1:]) / 5)
    assert epi["lora"] == pytest.approx(sum(r["epi"] for r in tuned if r is not tuned[3]) / 5)
    assert epi["without_value"] == {"base": 1, "lora": 1} and epi["prompts_compared"] == 3
    assert epi["delta"] == pytest.approx(-0.005) and result["metrics"]["score"]["without_value"] == {
        "base": 0,
        "lora": 0,
    }
    table = format_table(result)
    assert "NOTE: Epi has no value for 1 of 6 base videos and 1 of 6 LoRA videos" in table
    assert "never counted as 0" in table and "NOTE: MVCS" not in table
    for r in base:
        r["epi"] = None
    result = compare_scores(base, tuned)
    assert result["metrics"]["epi"]["base"] is None and result["metrics"]["epi"]["delta"] is None
    assert "| Epi | n/a |" in format_table(result)
    assert "NOTE: Epi has no value for 6 of 6 base videos and 1 of 6 LoRA videos" in format_table(result)


def synthetic_rows(n_scenes: int = 12):
    """Score rows of clean synthetic clips and their warped versions (same prompt = scene, same seed): every
    column computed for real (oracle reprojection; Epi from the scenes' true surface matches)."""
    import random

    from videogpa.engine.geometry.epipolar import score_matches
    from videogpa.engine.geometry.matching import frame_pairs
    from videogpa.engine.geometry.scoring import score_reconstruction
    from videogpa.engine.scenes.matches import true_matches
    from videogpa.engine.scenes.procedural import corrupt, make_scene, render_clip
    from videogpa.engine.scenes.video_set import clip_geometry

    rng, clean, warped = random.Random(0), [], []
    with torch.random.fork_rng(devices=[]):
        for i in range(n_scenes):
            clip = render_clip(make_scene(300 + i), ("dolly", "orbit", "pan")[i % 3], 8, 48, 48)
            bad = corrupt(clip, "warp", rng.uniform(0.3, 1.0), seed=i)
            for rows, c in ((clean, clip), (warped, bad)):
                scores = score_reconstruction(c.frames, clip_geometry(c)).as_dict()
                scores.update(score_matches(true_matches(c, frame_pairs(8)), 48, 48).as_dict())
                rows.append(
                    {"video": f"{i}.mp4", "status": "ok", "prompt_id": f"scene{i}", "seed": 0, **scores}
                )
    return warped, clean


def test_a_real_improvement_is_flagged_in_3dcs_and_epi():
    """'base' = warped clips, 'LoRA' = their clean originals: the table must call both 3D-consistency columns
    better with intervals that exclude 0, and the clean side must win most prompts."""
    torch.set_num_threads(1)  # small tensors: faster on the shared CPU
    result = compare_scores(*synthetic_rows())
    for metric in ("score", "epi", "epi_robust"):
        m = result["metrics"][metric]
        assert m["improved"] and m["ci"][1] < 0 and m["prompt_win_rate"] >= 0.9, (metric, m)
    assert result["metrics"]["psnr"]["improved"] and result["metrics"]["psnr"]["ci"][0] > 0
