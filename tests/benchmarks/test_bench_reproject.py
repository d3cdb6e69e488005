"""bench_reproject runs end to end at a tiny size (the Triton rows through the interpreter on a CPU)."""

from tests.benchmarks.scripts import load_script


def test_benchmark_runs_and_reports_every_variant(capsys, monkeypatch):
    bench = load_script("benchmarks/bench_reproject.py")
    saved = []  # each row saved as soon as it is measured
    monkeypatch.setattr(bench, "append_results", lambda name, rows, device: saved.append((name, list(rows))))
    rows = bench.main(["--views", "2", "--height", "16", "--width", "20"])
    assert saved == [("reproject", [row]) for row in rows]
    assert [r["variant"] for r in rows] == [
        "painter (authors)",
        "torch z-buffer",
        "triton render",
        "triton fused error",
    ]
    by_name = {r["variant"]: r for r in rows}
    assert by_name["torch z-buffer"]["wrong_pixel_frac"] == 0 == by_name["triton render"]["wrong_pixel_frac"]
    assert all(r["time_ms"] > 0 and r["floor_ms"] > 0 for r in rows)
    assert "floor:" in capsys.readouterr().out
