"""Plain-PyTorch reference of the Diffusion-DPO loss (Wallace et al. 2023), the ground truth for the
kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "hinge", "ipo")

# The scalar metrics of a loss call, in the order the fused kernel stores them (DPOOutput documents them).
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


def per_sample_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """E_s = Σ_i m_i (pred_si - target_si)² / Σ_i m_i over all trailing elements (m = 1 without mask),
    fp32."""
    sq = (pred.float() - target.float()).square()
    if mask is None:
        return sq.flatten(1).mean(dim=1)
    m = mask.to(torch.float32).expand_as(sq)
    return (sq * m).flatten(1).sum(dim=1) / m.flatten(1).sum(dim=1)


def pair_loss(h: torch.Tensor, beta: float, loss_type: str, label_smoothing: float) -> torch.Tensor:
    """Per-pair loss from h = (E_ref(w) - E_θ(w)) - (E_ref(l) - E_θ(l)).

    sigmoid: -(1-ε)·log σ(βh) - ε·log σ(-βh);  hinge: relu(1 - βh);  ipo: (h - 1/(2β))².
    """
    logits = beta * h
    if loss_type == "sigmoid":
        return (1.0 - label_smoothing) * F.softplus(-logits) + label_smoothing * F.softplus(logits)
    if loss_type == "hinge":
        return torch.relu(1.0 - logits)
    return (h - 1.0 / (2.0 * beta)).square()


def reference_dpo_loss(
    policy_pred: torch.Tensor,
    ref_pred: torch.Tensor | None,
    target: torch.Tensor,
    beta: float,
    loss_type: str,
    label_smoothing: float,
    weight: torch.Tensor | None,
    mask: torch.Tensor | None,
    ref_err: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The loss on validated inputs ([w; l] along dim 0) as DPOOutput's fields; gradients reach policy_pred
    only."""
    batch = policy_pred.shape[0] // 2
    target = target.detach()
    policy_err = per_sample_mse(policy_pred, target, mask)
    if ref_err is None:
        ref_err = per_sample_mse(ref_pred.detach(), target, mask)
    ref_err = ref_err.detach().float()
    pw, pl = policy_err[:batch], policy_err[batch:]
    rw, rl = ref_err[:batch], ref_err[batch:]
    h = (rw - pw) - (rl - pl)
    losses = pair_loss(h, beta, loss_type, label_smoothing)
    if weight is not None:
        losses = losses * weight.detach().float()
    logits = (beta * h).detach()
    return dict(
        loss=losses.mean(),
        accuracy=(
            (logits > 0).float() + 0.5 * (logits == 0).float()
        ).mean(),  # a zero logit (a tie) counts 1/2
        reward_margin=(pl - pw).detach().mean(),
        logits_mean=logits.mean(),
        policy_err_w=pw.detach().mean(),
        policy_err_l=pl.detach().mean(),
        ref_err_w=rw.mean(),
        ref_err_l=rl.mean(),
        logits=logits,
        policy_err=policy_err.detach(),
        ref_err=ref_err,
    )
