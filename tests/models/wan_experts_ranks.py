"""Run by test_model_wan14b under torchrun (2 CPU ranks, gloo): Wan 2.2 A14B's two experts under DeepSpeed
ZeRO-3 with LoRA, rank 0 holding only a high-noise sample and rank 1 only a low-noise one. Each rank writes
OUT/rank<r>.json: its prediction, the one-process prediction of the same sample, and the experts it ran."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist

from tests.models import model_builders as builders
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import apply_lora
from videogpa.engine.types import Conditioning


def main(out: Path) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    adapter = get_adapter("wan2.2-t2v-a14b", shift=12.0)
    model = builders.perturbed(apply_lora(builders.wan_experts(), 2, 4.0, list(adapter.default_lora_targets)))
    gen = torch.Generator().manual_seed(3)
    x, text = torch.randn(2, 4, 3, 8, 8, generator=gen), builders.text(2)
    t = torch.tensor([950.0, 100.0])  # rank 0: the high-noise expert only; rank 1: the low-noise one
    mine = slice(rank, rank + 1)
    with torch.no_grad():
        alone = adapter.predict(copy.deepcopy(model), x[mine], t[mine], Conditioning(text[mine]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "zero_allow_untested_optimizer": True,
    }
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=torch.optim.SGD(trainable, lr=0.1), config=config
    )
    ran = []
    for name, expert in engine.module.components():
        expert.register_forward_pre_hook(lambda *_, name=name: ran.append(name))
    with torch.no_grad():  # the reference pass (adapters off is the same collective pattern)
        adapter.predict(engine, x[mine], t[mine], Conditioning(text[mine]))
    pred = adapter.predict(engine, x[mine], t[mine], Conditioning(text[mine]))
    engine.backward(pred.square().mean())
    engine.step()
    result = {"pred": pred.detach().flatten().tolist(), "alone": alone.flatten().tolist(), "ran": ran}
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
