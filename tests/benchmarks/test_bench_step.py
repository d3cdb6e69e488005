"""The DPO step benchmark: its FLOP formula matches a FLOP count of the real model, its MFU uses the peak
of the GPU it runs on, and --small runs the baseline and our step side by side anywhere."""

import re

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.benchmarks.scripts import load_script

bench = load_script("benchmarks/bench_step.py")


def test_flop_formula_matches_a_count_of_the_transformer_blocks():
    from diffusers import CogVideoXTransformer3DModel

    config, latent = bench.SMALL["config"], bench.SMALL["latent"]
    model = CogVideoXTransformer3DModel(**config)
    x = torch.randn(2, *latent)
    text = torch.randn(2, config["max_text_seq_length"], config["text_embed_dim"])
    with (
        sdpa_kernel(SDPBackend.MATH),
        FlopCounterMode(display=False) as counter,
    ):  # math SDPA: counted matmuls
        model(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([10, 10]))
    counts = counter.get_flop_counts()
    blocks = sum(
        sum(c.values()) for name, c in counts.items() if re.fullmatch(r".*transformer_blocks\.\d+", name)
    )
    flops, tokens, formula = bench.step_flops(config, latent)
    # a step = 4 forward-equivalents of [w; l]; the blocks' time-embedding projections are left out (< 1%)
    assert flops / 4 == pytest.approx(blocks, rel=0.01)
    assert tokens == config["max_text_seq_length"] + latent[0] * (latent[2] // 2) * (latent[3] // 2)
    assert f"N={tokens}" in formula


def test_full_size_token_count():
    _, tokens, _ = bench.step_flops(bench.FULL["config"], bench.FULL["latent"])
    assert tokens == 17_776  # 49 frames of 480x720 -> 13 x 30 x 45 patches + 226 text tokens


def test_peak_table_by_device_name():
    peak = bench.peak_bf16_tflops
    assert peak("NVIDIA H200") == peak("NVIDIA H100 80GB HBM3") == 989.0
    assert peak("NVIDIA H100 PCIe") == 756.0
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak("NVIDIA GeForce RTX 4090") is None


def test_small_step_runs_baseline_and_ours(capsys, monkeypatch):
    saved = []  # each row saved as soon as it is measured
    monkeypatch.setattr(bench, "append_results", lambda name, rows, device: saved.append((name, list(rows))))
    rows = bench.main(["--small", "--warmup", "0", "--iters", "1"])
    assert saved == [("bench_step", [row]) for row in rows]
    assert [r["variant"].split(":")[0] for r in rows] == ["baseline", "videogpa"]
    for row in rows:
        assert row["step_s"] > 0 and row["tokens"] == 16 + 3 * 8 * 8
        assert row["speedup_vs_baseline"] == pytest.approx(rows[0]["step_s"] / row["step_s"])
    assert "FLOPs per step" in capsys.readouterr().out
