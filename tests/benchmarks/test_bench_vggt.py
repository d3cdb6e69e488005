"""benchmarks/bench_vggt.py runs end to end at the tiny config and reports sensible rows."""

from tests.benchmarks.scripts import load_script


def test_small_benchmark_scores_videos(monkeypatch):
    bench = load_script("benchmarks/bench_vggt.py")
    saved = []  # each row saved as soon as it is measured
    monkeypatch.setattr(bench, "append_results", lambda name, rows, device: saved.append((name, list(rows))))
    rows = bench.main(["--small", "--batches", "1,2", "--frames", "2", "--iters", "1", "--warmup", "1"])
    assert saved == [("bench_vggt", [row]) for row in rows]
    names = ("vggt", "vggt+score", "vggt+score+images", "vggt+score+images [torch render]")
    assert [(r["bench"], r["videos_per_call"]) for r in rows] == [(n, b) for b in (1, 2) for n in names]
    for row in rows:
        assert row["videos_per_s"] > 0 and row["config"] == "tiny" and row["frames"] == 2
        assert abs(row["ms_per_video"] * row["videos_per_s"] - 1e3) < 1e-6 * 1e3
