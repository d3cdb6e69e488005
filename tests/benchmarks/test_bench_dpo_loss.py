"""The loss benchmark runs end to end (CPU: small size through the interpreter) and reports sane rows."""

from tests.benchmarks.scripts import load_script


def test_bench_dpo_loss_runs_small(capsys):
    rows = load_script("benchmarks/bench_dpo_loss.py").main(["--size", "small", "--no-compile", "--no-save"])
    assert [r["variant"] for r in rows] == ["eager", "triton"]
    for row in rows:
        assert row["call_us"] > 0 and row["floor_bytes"] == 6 * 8 * 3 * 4 * 8 * 12 * 2
        assert row["call_us_p10"] <= row["call_us"] <= row["call_us_p90"]
    assert "x_floor" in capsys.readouterr().out


def test_rows_are_appended_one_at_a_time_compile_rows_last(monkeypatch):
    """Each row is saved as soon as it is measured (a run stopped by a time limit keeps them), every shape's
    eager and triton rows before any torch.compile row."""
    bench = load_script("benchmarks/bench_dpo_loss.py")
    saved = []
    monkeypatch.setattr(bench, "append_results", lambda name, rows, device: saved.append((name, list(rows))))
    measured = []
    real = bench.bench_variant

    def spy(name, variant, *args):
        measured.append(variant)
        assert len(saved) == len(measured) - 1  # every earlier row already saved
        return real(name, variant, *args) if variant != "compile" else {**real(name, "eager", *args)}

    monkeypatch.setattr(bench, "bench_variant", spy)
    rows = bench.main(["--size", "small", "--variants", "compile,triton,eager"])
    assert measured == ["triton", "eager", "compile"]
    assert [r for _, [r] in saved] == rows and {n for n, _ in saved} == {"dpo_loss"}
