"""The loss benchmark runs end to end (CPU: small size through the interpreter) and reports sane rows."""

from tests.benchmarks.scripts import load_script


def test_bench_dpo_loss_runs_small(capsys):
    rows = load_script("benchmarks/bench_dpo_loss.py").main(["--size", "small", "--no-compile", "--no-save"])
    assert [r["variant"] for r in rows] == ["eager", "triton"]
    for row in rows:
        assert row["call_us"] > 0 and row["floor_bytes"] == 6 * 8 * 3 * 4 * 8 * 12 * 2
        assert row["call_us_p10"] <= row["call_us"] <= row["call_us_p90"]
    assert "x_floor" in capsys.readouterr().out
