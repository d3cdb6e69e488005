"""On a CUDA device: every adapter runs forward+backward in bf16 with LoRA and checkpointing, close to
fp32."""

from __future__ import annotations

import pytest
import torch

from tests.models.model_builders import cogvideox_i2v, cogvideox_t2v, text, wan_ti2v
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import apply_lora, enable_gradient_checkpointing
from videogpa.engine.types import Conditioning

CASES = {
    "cogvideox-t2v": (cogvideox_t2v, (2, 3, 4, 8, 8), None),
    "cogvideox-i2v": (cogvideox_i2v, (2, 4, 4, 8, 8), (2, 1, 4, 8, 8)),
    "wan2.2-ti2v": (wan_ti2v, (2, 4, 3, 8, 8), (2, 4, 1, 8, 8)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_cuda_matches_fp32_cpu(name):
    build, shape, image_shape = CASES[name]
    adapter = get_adapter(name)
    torch.manual_seed(0)
    model = apply_lora(build(), 4, 8, adapter.default_lora_targets)
    x0, eps = torch.randn(shape), torch.randn(shape)
    image = None if image_shape is None else torch.randn(image_shape)
    t = adapter.sample_timesteps(2, torch.Generator().manual_seed(1), torch.device("cpu"))
    cond = Conditioning(text(2), image)
    with torch.no_grad():
        reference = adapter.predict(model, adapter.add_noise(x0, eps, t), t, cond)
    cuda = torch.device("cuda")
    model = enable_gradient_checkpointing(model.to(cuda, torch.bfloat16))
    cond_cuda = Conditioning(cond.text_embeds.to(cuda), None if image is None else image.to(cuda))
    noisy = adapter.add_noise(x0.to(cuda), eps.to(cuda), t.to(cuda)).bfloat16()
    pred = adapter.predict(model, noisy, t.to(cuda), cond_cuda)
    assert pred.dtype == torch.bfloat16 and pred.device.type == "cuda"
    pred.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    scale = reference.abs().mean()
    assert (pred.float().cpu() - reference).abs().mean() < 0.05 * scale
