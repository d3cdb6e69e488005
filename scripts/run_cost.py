"""Estimated GPU-hours of one VideoGPA run per stage, from FLOP counts, until measured rows replace them.

    python scripts/run_cost.py     # prints the table that docs/performance.md shows (a test compares them)

Assumptions, all stated in the printed notes: dense bf16 peak 989 TFLOP/s (H100 SXM) at an assumed 35% model
FLOPs utilisation for every stage; a transformer forward costs 2·params·tokens for its matmuls plus
4·layers·tokens²·hidden for self-attention (cross-attention to text and the VAE are left out); 2,500
prompts × 4 candidates, 50 sampler steps with classifier-free guidance (2 forwards a step); training 10,000
steps of 16 pairs (32 samples), each sample costing 5 forwards (forward + backward = 3, the checkpointed
forward again = 1, the adapters-off reference = 1); scoring VGGT-1B on 10 frames of 518² (24 frame + 24
global blocks of width 1024, 1,374 tokens a frame, about 1.2 B parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

PEAK_FLOPS = 989e12
MFU = 0.35
GPUS = 8
PROMPTS, CANDIDATES, SAMPLER_STEPS, CFG = 2_500, 4, 50, 2
TRAIN_STEPS, PAIRS_PER_STEP, FORWARDS_PER_SAMPLE = 10_000, 16, 5


@dataclass(frozen=True)
class Transformer:
    name: str
    params: float
    layers: int
    hidden: int
    tokens: int  # per sample at the training resolution
    shape: str

    def forward_flops(self) -> float:
        return 2 * self.params * self.tokens + 4 * self.layers * self.tokens**2 * self.hidden


MODELS = (
    # 49 frames 480×720: latents 13×60×90, patch 2 → 17,550 video + 226 text tokens
    Transformer("CogVideoX-5B", 5.5e9, 42, 3072, 17_776, "49 × 480 × 720"),
    # 121 frames 704×1280, VAE 4×16×16, patch 1×2×2 → 31 × 22 × 40 tokens
    Transformer("Wan 2.2 TI2V 5B", 5.0e9, 30, 3072, 27_280, "121 × 704 × 1280"),
    # 81 frames 720×1280, VAE 4×8×8, patch 1×2×2 → 21 × 45 × 80 tokens (A14B: one 14B expert a step)
    Transformer("Wan 2.1 / 2.2 A14B 14B", 14e9, 40, 5120, 75_600, "81 × 720 × 1280"),
)
VGGT_FLOPS = 2 * 1.2e9 * 13_740 + 4 * 24 * 13_740**2 * 1024 + 4 * 24 * 10 * 1_374**2 * 1024


def gpu_hours(flops: float) -> float:
    return flops / (PEAK_FLOPS * MFU) / 3600


def table() -> str:
    videos = PROMPTS * CANDIDATES
    rows = [
        "| model | frames × H × W | generation (10,000 videos) | scoring | training (10,000 steps) "
        "| total | wall time on 8 GPUs |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        generate = gpu_hours(videos * SAMPLER_STEPS * CFG * m.forward_flops())
        score = gpu_hours(videos * VGGT_FLOPS)
        train = gpu_hours(TRAIN_STEPS * 2 * PAIRS_PER_STEP * FORWARDS_PER_SAMPLE * m.forward_flops())
        total = generate + score + train
        rows.append(
            f"| {m.name} | {m.shape} | {generate:,.0f} GPU-h | {score:,.1f} GPU-h | {train:,.0f} GPU-h "
            f"| {total:,.0f} GPU-h | {total / GPUS:,.0f} h |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
