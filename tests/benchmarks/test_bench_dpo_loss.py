"""The loss benchmark runs end to end (CPU: small size through the interpreter) and reports sane rows."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dpo_loss.py"


def test_bench_dpo_loss_runs_small(capsys):
    spec = importlib.util.spec_from_file_location("bench_dpo_loss", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--size", "small", "--no-compile", "--no-save"])
    assert [r["variant"] for r in rows] == ["eager", "triton"]
    for row in rows:
        assert row["time_us"] > 0 and row["floor_bytes"] == 6 * 8 * 3 * 4 * 8 * 12 * 2
    assert "x_floor" in capsys.readouterr().out
