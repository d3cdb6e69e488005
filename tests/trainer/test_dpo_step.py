"""The DPO step on every adapter (tiny configs of the real diffusers classes), without DeepSpeed."""

import copy

import pytest
import torch

from tests.models import model_builders as builders
from videogpa.engine.models import TINY, get_adapter
from videogpa.engine.models.lora import apply_lora, enable_full_finetuning, enable_gradient_checkpointing
from videogpa.engine.train import reference as R
from videogpa.engine.train.dpo_step import LossSettings, build_inputs, dpo_forward, pair_draws
from videogpa.engine.types import Conditioning
from videogpa.kernels.dpo_loss import per_sample_mse

LOSS = LossSettings(beta=500.0)
CPU = torch.device("cpu")


def _case(name: str, pairs: int = 2):
    """(adapter, transformer, winners, losers, cond) for a tiny config of each model family."""
    gen = torch.Generator().manual_seed(7)
    image = None
    if name == "tiny":
        adapter = get_adapter("tiny")
        model = adapter.load_transformer(None, torch.float32)
        w, lo = torch.randn(2, pairs, *TINY.latent_shape, generator=gen)
        text = torch.randn(pairs, *TINY.text_shape, generator=gen)
        return adapter, model, w, lo, Conditioning(text)
    if name == "cogvideox-t2v":
        model, shape = builders.cogvideox_t2v(), (3, 4, 8, 8)
    elif name == "cogvideox1.5-t2v":
        model, shape = builders.cogvideox15_t2v(), (4, 4, 8, 8)
    elif name == "cogvideox-i2v":
        model, shape = builders.cogvideox_i2v(), (4, 4, 8, 8)
        image = torch.randn(pairs, 1, 4, 8, 8, generator=gen)
    else:
        model, shape = builders.wan_ti2v(), (4, 3, 8, 8)
        if name == "wan2.2-ti2v/i2v":
            image = torch.randn(pairs, 4, 1, 8, 8, generator=gen)
        name = "wan2.2-ti2v"
    adapter = get_adapter(name)
    w, lo = torch.randn(2, pairs, *shape, generator=gen)
    return adapter, model, w, lo, builders.cond(pairs, image)


def _inputs(adapter, w, lo, cond, draw=0, seed=0):
    p = w.shape[0]
    return build_inputs(
        adapter, w, lo, cond, torch.arange(p), torch.full((p,), draw), seed, CPU, torch.float32
    )


