"""The generation benchmark: the 50-step extrapolation from two step counts, the 5B configs it builds, and
--small running the tiny pipeline in 1 and 2 processes side by side."""

import pytest

from tests.benchmarks.scripts import load_script

bench = load_script("benchmarks/bench_generate.py")


def test_the_extrapolation_separates_the_fixed_cost_from_the_steps():
    per_step, fixed, total = bench.extrapolate({4: 9.0, 2: 5.0}, steps=50)
    assert (per_step, fixed, total) == (2.0, 1.0, 101.0)


def test_the_5b_configs_are_the_published_sizes():
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    for name, cls, billions in (("cogvideox-5b", CogVideoXTransformer3DModel, 5.6),
                                ("wan-5b", WanTransformer3DModel, 5.0)):  # fmt: skip
        import torch

        with torch.device("meta"):  # no memory: the parameter count only
            model = cls(**bench.MODELS[name]["transformer"])
        assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.1), name


def test_small_runs_one_and_two_processes(capsys):
    rows = bench.main(["--small", "--no-save", "--prompts", "2", "--steps", "1"])
    assert [r["processes"] for r in rows] == [1, 2] and all(r["videos"] == 2 for r in rows)
    assert all(r["wall_s"] > 0 for r in rows)
    assert rows[1]["speedup_vs_1_process"] == pytest.approx(rows[0]["wall_s"] / rows[1]["wall_s"])
    assert "videos_per_hour" in capsys.readouterr().out


def test_without_a_gpu_the_5b_run_is_refused_with_a_pointer_to_small(monkeypatch, capsys):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench.main(["--no-save"])
    assert "pass --small" in capsys.readouterr().err
