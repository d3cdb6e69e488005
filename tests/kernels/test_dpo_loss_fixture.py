"""Agreement with the authors' Diffusion-DPO loss (../shared/fixtures/dpo_loss_a).

Their loss takes winners and losers as separate tensors; ours takes [w; l] along dim 0. Their logit is
β·[(r_w - m_w) - (r_l - m_l)] (the same sign as ours); their hinge ignores label smoothing, ours rejects
it, so hinge cases run with ε = 0. Their reward metrics use the policy errors only. On a GPU the tensors live
there (the compiled kernel).
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from videogpa.kernels.dpo_loss import diffusion_dpo_loss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cases(fixtures_dir):
    """Every case of every dpo_loss_* fixture folder, with that folder's tensors."""
    folders = sorted(fixtures_dir.glob("dpo_loss_*"))
    assert folders, f"no dpo_loss_* fixture under {fixtures_dir}"
    for folder in folders:
        tensors = load_file(folder / "dpo_loss.safetensors")
        for case in json.loads((folder / "index.json").read_text())["cases"]:
            yield case, tensors


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_matches_authors_loss(fixtures_dir, backend):
    n_cases = 0
    for case, tensors in _cases(fixtures_dir):
        n_cases += 1
        g, name = case["inputs_prefix"], case["name"]
        beta, loss_type = case["beta"], case["loss_type"]
        smoothing = case["label_smoothing"] if loss_type == "sigmoid" else 0.0
        policy = torch.cat([tensors[f"{g}.v_win"], tensors[f"{g}.v_lose"]]).to(DEVICE).requires_grad_(True)
        ref = torch.cat([tensors[f"{g}.v_win_ref"], tensors[f"{g}.v_lose_ref"]]).to(DEVICE)
        target = torch.cat([tensors[f"{g}.v_win_target"], tensors[f"{g}.v_lose_target"]]).to(DEVICE)
        out = diffusion_dpo_loss(
            policy, ref, target, beta, loss_type=loss_type, label_smoothing=smoothing, backend=backend
        )
        out.loss.backward()
        exact = case["values_float64_inputs"]
        atol = 1e-6 + 5e-8 * beta  # β·(difference of MSEs) cancels: fp32 noise grows with β
        assert out.loss.item() == pytest.approx(exact["loss"], rel=1e-5, abs=atol), name
        assert out.reward_margin.item() == pytest.approx(exact["reward_margin"], abs=1e-5), name
        assert -out.policy_err_w.item() == pytest.approx(exact["winner_reward"], abs=1e-5), name
        assert -out.policy_err_l.item() == pytest.approx(exact["loser_reward"], abs=1e-5), name
        b = case["B"]
        authors_accuracy = (out.policy_err[:b] < out.policy_err[b:]).float().mean().item()
        assert authors_accuracy == pytest.approx(exact["accuracy"]), name
        # The fixture's logits are float32 debug values: allow for fp32 summation-order noise times β.
        logits_tol = 1e-6 + 4e-7 * beta
        torch.testing.assert_close(
            out.logits.cpu(), torch.tensor(case["logits"]), rtol=1e-5, atol=logits_tol, msg=name
        )
        grad = torch.cat([tensors[f"{name}.grad_v_win"], tensors[f"{name}.grad_v_lose"]])
        scale = grad.abs().max().item()
        torch.testing.assert_close(policy.grad.cpu(), grad, rtol=1e-3, atol=1e-3 * scale + 1e-12, msg=name)
    assert n_cases > 0, "fixture folders hold no cases"
