"""Run by test_model_wan14b under torchrun (2 gloo ranks): for Wan 2.1 T2V, Wan 2.1 I2V (latent-concat input,
CLIP embeddings, 512 text tokens) and Wan 2.2 A14B (both experts, one of them idle in one step), a DPO forward
+ backward with the video tokens split over the ranks equals the unsplit one (tests.trainer's checks).
Each rank r prints `ok FAMILY @r` per family that matched."""

from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist

from tests.models import model_builders as B
from tests.models.test_model_wan14b import _image_cond
from tests.trainer.sequence_parallel_worker import assert_relative, one_step
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import apply_lora, enable_gradient_checkpointing
from videogpa.engine.runtime.sequence_parallel import enable_sequence_parallel
from videogpa.engine.train.dpo_step import LossSettings, build_inputs

FAMILIES = {  # name: (adapter, builder, conditioning of P pairs with latent frames F)
    "wan2.1-t2v": ("wan2.1-t2v", B.wan_ti2v, lambda p: B.cond(p)),
    "wan2.1-i2v": ("wan2.1-i2v", B.wan21_i2v, lambda p: _image_cond(p, frames=3, size=6)),
    "wan2.2-t2v-a14b": ("wan2.2-t2v-a14b", lambda: B.wan_experts(boundary_ratio=0.8), lambda p: B.cond(p)),
    "wan2.2-t2v-a14b-idle": (
        "wan2.2-t2v-a14b",
        lambda: B.wan_experts(boundary_ratio=0.1),
        lambda p: B.cond(p),
    ),
}


def check(family: str, size: int, rank: int) -> None:
    name, build, make_cond = FAMILIES[family]
    adapter = get_adapter(name, shift=3.0)
    torch.manual_seed(0)
    model = B.perturbed(apply_lora(build(), 4, 8, list(adapter.default_lora_targets)))
    enable_gradient_checkpointing(model)
    split = enable_sequence_parallel(copy.deepcopy(model), adapter, dist.group.WORLD, size, rank)
    gen = torch.Generator().manual_seed(1)
    pairs = 2
    w, lo = (torch.randn(pairs, 4, 3, 6, 6, generator=gen) for _ in range(2))  # 27 tokens, uneven over 2
    inputs = build_inputs(
        adapter,
        w,
        lo,
        make_cond(pairs),
        torch.arange(pairs),
        torch.zeros(pairs, dtype=torch.long),
        seed=3,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    whole = one_step(adapter, model, inputs, LossSettings(beta=500.0))
    parts = one_step(adapter, split, inputs, LossSettings(beta=500.0))
    assert_relative(parts[0], whole[0], 1e-5, f"{family}: loss")
    assert_relative(parts[1], whole[1], 1e-5, f"{family}: logits")
    assert parts[2].keys() == whole[2].keys() and whole[2], family
    for n, g in whole[2].items():
        mean = parts[2][n].float().clone()
        dist.all_reduce(mean)  # what DeepSpeed's average over the ranks does
        mean /= size
        if g.abs().sum() > 0:
            assert_relative(mean, g.float(), 1e-5, f"{family}: grad {n}")
        else:  # an idle expert's zero gradient
            assert not mean.any() and n.startswith("transformer_2."), f"{family}: grad {n}"
    print(f"ok {family} @{rank}", flush=True)


def main() -> None:
    dist.init_process_group("gloo")
    for family in sys.argv[1:]:
        check(family, dist.get_world_size(), dist.get_rank())
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
