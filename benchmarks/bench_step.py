"""One Diffusion-DPO training step on a CogVideoX-2B-config transformer: time, peak memory, MFU.

Full size (GPU): random weights in bf16, 49 frames at 480x720 -> latents [1, 13, 16, 60, 90], 17,550 video
+ 226 text tokens = 17,776, one preference pair, LoRA r64 on the attention projections, full activation
checkpointing, adapters-off reference, AdamW step. Two rows, measured in the same run on the same model:
- baseline: plain diffusers (its own `enable_gradient_checkpointing()`, `disable_adapters()` for the
  reference) and the loss in eager PyTorch;
- videogpa: the engine's step (engine.dpo_step: torch's non-reentrant checkpoint, the adapters-off
  reference, the fused Triton loss).
MFU = model FLOPs (the formula printed) / step time / the dense bf16 peak of the GPU it runs on (a table by
device name). `--small` runs a tiny config in seconds (also on a CPU) to check the plumbing; its MFU is
not meaningful.

    python benchmarks/bench_step.py            # needs a GPU
    python benchmarks/bench_step.py --small    # anywhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR,
    append_results,
    peak_bf16_tflops,
    print_table,
    time_call,
    time_device,
)

from videogpa.engine.models import get_adapter  # noqa: E402
from videogpa.engine.models.lora import apply_lora, enable_gradient_checkpointing  # noqa: E402
from videogpa.engine.train.dpo_step import LossSettings, build_inputs, dpo_forward  # noqa: E402
from videogpa.engine.train.reference import AdaptersOff  # noqa: E402
from videogpa.engine.types import Conditioning  # noqa: E402
from videogpa.kernels.dpo_loss import diffusion_dpo_loss  # noqa: E402

# CogVideoX-2B's transformer config (THUDM/CogVideoX-2b, transformer/config.json).
COGVIDEOX_2B = dict(
    num_attention_heads=30,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=30,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    max_text_seq_length=226,
)
FULL = dict(config=COGVIDEOX_2B, latent=(13, 16, 60, 90), lora_rank=64)
SMALL = dict(
    config=dict(
        COGVIDEOX_2B,
        num_attention_heads=2,
        attention_head_dim=32,
        text_embed_dim=64,
        num_layers=2,
        time_embed_dim=64,
        sample_width=16,
        sample_height=16,
        sample_frames=9,
        max_text_seq_length=16,
    ),
    latent=(3, 16, 16, 16),
    lora_rank=8,
)


def step_flops(config: dict, latent: tuple[int, ...]) -> tuple[float, int, str]:
    """Model FLOPs of one DPO step on one pair, the token count, and the formula as text.

    Per layer and sample, forward: 24·N·d² (q, k, v, out: 4·2Nd²; 4d-wide feed-forward: 16Nd²) +
    4·N²·d (QKᵀ and AV). A step = reference forward + policy forward + backward (2× forward) on [w; l] =
    4 forwards of 2 samples; recomputation under checkpointing is not counted (the usual MFU convention).
    """
    frames, _, h, w = latent
    p = config["patch_size"]
    n = config["max_text_seq_length"] + frames * (h // p) * (w // p)
    d = config["num_attention_heads"] * config["attention_head_dim"]
    layers = config["num_layers"]
    per_forward = 2 * layers * (24 * n * d**2 + 4 * n**2 * d)
    formula = f"4 passes x 2 samples x {layers} layers x (24*N*d^2 + 4*N^2*d), N={n}, d={d}"
    return 4 * per_forward, n, formula


def baseline_loss(adapter, model, inputs, loss: LossSettings) -> torch.Tensor:
    """The step as plain diffusers + eager PyTorch writes it: reference with the adapters disabled, policy
    forward on [w; l], the Diffusion-DPO loss in eager ops."""
    with torch.no_grad():
        model.disable_adapters()
        ref_pred = adapter.predict(model, inputs.noisy, inputs.timesteps, inputs.cond)
        model.enable_adapters()
    policy_pred = adapter.predict(model, inputs.noisy, inputs.timesteps, inputs.cond)
    return diffusion_dpo_loss(policy_pred, ref_pred, inputs.target, loss.beta, backend="torch").loss


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="tiny config, runs on a CPU in seconds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument(
        "--device-iters",
        type=int,
        default=None,
        help="profiled steps for the device time (default: --iters; 0: no device time)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.small:
        parser.error("the full-size step needs a GPU; pass --small to run the tiny config on a CPU")
    size = SMALL if args.small else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)

    from diffusers import CogVideoXTransformer3DModel

    adapter = get_adapter("cogvideox-t2v")
    with torch.device(device):  # initialised where it runs: a 2B model's CPU init would take minutes
        model = CogVideoXTransformer3DModel(**size["config"]).to(dtype)
    apply_lora(model, size["lora_rank"], 2.0 * size["lora_rank"], list(adapter.default_lora_targets))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-6)
    reference = AdaptersOff(adapter, model)
    loss = LossSettings(beta=1.0)

    cfg = size["config"]
    w, lo = torch.randn(2, 1, *size["latent"]).unbind(0)
    cond = Conditioning(torch.randn(1, cfg["max_text_seq_length"], cfg["text_embed_dim"]))
    inputs = build_inputs(adapter, w, lo, cond, torch.tensor([0]), torch.tensor([1]), 0, device, dtype)

    def step(loss_fn) -> None:
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants = {  # name -> (checkpointing set-up, loss)
        "baseline: diffusers + eager loss": (
            lambda: model.enable_gradient_checkpointing(),
            lambda: baseline_loss(adapter, model, inputs, loss),
        ),
        "videogpa: engine step + fused loss": (
            lambda: enable_gradient_checkpointing(model),
            lambda: dpo_forward(adapter, model, reference, inputs, loss).loss,
        ),
    }
    flops, tokens, formula = step_flops(cfg, size["latent"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = None if name is None else peak_bf16_tflops(name)
    rows = []
    for label, (setup, loss_fn) in variants.items():
        setup()
        run = lambda loss_fn=loss_fn: step(loss_fn)
        call = time_call(run, device, warmup=args.warmup, iters=args.iters)
        device_iters = args.iters if args.device_iters is None else args.device_iters
        dev = None  # AdamW step: not captured, the profiler's kernel sum instead
        if device_iters > 0:
            dev = time_device(run, device, iters=device_iters, capturable=False)
        peak_gb = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            run()
            torch.cuda.synchronize(device)
            peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
        tflops = flops / call.median / 1e12
        row = {
            "bench": "dpo_step",
            "variant": label,
            "size": "small" if args.small else "cogvideox-2b",
            "tokens": tokens,
            "lora_rank": size["lora_rank"],
            "dtype": str(dtype).removeprefix("torch."),
            "step_s": call.median,
            **call.fields("call"),
            **(dev.fields("device") if dev else {}),
            "peak_gb": peak_gb,
            "step_tflop": flops / 1e12,
            "flop_formula": formula,
            "tflops": tflops,
            "peak_tflops": peak,
            "mfu": None if peak is None else tflops / peak,
        }
        row["speedup_vs_baseline"] = (rows[0] if rows else row)["step_s"] / row["step_s"]
        rows.append(row)
        if not args.no_save:  # as soon as measured: a run stopped by a time limit keeps what it has
            append_results("bench_step", [row], device)
    print(f"FLOPs per step = {formula} = {flops / 1e12:.3f} TFLOP")
    if device.type == "cuda":
        print(
            f"MFU against {name}'s dense bf16 peak: {peak if peak else 'unknown (not in the table)'} TFLOP/s"
        )
    print_table(
        rows, ["variant", "tokens", "dtype", "step_s", "peak_gb", "tflops", "mfu", "speedup_vs_baseline"]
    )
    if not args.no_save:
        print(f"appended {len(rows)} rows, one at a time, to {RESULTS_DIR / 'bench_step.jsonl'}")
    return rows


if __name__ == "__main__":
    main()
