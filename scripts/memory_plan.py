"""Per-GPU memory of one Diffusion-DPO step on paper: CogVideoX-5B, Wan 2.2 TI2V-5B and Wan 14B at their
native resolutions, on 8 GPUs of 80 GB and of 141 GB, for sequence parallelism S = 1, 2, 4, 8, LoRA and
full fine-tuning; and the smallest S that fits.

    python scripts/memory_plan.py            # prints the Markdown table (the README's)

Parameters and LoRA sizes are counted exactly from the real diffusers classes built on the meta device with
each published transformer config (no weights). The rest is a model, with these assumptions:
- bf16 weights; ZeRO-3 partitions parameters, gradients and optimizer states over all 8 ranks (the
  sequence-parallel ranks are data-parallel ranks for ZeRO, as in DeepSpeed-Ulysses); the working copy of the
  block being computed (and the next, prefetched) is gathered whole.
- Trainable state per trainable parameter: bf16 gradient (2 B) + fp32 master and AdamW moments (12 B).
  LoRA r64 on to_q/to_k/to_v/to_out.0 of every attention; full fine-tuning trains every parameter and keeps
  the `separate` reference (a frozen bf16 ZeRO-3 copy: 2 B/param / 8); LoRA's reference is adapters-off
  (free).
- One preference pair per rank group: winner and loser in one forward (2 samples). Tokens per sample are the
  latent grid over the patch (text tokens are replicated on every rank; image-to-video adds no tokens).
  Each rank holds 1/S of a sample's video tokens; Ulysses all-to-all gives it every token of 1/S of the
  heads, the same bytes.
- Full activation checkpointing: each block's input is kept (2 samples × tokens/S × d × 2 B per block); one
  block is recomputed at a time with ACT_FACTOR × 2 × tokens/S × d bytes of live intermediates (q, k, v,
  attention output, the MLP's hidden state and its input, norms, residuals; a fused attention kernel keeps
  no tokens × tokens matrix).
- Wan 2.2 A14B: its two 14B experts are one trainable module (engine.models.wan_experts): ZeRO-3 partitions
  both, LoRA trains both (full fine-tuning: both, and both in the reference); each sample runs one expert,
  so activations are one expert's.
- Fixed overhead: CUDA context, NCCL buffers and the allocator's fragmentation: OVERHEAD_GB + 10%.
Calibration: for the one step measured on a GPU (DESIGN's anchor: CogVideoX-2B config, 17,776 tokens, one
pair, LoRA r64, full checkpointing, one H100: 11.1 GB peak allocated) the model's allocated memory (the
terms before the overhead) is within 20% (tested; it gives 11.3 GB).
"""

from __future__ import annotations

import argparse
import math

import torch

ACT_FACTOR = 24  # bf16 intermediates of one block's recompute, in units of tokens × d × 2 B (see above)
OVERHEAD_GB = 4.0
GPUS = 8
SEQUENCE_PARALLEL = (1, 2, 4, 8)
MEMORY_GB = (80, 141)
LORA_RANK = 64
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

# The published transformer configs (transformer/config.json of each checkpoint) and native sizes.
MODELS = {
    "CogVideoX-5B": dict(
        cls="CogVideoXTransformer3DModel",
        config=dict(
            num_attention_heads=48,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            time_embed_dim=512,
            text_embed_dim=4096,
            num_layers=42,
            sample_width=90,
            sample_height=60,
            sample_frames=49,
            patch_size=2,
            max_text_seq_length=226,
            use_rotary_positional_embeddings=True,
        ),
        video="49 × 480×720",
        latent_grid=(13, 60, 90),
        patch=(1, 2, 2),
        text_tokens=226,
    ),
    "CogVideoX-2B": dict(  # the calibration point, not in the table
        cls="CogVideoXTransformer3DModel",
        config=dict(
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
        ),
        video="49 × 480×720",
        latent_grid=(13, 60, 90),
        patch=(1, 2, 2),
        text_tokens=226,
    ),
    "Wan 2.2 TI2V-5B": dict(
        cls="WanTransformer3DModel",
        config=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=24,
            attention_head_dim=128,
            in_channels=48,
            out_channels=48,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=14336,
            num_layers=30,
        ),
        video="121 × 704×1280",
        latent_grid=(31, 44, 80),
        patch=(1, 2, 2),
        text_tokens=512,
    ),
    "Wan 14B (2.1 T2V / one A14B expert)": dict(
        cls="WanTransformer3DModel",
        config=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=40,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=13824,
            num_layers=40,
        ),
        video="81 × 720×1280",
        latent_grid=(21, 90, 160),
        patch=(1, 2, 2),
        text_tokens=512,
    ),
    "Wan 2.2 A14B (both experts)": dict(
        cls="WanTransformer3DModel",
        experts=2,
        config=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=40,
            attention_head_dim=128,
            in_channels=16,
            out_channels=16,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=13824,
            num_layers=40,
        ),
        video="81 × 720×1280",
        latent_grid=(21, 90, 160),
        patch=(1, 2, 2),
        text_tokens=512,
    ),
}


