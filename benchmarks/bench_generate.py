"""Candidate generation throughput: videos per GPU-hour.

GPU (default): a CogVideoX-5B-config and a Wan-2.2-TI2V-5B-config pipeline with random weights (bf16; the
text encoder is left out: random prompt embeddings of the real width and length go in), at the models'
native sizes with classifier-free guidance. Side by side in one run on the same pipeline object: a plain
`pipe(...)` call with default settings, then our generation options (engine.stages.fast_sampling) one at a
time and together. Each variant is timed at two step counts (after a warm-up call that also compiles), so
time = fixed (text, VAE decode) + steps × per-step; the table extrapolates to 50 steps and reports videos per
GPU-hour. The step cache changes the sampled videos (it is off by default); the other options do not.

CPU (`--small`): the tiny pipeline through recipes/generate.py, one process against two `--shard I/2`
processes (OMP_NUM_THREADS=1 each), wall time including start-up; two processes should take close to half.

    python benchmarks/bench_generate.py                       # needs a GPU
    python benchmarks/bench_generate.py --models wan-5b --steps 2,4
    python benchmarks/bench_generate.py --small               # anywhere
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, append_results, print_table, synchronize  # noqa: E402

from videogpa.engine.core.config import GenerationConfig  # noqa: E402
from videogpa.engine.models import get_adapter  # noqa: E402
from videogpa.engine.stages.fast_sampling import apply_sampling_options  # noqa: E402

STEPS_EXTRAPOLATED = 50

# The public 5B checkpoints' transformer, VAE and scheduler configs (their config.json files; the Wan 2.2
# VAE's latent mean / std are left at 0 / 1: the weights are random anyway), at their native sampling sizes.
MODELS = {
    "cogvideox-5b": {
        "adapter": "cogvideox-t2v",
        "transformer": dict(
            num_attention_heads=48,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            num_layers=42,
            text_embed_dim=4096,
            time_embed_dim=512,
            max_text_seq_length=226,
            sample_frames=49,
            sample_height=60,
            sample_width=90,
            patch_size=2,
            use_rotary_positional_embeddings=True,
        ),
        "vae": dict(scaling_factor=0.7),  # the class defaults are CogVideoX's VAE
        "scheduler": dict(
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            beta_schedule="scaled_linear",
            clip_sample=False,
            snr_shift_scale=1.0,
        ),
        "text": (226, 4096),
        "call": dict(num_frames=49, height=480, width=720, guidance_scale=6.0),
    },
    "wan-5b": {
        "adapter": "wan2.2-ti2v",
        "transformer": dict(
            patch_size=(1, 2, 2),
            num_attention_heads=24,
            attention_head_dim=128,
            in_channels=48,
            out_channels=48,
            text_dim=4096,
            freq_dim=256,
            ffn_dim=14336,
            num_layers=30,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
            rope_max_seq_len=1024,
        ),
        "vae": dict(
            base_dim=160,
            decoder_base_dim=256,
            z_dim=48,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_temporal=4,
            scale_factor_spatial=16,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        ),
        "scheduler": dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        "text": (512, 4096),
        "call": dict(num_frames=121, height=704, width=1280, guidance_scale=5.0),
    },
}
FAMILIES = {  # model name prefix -> (pipeline, transformer, VAE, scheduler) classes of diffusers
    "cogvideox": (
        "CogVideoXPipeline",
        "CogVideoXTransformer3DModel",
        "AutoencoderKLCogVideoX",
        "CogVideoXDPMScheduler",
    ),
    "wan": ("WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan", "UniPCMultistepScheduler"),
}

# our options, one at a time and together (GenerationConfig keys)
OPTIONS = {
    "sdpa cudnn": {"attention_backend": "cudnn"},
    "compile blocks": {"compile": "inductor"},
    "vae tiling": {"vae_tiling": True},
    "cudnn + compile": {"attention_backend": "cudnn", "compile": "inductor"},
    "step cache (changes samples)": {"step_cache": "first_block"},
}


def extrapolate(times: dict[int, float], steps: int = STEPS_EXTRAPOLATED) -> tuple[float, float, float]:
    """(per-step seconds, fixed seconds, seconds at `steps`) from call times at two step counts."""
    (n1, t1), (n2, t2) = sorted(times.items())[:2]
    per_step = (t2 - t1) / (n2 - n1)
    fixed = t1 - n1 * per_step
    return per_step, fixed, fixed + steps * per_step


def build_pipeline(name: str, device: torch.device, dtype: torch.dtype):
    """A random-weights pipeline of model `name` (MODELS) on `device`, without a text encoder."""
    import diffusers

    spec = MODELS[name]
    pipeline, transformer, vae, scheduler = (getattr(diffusers, c) for c in FAMILIES[name.split("-")[0]])
    extra = {"expand_timesteps": True} if name.startswith("wan") else {}  # Wan 2.2 TI2V's per-token timesteps
    with torch.device(device):  # initialised where it runs: a 5B model's CPU init would take minutes
        parts = dict(
            transformer=transformer(**spec["transformer"]).to(dtype), vae=vae(**spec["vae"]).to(dtype)
        )
    return pipeline(
        tokenizer=None, text_encoder=None, scheduler=scheduler(**spec["scheduler"]), **parts, **extra
    )


def time_calls(
    pipe, spec: dict, steps: list[int], device: torch.device, dtype: torch.dtype
) -> dict[int, float]:
    """Seconds of one pipe(...) call (one video, CFG) at each step count, after a warm-up call."""
    length, width = spec["text"]
    gen = torch.Generator(device).manual_seed(0)
    text = torch.randn(1, length, width, generator=gen, device=device, dtype=dtype)
    negative = torch.randn(1, length, width, generator=gen, device=device, dtype=dtype)

    def call(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        pipe(
            prompt_embeds=text,
            negative_prompt_embeds=negative,
            num_inference_steps=n,
            output_type="pt",
            generator=torch.Generator(device).manual_seed(1),
            **spec["call"],
        )
        synchronize(device)
        return time.perf_counter() - start

    call(min(steps))  # warm-up (and compilation)
    return {n: call(n) for n in steps}


def option_rows(models: list[str], steps: list[int], device: torch.device) -> list[dict]:
    """Per model: the plain pipe(...) and each of OPTIONS, on a freshly built pipeline each (bf16 on a
    GPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for name in models:
        spec = MODELS[name]
        adapter = get_adapter(spec["adapter"])
        for label, options in {"plain pipe(...)": None, **OPTIONS}.items():
            torch.manual_seed(0)
            pipe = build_pipeline(name, device, dtype)
            if options is not None:
                apply_sampling_options(pipe, adapter, GenerationConfig(**options), str(device))
            times = time_calls(pipe, spec, steps, device, dtype)
            per_step, fixed, total = extrapolate(times)
            rows.append(
                {
                    "bench": "generate",
                    "model": name,
                    "variant": label,
                    "options": options or {},
                    **{k: v for k, v in spec["call"].items()},
                    "steps_timed": steps,
                    "per_step_s": per_step,
                    "fixed_s": fixed,
                    f"video_s_{STEPS_EXTRAPOLATED}": total,
                    "videos_per_gpu_hour": 3600 / total,
                    "peak_gb": torch.cuda.max_memory_allocated(device) / 1e9
                    if device.type == "cuda"
                    else None,
                }
            )
            del pipe
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
        base = next(r for r in rows if r["model"] == name and r["options"] == {})
        for row in rows:
            if row["model"] == name:
                row["speedup_vs_plain"] = (
                    base[f"video_s_{STEPS_EXTRAPOLATED}"] / row[f"video_s_{STEPS_EXTRAPOLATED}"]
                )
    return rows


def cpu_rows(prompts: int, steps: int) -> list[dict]:
    """The tiny pipeline: 1 process vs 2 --shard processes (one thread each), wall seconds."""
    from videogpa.engine.models.tiny import write_tiny_pipeline

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipeline = write_tiny_pipeline(tmp / "tiny")
        (tmp / "prompts.txt").write_text("".join(f"a red barn number {i}\n" for i in range(prompts)))
        for n in (1, 2):
            out = tmp / f"out_{n}"
            command = [
                sys.executable,
                str(REPO_ROOT / "recipes" / "generate.py"),
                "--model",
                "tiny",
                "--pipeline",
                str(pipeline),
                "--prompts",
                str(tmp / "prompts.txt"),
                "--out-dir",
                str(out),
                "--num-candidates",
                "1",
                "--batch-size",
                "1",
                "--steps",
                str(steps),
                "--device",
                "cpu",
            ]
            start = time.perf_counter()
            procs = [
                subprocess.Popen(
                    command + (["--shard", f"{i}/{n}"] if n > 1 else []),
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(n)
            ]
            for proc in procs:
                _, err = proc.communicate()
                if proc.returncode:
                    raise RuntimeError(f"generate failed: {err[-2000:]}")
            wall = time.perf_counter() - start
            videos = len(list((out / "videos").glob("*.mp4")))
            rows.append(
                {
                    "bench": "generate",
                    "model": "tiny",
                    "variant": f"{n} process{'es' * (n > 1)}",
                    "processes": n,
                    "videos": videos,
                    "steps": steps,
                    "wall_s": wall,
                    "videos_per_hour": 3600 * videos / wall,
                }
            )
    for row in rows:
        row["speedup_vs_1_process"] = rows[0]["wall_s"] / row["wall_s"]
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the tiny pipeline on a CPU: 1 vs 2 processes")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated of %(default)s")
    p.add_argument(
        "--steps", default="2,4", help="two step counts timed (GPU), or the steps (--small: first)"
    )
    p.add_argument("--prompts", type=int, default=8, help="--small: prompts (one video each)")
    p.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    if args.small:
        rows = cpu_rows(args.prompts, steps[0])
        print_table(rows, ["variant", "videos", "wall_s", "videos_per_hour", "speedup_vs_1_process"])
    else:
        if device.type != "cuda":
            p.error("the 5B pipelines need a GPU; pass --small for the tiny pipeline on a CPU")
        models = args.models.split(",")
        unknown = sorted(set(models) - set(MODELS))
        if unknown or len(steps) != 2 or steps[0] == steps[1]:
            p.error(
                f"--models: expected some of {list(MODELS)} (got {unknown}); --steps: two different counts"
            )
        rows = option_rows(models, steps, device)
        print_table(
            rows,
            [
                "model",
                "variant",
                "per_step_s",
                "fixed_s",
                f"video_s_{STEPS_EXTRAPOLATED}",
                "videos_per_gpu_hour",
                "peak_gb",
                "speedup_vs_plain",
            ],
        )
    if not args.no_save:
        print(f"appended to {append_results('bench_generate', rows, device)}")
    return rows


if __name__ == "__main__":
    main()
