"""The pairs stage: score rows (joined with the generation manifest) → pair index, report, histograms."""

import json

import pytest
import torch

from tests.stages.stage_helpers import build_pairs, load_recipe, write_rows
from videogpa.engine.io.records import append_jsonl, read_jsonl
from videogpa.engine.scenes.video_set import write_synthetic_set
from videogpa.engine.stages.pairs import GAPS_PNG, PAIRS_FILE, REPORT_FILE, SCORES_PNG


def _generation(tmp_path, scores_by_video):
    """A manifest (prompt/seed/latents per video, paths relative) and score rows (video path as score.py
    writes it: the manifest folder joined with the manifest's relative path)."""
    gen = tmp_path / "gen"
    gen.mkdir()
    manifest, scores = [], []
    for video, (prompt_id, score, motion) in scores_by_video.items():
        manifest.append(
            {
                "video": f"videos/{video}.mp4",
                "latents": f"latents/{video}.safetensors",
                "prompt_id": prompt_id,
                "prompt": f"text of {prompt_id}",
                "seed": len(manifest),
            }
        )
        row = {
            "video": str(gen / "videos" / f"{video}.mp4"),
            "status": "ok",
            "score": score,
            "motion": motion,
        }
        if score is None:
            row = {"video": row["video"], "status": "error", "error": "VideoReadError: bad"}
        scores.append(row)
    return write_rows(gen / "manifest.jsonl", manifest), write_rows(gen / "scores.jsonl", scores)


def test_best_vs_worst_with_drop_reasons_report_and_plots(tmp_path):
    manifest, scores = _generation(
        tmp_path,
        {
            "a0": ("A", 0.30, 0.1),
            "a1": ("A", 0.10, 0.1),
            "a2": ("A", 0.20, 0.1),  # pair a1 > a0
            "b0": ("B", 0.30, 0.1),
            "b1": ("B", 0.28, 0.1),  # gap 0.02 < 0.05
            "c0": ("C", 0.50, 0.0),
            "c1": ("C", 0.10, 0.1),  # c0 static -> one candidate left
            "d0": ("D", None, None),
            "d1": ("D", 0.9, 0.2),
            "d2": ("D", 0.1, 0.2),  # d0 failed
        },
    )
    out = tmp_path / "pairs"
    result = build_pairs(scores, out, manifest=manifest)
    rows = read_jsonl(out / PAIRS_FILE)
    assert [(r["prompt_id"], r["winner"]["video"][-6:], r["loser"]["video"][-6:]) for r in rows] == [
        ("A", "a1.mp4", "a0.mp4"),
        ("D", "d2.mp4", "d1.mp4"),
    ]
    assert rows[0]["prompt"] == "text of A" and rows[0]["gap"] == pytest.approx(0.2)
    assert rows[0]["winner"]["extra"]["latents"] == str((tmp_path / "gen/latents/a1.safetensors").resolve())
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["pairs"] == 2 and report["prompts"] == 4 and report["candidates"] == 10
    assert report["dropped"] == {"failed": 1, "static": 1, "too_few_candidates": 1, "small_gap": 1}
    assert sorted(report["gaps"]) == pytest.approx(sorted([0.2, 0.02, 0.8]))
    for png in (SCORES_PNG, GAPS_PNG):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.changed
    assert not build_pairs(scores, out, manifest=manifest).changed  # rerun: identical, up to date


def test_threshold_is_a_knob(tmp_path):
    manifest, scores = _generation(tmp_path, {"b0": ("B", 0.30, 0.1), "b1": ("B", 0.28, 0.1)})
    assert len(build_pairs(scores, tmp_path / "strict", manifest=manifest).pairs) == 0
    assert len(build_pairs(scores, tmp_path / "loose", manifest=manifest, min_gap=0.01).pairs) == 1


def test_changed_scores_never_silently_overwrite_the_index(tmp_path):
    manifest, scores = _generation(tmp_path, {"a0": ("A", 0.3, 0.1), "a1": ("A", 0.1, 0.1)})
    out = tmp_path / "pairs"
    build_pairs(scores, out, manifest=manifest)
    before = (out / PAIRS_FILE).read_text()
    rows = read_jsonl(scores)
    rows[0]["score"] = 0.05  # now a0 wins
    write_rows(scores, rows)
    with pytest.raises(ValueError, match="differs from the pairs the current scores give"):
        build_pairs(scores, out, manifest=manifest)
    assert (out / PAIRS_FILE).read_text() == before
    build_pairs(scores, out, manifest=manifest, overwrite=True)
    assert read_jsonl(out / PAIRS_FILE)[0]["winner"]["video"].endswith("a0.mp4")


