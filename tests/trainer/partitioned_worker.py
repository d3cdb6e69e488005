"""One rank of tests/trainer/test_partitioned_loading.py (started by the deepspeed launcher): trains a few
DPO steps from a transformer saved on disk three ways — ZeRO-3 (partitioned loading, adapters-off reference),
ZeRO-3 with parameter + optimizer CPU offload and the `separate` reference (loaded partitioned as well), and
ZeRO-2 (a plain whole load, adapters-off) — measuring its resident memory during each set-up, and writes what
it saw (every rank: memory, losses, gradient norms, offload state as JSON; rank 0: the final LoRA weights)."""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from videogpa.engine.core.config_loading import config_from_dict
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train.dpo_step import LossSettings, build_inputs, dpo_forward
from videogpa.engine.train.policy import build_policy, model_adapter
from videogpa.engine.train.reference import ReferenceSite, build_reference
from videogpa.engine.types import Conditioning

LATENTS = (2, 4, 4, 4)  # one sample [F, C, H, W] (CogVideoX's BFCHW layout)


def status_kib(key: str) -> int:
    """A /proc/self/status field in KiB (VmRSS: resident now, VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak() -> int:
    """Free memory back to the system (glibc malloc_trim), then reset this process's resident high-water mark
    to its current size (Linux clear_refs 5); returns that size."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def config(folder: str, out: str, reference: str, **distributed):
    return config_from_dict(
        {
            "seed": 0,
            "output_dir": out,
            "model": {"name": "cogvideox-t2v", "path": folder, "gradient_checkpointing": True},
            "lora": {"rank": 4, "alpha": 8},
            "data": {"synthetic": {}},  # unused: the steps below make their own pairs
            "dpo": {"beta": 50.0, "reference": reference},
            "optim": {"lr": 1e-3, "warmup_steps": 1},
            "train": {"max_steps": 1, "micro_batch_size": 1, "global_batch_size": 2, "precision": "fp32"},
            "distributed": distributed,
        }
    )


def batch(adapter, text_shape: tuple[int, int], step: int):
    """This rank's pair for a step: random latents and text from a seed of (step, rank)."""
    gen = torch.Generator().manual_seed(1000 * step + D.rank())
    winner, loser = torch.randn(2, 1, *LATENTS, generator=gen)
    cond = Conditioning(torch.randn(1, *text_shape, generator=gen))
    index = torch.tensor([2 * step + D.rank()])
    return build_inputs(
        adapter, winner, loser, cond, index, torch.zeros(1, dtype=torch.long), 0, D.device(), torch.float32
    )


def train(cfg, text_shape) -> dict:
    """Set-up memory (peak minus the resident size before), one optimizer step (its loss and gradient norm),
    the loss of the next batch after it (forward only), and the LoRA weights after it."""
    adapter = model_adapter(cfg)
    D.seed_everything(cfg.seed)
    before = reset_peak()
    engine, frozen = build_policy(cfg, adapter, torch.float32, D.world_size())
    result = {"setup_kib": status_kib("VmHWM") - before, "shmem_kib": status_kib("RssShmem")}
    result["offload_param"] = str(getattr(engine.zero_offload_param(), "device", None))
    result["offload_optimizer"] = str(getattr(engine.zero_offload_optimizer(), "device", None))
    result["optimizer"] = type(engine.optimizer.optimizer).__name__
    if frozen is not None:  # the separate reference: its own engine over partitioned, LoRA-free weights
        params = list(frozen.module.named_parameters())
        result["reference"] = {
            "engine": type(frozen).__name__,
            "partitioned": all(p.numel() == 0 for _, p in params),
            "lora": any("lora_" in n for n, _ in params),
        }
    site = ReferenceSite(
        cfg, adapter, engine, frozen, Path(cfg.output_dir), False, {}, D.device(), torch.float32
    )
    reference, settings = build_reference(site), LossSettings(cfg.dpo.beta)
    out = dpo_forward(adapter, engine, reference, batch(adapter, text_shape, 0), settings)
    engine.backward(out.loss)
    engine.step()
    result["grad_norm"] = float(engine.get_global_grad_norm())
    with torch.no_grad():
        after = dpo_forward(adapter, engine, reference, batch(adapter, text_shape, 1), settings)
    result["losses"] = [D.all_reduce_mean(out.loss).item(), D.all_reduce_mean(after.loss).item()]
    import deepspeed

    lora = [(n, p) for n, p in engine.module.named_parameters() if "lora_" in n]
    with deepspeed.zero.GatheredParameters([p for _, p in lora]):
        result["lora"] = {n: p.detach().clone() for n, p in lora}
    del engine, frozen, reference
    gc.collect()
    return result


def main(folder: str, out: str) -> None:
    D.init_distributed()
    text_shape = (8, json.loads((Path(folder) / "config.json").read_text())["text_embed_dim"])
    runs = {}
    for name, cfg in {
        "zero3": config(folder, out, "adapters_off", zero_stage=3),
        "offload": config(folder, out, "separate", zero_stage=3, offload_params=True, offload_optimizer=True),
        "zero2": config(folder, out, "adapters_off", zero_stage=2),
    }.items():
        start = time.perf_counter()
        runs[name] = train(cfg, text_shape)
        print(f"rank {D.rank()}: {name} {time.perf_counter() - start:.1f} s", flush=True)
    report = {k: {n: v for n, v in r.items() if n != "lora"} for k, r in runs.items()}
    Path(out, f"rank{D.rank()}.json").write_text(json.dumps(report))
    if D.is_main():
        lora = {f"{k}/{n}": v for k, r in runs.items() for n, v in r["lora"].items()}
        save_file(lora, str(Path(out, "lora.safetensors")))
    D.barrier()


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