def _perturb_lora(model: torch.nn.Module) -> None:
    """LoRA B starts at zero (so A gets no gradient); give it small values so every factor is exercised."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


ADAPTER_CASES = [
    "tiny",
    "cogvideox-t2v",
    "cogvideox1.5-t2v",
    "cogvideox-i2v",
    "wan2.2-ti2v",
    "wan2.2-ti2v/i2v",
]


@pytest.mark.parametrize("name", ADAPTER_CASES)
def test_every_adapter_runs_a_lora_dpo_step_and_every_trainable_parameter_gets_a_gradient(name):
    adapter, model, w, lo, cond = _case(name)
    apply_lora(model, 4, 8.0, list(adapter.default_lora_targets))
    enable_gradient_checkpointing(model)
    _perturb_lora(model)
    model.train()
    block_calls = []
    first_block = next(m for n, m in model.named_modules() if n.endswith("blocks.0"))
    first_block.register_forward_pre_hook(lambda *_: block_calls.append(torch.is_grad_enabled()))
    inputs = _inputs(adapter, w, lo, cond)
    out = dpo_forward(adapter, model, R.AdaptersOff(adapter, model), inputs, LOSS)
    assert torch.isfinite(out.loss)
    # reference (no grad), policy (grad), then the checkpointed block is recomputed during backward
    block_calls.clear()
    out = dpo_forward(adapter, model, R.AdaptersOff(adapter, model), inputs, LOSS)
    out.loss.backward()
    assert block_calls == [False, True, True]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    for n, p in trainable:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_full_finetuning_with_a_frozen_copy_gives_every_parameter_a_gradient():
    adapter, model, w, lo, cond = _case("tiny")
    frozen = copy.deepcopy(model).requires_grad_(False)
    enable_full_finetuning(model)
    enable_gradient_checkpointing(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    model.train()
    out = dpo_forward(adapter, model, R.Separate(adapter, frozen), _inputs(adapter, w, lo, cond), LOSS)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(p.grad is None for p in frozen.parameters())


def test_winner_and_loser_share_noise_and_timestep_and_the_policy_runs_once_on_the_stack():
    adapter, model, w, lo, cond = _case("cogvideox-t2v", pairs=3)
    inputs = _inputs(adapter, w, lo, cond)
    t = inputs.timesteps
    assert torch.equal(t[:3], t[3:])
    # x_t is linear in (x0, ε): with a shared ε and t the noise cancels in x_t(w) - x_t(l)
    diff = adapter.add_noise(w - lo, torch.zeros_like(w), t[:3])
    torch.testing.assert_close(inputs.noisy[:3] - inputs.noisy[3:], diff, rtol=1e-5, atol=1e-5)
    frozen = copy.deepcopy(model)
    calls = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((kwargs["hidden_states"].shape[0], torch.is_grad_enabled())),
        with_kwargs=True,
    )
    dpo_forward(adapter, model, R.Separate(adapter, frozen), inputs, LOSS)
    assert calls == [(6, True)]  # the policy: once, on [w; l]


def test_draws_are_deterministic_per_pair_and_draw():
    adapter = get_adapter("tiny")
    n1, t1 = pair_draws(adapter, (2, 3), seed=5, pair_index=[0, 1], draw=[0, 0])
    n2, t2 = pair_draws(adapter, (2, 3), seed=5, pair_index=[1, 0], draw=[0, 0])
    assert torch.equal(n1[0], n2[1]) and torch.equal(t1[1], t2[0])  # a pair's draw ignores batch position
    n3, _ = pair_draws(adapter, (2, 3), seed=5, pair_index=[0], draw=[1])
    n4, _ = pair_draws(adapter, (2, 3), seed=6, pair_index=[0], draw=[0])
    assert not torch.equal(n1[0], n3[0]) and not torch.equal(n1[0], n4[0])


def test_wrong_latent_shapes_are_rejected():
    adapter, model, w, lo, cond = _case("tiny")
    with pytest.raises(ValueError, match="same shape"):
        _inputs(adapter, w, lo[:, :, :, :4], cond)
    with pytest.raises(ValueError, match="5-D"):
        _inputs(adapter, w[:, 0], lo[:, 0], cond)
    with pytest.raises(ValueError, match="conditioning batch"):
        _inputs(adapter, w, lo, Conditioning(cond.text_embeds[:1]))


def test_precomputed_reference_equals_the_online_reference():
    adapter, model, w, lo, cond = _case("tiny", pairs=5)
    apply_lora(model, 4, 8.0, list(adapter.default_lora_targets))
    _perturb_lora(model)
    online = R.AdaptersOff(adapter, model)

    def make(idx, draw):
        sel = torch.as_tensor(idx)
        sub = Conditioning(cond.text_embeds[sel])
        return build_inputs(
            adapter, w[sel], lo[sel], sub, sel, torch.full((len(idx),), draw), 0, CPU, torch.float32
        )

    table = R.compute_table(5, 2, 2, make, online, CPU)
    assert table.shape == (5, 2, 2)
    pre = R.Precomputed(table)
    for draw in (0, 1):
        # the same batch as a table chunk: bit-identical errors and loss
        inputs = make([0, 1], draw)
        a = dpo_forward(adapter, model, online, inputs, LOSS)
        b = dpo_forward(adapter, model, pre, inputs, LOSS)
        assert torch.equal(a.ref_err, b.ref_err) and torch.equal(a.loss, b.loss)
        # another batch composition: equal up to float reassociation in the batched forward
        inputs = make([4, 1, 3], draw)
        ref_pred, _ = online(inputs)
        _, ref_err = pre(inputs)
        torch.testing.assert_close(ref_err, per_sample_mse(ref_pred, inputs.target), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="no entry"):
        pre(make([0], 2))


def test_build_reference_chooses_each_strategy_from_the_config(tmp_path):
    """dpo.reference decides alone: adapters_off runs the policy's module, separate the frozen copy (the only
    strategy that needs one), precomputed needs the split its table is for."""
    from tests.trainer.trainer_helpers import tiny_config

    adapter, model, *_ = _case("tiny")
    policy = torch.nn.Module()
    policy.module = model  # as a DeepSpeed engine holds its model
    frozen = copy.deepcopy(model)
    chosen = {}
    for strategy in ("adapters_off", "separate", "precomputed"):
        lora = strategy != "separate"
        cfg = tiny_config(tmp_path, dpo={"reference": strategy}, lora={"enabled": lora})
        site = R.ReferenceSite(cfg, adapter, policy, frozen, tmp_path, False, {}, CPU, torch.float32)
        assert R.needs_frozen_model(cfg) == (strategy == "separate")
        if strategy == "precomputed":
            with pytest.raises(ValueError, match="'precomputed' needs the preference set"):
                R.build_reference(site)
            continue
        chosen[strategy] = R.build_reference(site)
    assert isinstance(chosen["adapters_off"], R.AdaptersOff) and chosen["adapters_off"].model is model
    assert isinstance(chosen["separate"], R.Separate) and chosen["separate"].model is frozen
