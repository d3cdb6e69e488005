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

    for name, cls, billions in (
        ("cogvideox-5b", CogVideoXTransformer3DModel, 5.6),
        ("wan-5b", WanTransformer3DModel, 5.0),
    ):
        import torch

        with torch.device("meta"):  # no memory: the parameter count only
            model = cls(**bench.MODELS[name]["transformer"])
        assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.1), name


def small_models() -> dict:
    """The benchmark's two families at test sizes (the same classes, configs of a few thousand weights)."""
    from tests.models.model_builders import TEXT_DIM, TEXT_LEN

    cog, wan = bench.MODELS["cogvideox-5b"], bench.MODELS["wan-5b"]
    return {
        "cogvideox-5b": {
            **cog,
            "text": (TEXT_LEN, TEXT_DIM),
            "call": dict(num_frames=9, height=64, width=64, guidance_scale=6.0),
            "transformer": dict(
                num_attention_heads=2,
                attention_head_dim=16,
                in_channels=4,
                out_channels=4,
                time_embed_dim=32,
                text_embed_dim=TEXT_DIM,
                num_layers=2,
                sample_width=8,
                sample_height=8,
                sample_frames=9,
                max_text_seq_length=TEXT_LEN,
            ),
            "vae": dict(
                latent_channels=4,
                block_out_channels=(8,) * 4,
                down_block_types=("CogVideoXDownBlock3D",) * 4,
                up_block_types=("CogVideoXUpBlock3D",) * 4,
                layers_per_block=1,
                norm_num_groups=2,
                sample_height=64,
                sample_width=64,
            ),
        },
        "wan-5b": {
            **wan,
            "text": (16, 32),
            "call": dict(num_frames=9, height=32, width=32, guidance_scale=5.0),
            "transformer": dict(
                patch_size=(1, 2, 2),
                num_attention_heads=2,
                attention_head_dim=12,
                in_channels=4,
                out_channels=4,
                text_dim=32,
                ffn_dim=32,
                num_layers=2,
                rope_max_seq_len=32,
            ),
            "vae": dict(
                base_dim=8,
                z_dim=4,
                dim_mult=[1, 1, 1, 1],
                num_res_blocks=1,
                latents_mean=[0.0] * 4,
                latents_std=[1.0] * 4,
            ),
        },
    }


def test_the_option_rows_time_plain_and_each_option_on_both_families(monkeypatch):
    import torch

    monkeypatch.setattr(bench, "MODELS", small_models())
    monkeypatch.setattr(bench, "OPTIONS", {"compile (eager)": {"compile": "eager"}})
    rows = bench.option_rows(["cogvideox-5b", "wan-5b"], [1, 2], torch.device("cpu"))
    assert [(r["model"], r["variant"]) for r in rows] == [
        (m, v) for m in ("cogvideox-5b", "wan-5b") for v in ("plain pipe(...)", "compile (eager)")
    ]
    for row in rows:
        assert row["video_s_50"] == pytest.approx(row["fixed_s"] + 50 * row["per_step_s"])
        assert row["videos_per_gpu_hour"] == pytest.approx(3600 / row["video_s_50"])
    assert [r["speedup_vs_plain"] for r in rows if r["options"] == {}] == [1.0, 1.0]
    assert rows[1]["options"] == {"compile": "eager"}


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
