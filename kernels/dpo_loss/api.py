"""Public entry points of the Diffusion-DPO loss: input checks, backend dispatch, the nn.Module wrapper."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from videogpa.kernels._backend import resolve_backend
from videogpa.kernels.dpo_loss.reference import LOSS_TYPES, reference_dpo_loss

_OP = "diffusion_dpo_loss"


@dataclass
class DPOOutput:
    """Loss (differentiable w.r.t. policy_pred only) and detached metrics, all on the inputs' device.

    h_b = (E_ref(w_b) - E_θ(w_b)) - (E_ref(l_b) - E_θ(l_b)) and logits_b = β·h_b, where E is the
    per-sample (masked) mean squared error against the target.
    """

    loss: torch.Tensor  # 0-d: mean over pairs of weight_b · loss_b
    # implicit-reward accuracy: pairs with logits > 0, a zero logit (a tie) counting 1/2
    accuracy: torch.Tensor
    reward_margin: torch.Tensor  # mean_b(E_θ(l_b) - E_θ(w_b)), the authors' definition (policy only)
    logits_mean: torch.Tensor  # mean_b(logits_b)
    policy_err_w: torch.Tensor  # mean_b E_θ(w_b)
    policy_err_l: torch.Tensor  # mean_b E_θ(l_b)
    ref_err_w: torch.Tensor  # mean_b E_ref(w_b)
    ref_err_l: torch.Tensor  # mean_b E_ref(l_b)
    logits: torch.Tensor  # [B]
    policy_err: torch.Tensor  # [2B] per-sample E_θ, winners then losers
    ref_err: torch.Tensor  # [2B] per-sample E_ref, winners then losers


def _check_float(name: str, t: torch.Tensor, allow_bool: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or (allow_bool and t.dtype == torch.bool)):
        kinds = "a floating (or bool)" if allow_bool else "a floating"
        raise ValueError(f"{_OP}: {name} must have {kinds} dtype, got {t.dtype}")


def validate_inputs(
    policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err
) -> None:
    """Raise ValueError naming the culprit when the inputs do not describe B ≥ 1 preference pairs."""
    _check_float("policy_pred", policy_pred)
    _check_float("target", target)
    if (ref_pred is None) == (ref_err is None):
        raise ValueError(f"{_OP}: give exactly one of ref_pred (predictions) or ref_err (per-sample errors)")
    if policy_pred.ndim < 2:
        raise ValueError(
            f"{_OP}: policy_pred must be [2B, ...] with at least one trailing dim, got shape "
            f"{tuple(policy_pred.shape)}"
        )
    n = policy_pred.shape[0]
    if n == 0 or n % 2:
        raise ValueError(
            f"{_OP}: dim 0 must hold 2B > 0 samples (B winners then B losers), got {n} "
            f"(shape {tuple(policy_pred.shape)})"
        )
    if policy_pred[0].numel() == 0:
        raise ValueError(f"{_OP}: samples are empty (shape {tuple(policy_pred.shape)})")
    named = {"target": target}
    if ref_pred is not None:
        _check_float("ref_pred", ref_pred)
        named["ref_pred"] = ref_pred
    for name, t in named.items():
        if t.shape != policy_pred.shape:
            raise ValueError(
                f"{_OP}: {name} has shape {tuple(t.shape)}, expected policy_pred's {tuple(policy_pred.shape)}"
            )
    if ref_err is not None:
        _check_float("ref_err", ref_err)
        if tuple(ref_err.shape) != (n,):
            raise ValueError(
                f"{_OP}: ref_err must have shape ({n},) (one error per sample), got {tuple(ref_err.shape)}"
            )
        named["ref_err"] = ref_err
    if weight is not None:
        _check_float("weight", weight)
        if tuple(weight.shape) != (n // 2,):
            raise ValueError(
                f"{_OP}: weight must have shape ({n // 2},) (one per pair), got {tuple(weight.shape)}"
            )
        named["weight"] = weight
    if mask is not None:
        _check_float("mask", mask, allow_bool=True)
        pairs = zip(reversed(mask.shape), reversed(policy_pred.shape))
        ok = mask.ndim <= policy_pred.ndim and all(m in (1, p) for m, p in pairs)
        if not ok:
            raise ValueError(
                f"{_OP}: mask of shape {tuple(mask.shape)} does not broadcast to policy_pred's "
                f"{tuple(policy_pred.shape)}"
            )
        named["mask"] = mask
    for name, t in named.items():
        if t.device != policy_pred.device:
            raise ValueError(f"{_OP}: {name} is on {t.device}, policy_pred on {policy_pred.device}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"{_OP}: beta must be a finite number > 0, got {beta!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"{_OP}: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"{_OP}: label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"{_OP}: label_smoothing applies only to loss_type='sigmoid', not {loss_type!r}")


def diffusion_dpo_loss(
    policy_pred: torch.Tensor,
    ref_pred: torch.Tensor | None,
    target: torch.Tensor,
    beta: float,
    *,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ref_err: torch.Tensor | None = None,
    backend: str = "auto",
) -> DPOOutput:
    """Diffusion-DPO loss for B preference pairs laid out [w_1..w_B, l_1..l_B] along dim 0.

    E = per-sample mean of (pred - target)² over all trailing elements, in fp32 (masked mean when `mask`,
    per-element weights broadcastable to pred, is given). h = (E_ref(w) - E_θ(w)) - (E_ref(l) - E_θ(l)),
    logits = β·h; per pair: sigmoid -(1-ε)log σ(logits) - ε log σ(-logits), hinge relu(1 - logits),
    ipo (h - 1/(2β))²; loss = mean over pairs of weight·loss. `ref_err` ([2B]) replaces `ref_pred` when the
    reference errors were precomputed. Gradients flow into policy_pred only. backend: "auto" (Triton on
    CUDA tensors, reference on CPU), "triton" or "torch".
    """
    validate_inputs(policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err)
    beta = float(beta)
    choice = resolve_backend(backend, policy_pred, op=_OP)
    if choice == "torch":
        fields = reference_dpo_loss(
            policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err
        )
    else:
        from videogpa.kernels.dpo_loss.launch import fused_dpo_loss

        fields = fused_dpo_loss(
            policy_pred, ref_pred, target, beta, loss_type, label_smoothing, weight, mask, ref_err
        )
    return DPOOutput(**fields)


class DiffusionDPOLoss(nn.Module):
    """Drop-in module: `DiffusionDPOLoss(beta=...)(policy_pred, ref_pred, target) -> DPOOutput`."""

    def __init__(
        self, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.beta, self.loss_type, self.label_smoothing, self.backend = (
            beta,
            loss_type,
            label_smoothing,
            backend,
        )

    def forward(
        self,
        policy_pred: torch.Tensor,
        ref_pred: torch.Tensor | None,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        ref_err: torch.Tensor | None = None,
    ) -> DPOOutput:
        return diffusion_dpo_loss(
            policy_pred,
            ref_pred,
            target,
            self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            weight=weight,
            mask=mask,
            ref_err=ref_err,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, loss_type={self.loss_type!r}, label_smoothing={self.label_smoothing}"
