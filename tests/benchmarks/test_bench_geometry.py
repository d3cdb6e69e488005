"""benchmarks/bench_geometry.py runs end to end at the tiny configs and reports sensible rows for both
models."""

from tests.benchmarks.scripts import load_script


def test_small_benchmark_scores_videos_with_both_models():
    bench = load_script("benchmarks/bench_geometry.py")
    rows = bench.main(["--small", "--no-save", "--batches", "1", "--frames", "2", "--iters", "1"])
    names = [m + suffix for m in ("vggt", "da3") for suffix in ("", "+score", "+score+images")]
    assert [r["bench"] for r in rows] == names
    for row in rows:
        assert row["videos_per_s"] > 0 and row["config"] == "tiny" and row["frames"] == 2
        assert row["size"] == 56 and row["videos_per_call"] == 1
        assert abs(row["ms_per_video"] * row["videos_per_s"] - 1e3) < 1e-6 * 1e3
