"""The result of a Diffusion-DPO loss call: the loss and detached per-batch metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("sigmoid", "hinge", "ipo")

# Order of the scalars in the fused kernel's stats vector (see DPOOutput for their meaning).
STAT_NAMES = (
    "loss",
    "accuracy",
    "reward_margin",
    "logits_mean",
    "policy_err_w",
    "policy_err_l",
    "ref_err_w",
    "ref_err_l",
)


@dataclass
class DPOOutput:
    """Loss (differentiable w.r.t. policy_pred only) and detached metrics, all on the inputs' device.

    h_b = (E_ref(w_b) - E_θ(w_b)) - (E_ref(l_b) - E_θ(l_b)) and logits_b = β·h_b, where E is the
    per-sample (masked) mean squared error against the target.
    """

    loss: torch.Tensor  # 0-d: mean over pairs of weight_b · loss_b
    accuracy: torch.Tensor  # fraction of pairs with logits > 0 (implicit reward accuracy)
    reward_margin: torch.Tensor  # mean_b(E_θ(l_b) - E_θ(w_b)), the authors' definition (policy only)
    logits_mean: torch.Tensor  # mean_b(logits_b)
    policy_err_w: torch.Tensor  # mean_b E_θ(w_b)
    policy_err_l: torch.Tensor  # mean_b E_θ(l_b)
    ref_err_w: torch.Tensor  # mean_b E_ref(w_b)
    ref_err_l: torch.Tensor  # mean_b E_ref(l_b)
    logits: torch.Tensor  # [B]
    policy_err: torch.Tensor  # [2B] per-sample E_θ, winners then losers
    ref_err: torch.Tensor  # [2B] per-sample E_ref, winners then losers

    def metrics(self) -> dict[str, float]:
        """Scalar metrics as Python floats (synchronises with the device)."""
        return {name: float(getattr(self, name).detach()) for name in STAT_NAMES}