def count(name: str) -> dict:
    """Exact parameter counts of a model built on the meta device: total, LoRA r64 (both over every expert),
    the largest block, d, L."""
    import diffusers

    spec = MODELS[name]
    with torch.device("meta"):
        model = getattr(diffusers, spec["cls"])(**spec["config"])
    experts = spec.get("experts", 1)
    total = experts * sum(p.numel() for p in model.parameters())
    lora = experts * sum(
        LORA_RANK * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and any(n.endswith(t) for t in LORA_TARGETS)
    )
    blocks = model.transformer_blocks if hasattr(model, "transformer_blocks") else model.blocks
    block = max(sum(p.numel() for p in b.parameters()) for b in blocks)
    heads = spec["config"]["num_attention_heads"]
    d = heads * spec["config"]["attention_head_dim"]
    return dict(total=total, lora=lora, block=block, d=d, layers=len(blocks), heads=heads)


def tokens(name: str) -> int:
    spec = MODELS[name]
    grid = [math.ceil(g / p) for g, p in zip(spec["latent_grid"], spec["patch"])]
    return math.prod(grid)


def per_gpu_gb(sizes: dict, n_tokens: int, text_tokens: int, s: int, lora: bool, gpus: int = GPUS) -> dict:
    """The per-GPU memory terms (GB) of one DPO step on `gpus` GPUs with sequence parallelism `s`."""
    gb = 1e9
    p, d, layers = sizes["total"], sizes["d"], sizes["layers"]
    trainable = sizes["lora"] if lora else p
    gathered = 2 * 2 * sizes["block"] if gpus > 1 else 0  # two blocks gathered whole under ZeRO-3
    weights = 2 * p / gpus + gathered
    reference = 0 if lora else 2 * p / gpus
    state = (2 + 12) * trainable / gpus + (2 * 2 * sizes["lora"] if lora else 0)  # + LoRA weights in bf16
    local = n_tokens / s + text_tokens
    activations = 2 * local * d * 2 * layers + ACT_FACTOR * 2 * local * d * 2
    terms = {"weights": weights, "reference": reference, "grads+optimizer": state, "activations": activations}
    terms = {k: v / gb for k, v in terms.items()}
    terms["allocated"] = sum(terms.values())  # what torch.cuda.max_memory_allocated would report
    terms["total"] = (terms["allocated"] + OVERHEAD_GB) * 1.1  # what the GPU must hold
    return terms


TABLE = (
    "CogVideoX-5B",
    "Wan 2.2 TI2V-5B",
    "Wan 14B (2.1 T2V / one A14B expert)",
    "Wan 2.2 A14B (both experts)",
)


def plan() -> list[dict]:
    rows = []
    for name in TABLE:
        sizes, n = count(name), tokens(name)
        for lora in (True, False):
            totals = {
                s: per_gpu_gb(sizes, n, MODELS[name]["text_tokens"], s, lora)["total"]
                for s in SEQUENCE_PARALLEL
            }
            valid = [s for s in SEQUENCE_PARALLEL if sizes["heads"] % s == 0]
            smallest = {m: next((s for s in valid if totals[s] <= m), None) for m in MEMORY_GB}
            rows.append(
                dict(
                    model=name,
                    video=MODELS[name]["video"],
                    tokens=n,
                    params=sizes["total"],
                    lora=lora,
                    lora_params=sizes["lora"],
                    totals=totals,
                    smallest=smallest,
                    heads=sizes["heads"],
                )
            )
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| model | video (tokens/sample) | params | training | " + " | ".join(
        f"S={s}" for s in SEQUENCE_PARALLEL
    )
    head += " | " + " | ".join(f"smallest S, 8×{m} GB" for m in MEMORY_GB) + " |"
    lines = [head, "|" + "---|" * (4 + len(SEQUENCE_PARALLEL) + len(MEMORY_GB))]
    for r in rows:
        train = f"LoRA r{LORA_RANK} ({r['lora_params'] / 1e6:.0f} M)" if r["lora"] else "full"
        cells = [f"{r['totals'][s]:.0f} GB" if r["heads"] % s == 0 else "—" for s in SEQUENCE_PARALLEL]
        fits = [f"{r['smallest'][m]}" if r["smallest"][m] else "does not fit" for m in MEMORY_GB]
        lines.append(
            f"| {r['model']} | {r['video']} ({r['tokens']:,}) | {r['params'] / 1e9:.1f} B | {train} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(fits)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args(argv)
    print(markdown(plan()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