def test_retried_video_counts_with_its_ok_row_and_bad_rows_are_named(tmp_path):
    manifest, scores = _generation(tmp_path, {"a0": ("A", None, None), "a1": ("A", 0.1, 0.1)})
    append_jsonl(
        scores, {"video": str(tmp_path / "gen/videos/a0.mp4"), "status": "ok", "score": 0.4, "motion": 1}
    )
    assert len(build_pairs(scores, tmp_path / "p", manifest=manifest).pairs) == 1
    stranger = tmp_path / "gen/scores2.jsonl"
    write_rows(
        stranger, [{"video": str(tmp_path / "elsewhere.mp4"), "status": "ok", "score": 0.1, "motion": 1}]
    )
    with pytest.raises(ValueError, match=r"scores2.jsonl:1: video .*elsewhere.mp4 is not in the generation"):
        build_pairs(stranger, tmp_path / "q", manifest=manifest)
    write_rows(stranger, [{"video": "x.mp4", "score": 0.1}])
    with pytest.raises(ValueError, match=r"scores2.jsonl:1: a score row needs 'video' and 'status'"):
        build_pairs(stranger, tmp_path / "q", manifest=manifest)
    write_rows(stranger, [{"video": "x.mp4", "status": "ok", "score": 0.1, "motion": 1}])
    with pytest.raises(ValueError, match="has no 'prompt_id' or 'prompt'"):
        build_pairs(stranger, tmp_path / "q")


def test_truncated_tail_is_dropped_and_the_next_append_repairs_it(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')  # a writer killed mid-line
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, {"a": 3})
    assert read_jsonl(path, allow_truncated_tail=False) == [{"a": 1}, {"a": 3}]
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: not a JSON object"):
        read_jsonl(path)


def test_recipe_on_oracle_scores_of_synthetic_scenes_prefers_clean_clips(tmp_path, capsys):
    """Score a synthetic set (clean clip + corruptions per scene = one prompt) with the real score recipe and
    the oracle geometry; the pair of every scene has the clean clip as its winner."""
    torch.set_num_threads(1)
    manifest = write_synthetic_set(tmp_path / "set", 2, n_frames=6, size=48, seed=3, progress=False)
    rows = read_jsonl(manifest)
    for r in rows:
        r["prompt_id"] = f"scene{r['group']}"
    write_rows(manifest, rows)
    scores = tmp_path / "set" / "scores.jsonl"
    assert (
        load_recipe("score").main(["--videos", str(manifest), "--num-frames", "6", "--out", str(scores)]) == 0
    )
    out = tmp_path / "pairs"
    argv = ["--scores", str(scores), "--manifest", str(manifest), "--out-dir", str(out), "--min-gap", "0"]
    assert load_recipe("pairs").main(argv) == 0
    assert "2 pairs from 2 prompts" in capsys.readouterr().out
    pairs = read_jsonl(out / PAIRS_FILE)
    assert [p["winner"]["extra"]["corruption"] for p in pairs] == [None, None]
    assert all(p["loser"]["extra"]["corruption"] is not None for p in pairs)


def test_an_empty_index_is_replaced_without_overwrite(tmp_path):
    manifest, scores = _generation(tmp_path, {"a0": ("A", 0.3, 0.1), "a1": ("A", 0.1, 0.1)})
    assert build_pairs(scores, tmp_path / "p", manifest=manifest, min_gap=1.0).pairs == []
    assert read_jsonl(tmp_path / "p" / PAIRS_FILE) == []
    assert len(build_pairs(scores, tmp_path / "p", manifest=manifest).pairs) == 1
    with pytest.raises(ValueError, match="differs"):  # a non-empty one is kept
        build_pairs(scores, tmp_path / "p", manifest=manifest, min_gap=1.0)


def test_under_a_launcher_rank_zero_alone_selects_pairs(tmp_path):
    from tests.stages.stage_helpers import TORCHRUN, finish, start

    manifest, scores = _generation(tmp_path, {"a0": ("A", 0.30, 0.1), "a1": ("A", 0.10, 0.1)})
    out = tmp_path / "pairs"
    (log,) = finish(
        start("pairs", "--scores", scores, "--manifest", manifest, "--out-dir", out, launcher=TORCHRUN)
    )
    assert "rank 1 of 2 leaves pair selection to rank 0" in log and log.count("pairs: 1 pairs") == 1, log[
        -2000:
    ]
    assert len(read_jsonl(out / PAIRS_FILE)) == 1
