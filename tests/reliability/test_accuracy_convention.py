"""One accuracy convention: a zero DPO logit (policy = reference, a tie) counts 1/2 in the training metric as
in the held-out accuracy, for the Triton kernel and the PyTorch reference alike."""

import pytest
import torch

from videogpa.kernels.dpo_loss import diffusion_dpo_loss


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_tie_counts_half(backend):
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(6, 3, 5, 7, generator=gen)
    policy = torch.randn(6, 3, 5, 7, generator=gen)
    tie = diffusion_dpo_loss(policy, policy.clone(), target, beta=2.0, backend=backend)
    assert tie.accuracy.item() == 0.5 and torch.equal(tie.logits, torch.zeros(3))
    ref = policy.clone()
    ref[0] += 1.0  # pair 0: the reference's winner is worse, so the policy prefers it more: logit > 0
    mixed = diffusion_dpo_loss(policy, ref, target, beta=2.0, backend=backend)
    assert mixed.logits[0] > 0 and mixed.logits[1:].eq(0).all()
    assert mixed.accuracy.item() == pytest.approx((1 + 0.5 + 0.5) / 3)
