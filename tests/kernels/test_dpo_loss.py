"""The fused Diffusion-DPO loss kernel against its plain-PyTorch reference.

Tensors live on the GPU when there is one (the compiled kernel, `make gpu-check` runs this file in full
there), else on the CPU (the interpreter). Comparisons use tolerances, never bit-exact agreement between the
kernel and the reference (the GPU contracts multiply-adds; summation orders differ)."""

import math

import pytest
import torch

from videogpa.kernels._backend import resolve_backend
from videogpa.kernels.dpo_loss import DiffusionDPOLoss, diffusion_dpo_loss, launch, per_sample_mse
from videogpa.kernels.dpo_loss.reference import STAT_NAMES, reference_dpo_loss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
LOSSES = [("sigmoid", 0.0), ("sigmoid", 0.1), ("hinge", 0.0), ("ipo", 0.0)]


def _inputs(shape, dtype, beta=2.0, scale=1.0):
    policy = (torch.randn(shape) * scale).to(DEVICE, dtype).requires_grad_(True)
    ref = (torch.randn(shape) * scale).to(DEVICE, dtype)
    target = (torch.randn(shape) * scale).to(DEVICE, dtype)
    return policy, ref, target


def _run(backend, policy, ref, target, beta, **kw):
    policy.grad = None
    out = diffusion_dpo_loss(policy, ref, target, beta, backend=backend, **kw)
    out.loss.backward()
    return out, policy.grad.clone()


def _assert_outputs_match(got, want, grad_got, grad_want, dtype):
    for name in STAT_NAMES:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5, msg=name)
    for name in ("logits", "policy_err", "ref_err"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5, msg=name)
    assert grad_got.dtype == dtype
    scale = grad_want.float().abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(grad_got.float(), grad_want.float(), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pairs", [1, 3])
@pytest.mark.parametrize("loss_type,smoothing", LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_matches_reference(dtype, pairs, loss_type, smoothing, weighted):
    shape = (2 * pairs, 3, 5, 7, 11)
    policy, ref, target = _inputs(shape, dtype)
    weight = torch.rand(pairs, device=DEVICE) + 0.5 if weighted else None
    kw = dict(loss_type=loss_type, label_smoothing=smoothing, weight=weight)
    want, grad_want = _run("torch", policy, ref, target, 3.0, **kw)
    got, grad_got = _run("triton", policy, ref, target, 3.0, **kw)
    _assert_outputs_match(got, want, grad_got, grad_want, dtype)


@pytest.mark.parametrize("precomputed", [False, True])
def test_many_pairs_span_several_finalize_blocks(precomputed):
    """B = 37 pairs: the finalize program walks its pairs in several fixed-size blocks."""
    pairs = 37
    policy, ref, target = _inputs((2 * pairs, 3, 13), torch.float32)
    kw = dict(weight=torch.rand(pairs, device=DEVICE) + 0.5, mask=torch.rand(1, 3, 13, device=DEVICE))
    if precomputed:
        ref, kw["ref_err"] = None, per_sample_mse(ref, target, kw["mask"])
    want, grad_want = _run("torch", policy, ref, target, 3.0, **kw)
    got, grad_got = _run("triton", policy, ref, target, 3.0, **kw)
    _assert_outputs_match(got, want, grad_got, grad_want, torch.float32)


MASKS = {
    "first_frame_off": lambda s: torch.cat([torch.zeros(1, 1, 1, 1, 1), torch.ones(1, s[1] - 1, 1, 1, 1)], 1),
    "per_sample_segments": lambda s: torch.rand(s[0], s[1], 1, 1, 1),
    "channel_and_width": lambda s: (torch.rand(1, 1, s[2], 1, s[4]) > 0.4).float(),
    "full": lambda s: torch.rand(s),
    "bool_trailing": lambda s: torch.rand(s[3], s[4]) > 0.5,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_kernel_matches_reference_with_mask(dtype, mask_name):
    shape = (6, 4, 3, 7, 9)
    policy, ref, target = _inputs(shape, dtype)
    mask = MASKS[mask_name](shape).to(DEVICE)
    want, grad_want = _run("torch", policy, ref, target, 2.0, mask=mask)
    got, grad_got = _run("triton", policy, ref, target, 2.0, mask=mask)
    _assert_outputs_match(got, want, grad_got, grad_want, dtype)


@pytest.mark.parametrize("real_dims,copied", [(3, False), (4, True)])
def test_irregular_mask_with_many_broadcast_dims(real_dims, copied):
    """Trailing dims alternating real / broadcast: 3 real dims are 3 terms; 4 cannot be, so the kernel reads a
    contiguous copy."""
    shape = (4, *[2, 3] * real_dims)[:-1]
    policy, ref, target = _inputs(shape, torch.float32)
    mask = torch.rand((1, *[2, 1] * real_dims)[:-1], device=DEVICE)
    view = launch.mask_view(mask, policy.shape)
    assert len(view.terms) == (1 if copied else real_dims)
    assert (view.tensor.data_ptr() != mask.data_ptr()) == copied
    want, grad_want = _run("torch", policy, ref, target, 1.5, mask=mask)
    got, grad_got = _run("triton", policy, ref, target, 1.5, mask=mask)
    _assert_outputs_match(got, want, grad_got, grad_want, torch.float32)


def test_mask_view_collapses_without_copy():
    mask = torch.rand(1, 5, 1, 1, 1)
    view = launch.mask_view(mask, torch.Size((4, 5, 3, 7, 9)))
    assert view.tensor.data_ptr() == mask.data_ptr()
    assert view.terms == ((3 * 7 * 9, 5, 1),)  # one division: (i // 189 % 5)·1


def test_mask_view_drops_outer_broadcast_dims():
    """Wan image-to-video's first-frame mask [1, 1, F, 1, 1]: only the frame index is computed per element."""
    view = launch.mask_view(torch.ones(1, 1, 5, 1, 1), torch.Size((4, 16, 5, 6, 7)))
    assert view.terms == ((42, 5, 1),) and view.sample_stride == 0


def test_mask_view_keeps_one_term_per_moving_dim():
    """Channel-and-width mask [1, 1, C, 1, W]: two terms; a per-sample scalar: none; > 3 terms: a copy."""
    mask = torch.ones(1, 1, 3, 1, 9)
    view = launch.mask_view(mask, torch.Size((4, 2, 3, 7, 9)))
    assert view.terms == ((63, 3, 9), (1, 9, 1)) and view.tensor.data_ptr() == mask.data_ptr()
    scalar = launch.mask_view(torch.ones(4, 1, 1), torch.Size((4, 5, 6)))
    assert scalar.terms == () and scalar.sample_stride == 1
    irregular = launch.mask_view(torch.rand(1, 2, 1, 2, 1, 2, 1, 2), torch.Size((4, 2, 3, 2, 3, 2, 3, 2)))
    assert irregular.terms == ((1, 2 * 3 * 2 * 3 * 2 * 3 * 2, 1),) and irregular.tensor.is_contiguous()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("z", [20.0, 40.0, 80.0])
def test_sigmoid_loss_keeps_its_tail_for_large_logits(backend, z):
    """loss = log(1 + e^-z) ≈ e^-z, not 0, when the pair is already well separated (float64 truth)."""
    target = torch.zeros(2, 4, device=DEVICE)
    # E_θ(w) = 1, E_θ(l) = 4
    policy = torch.tensor([[1.0] * 4, [2.0] * 4], device=DEVICE, requires_grad=True)
    ref = torch.tensor([[2.0] * 4, [1.0] * 4], device=DEVICE)  # E_ref(w) = 4, E_ref(l) = 1: h = 6
    beta = z / 6.0
    out = diffusion_dpo_loss(policy, ref, target, beta, backend=backend)
    out.loss.backward()
    want = math.log1p(math.exp(-z))
    assert out.loss.item() == pytest.approx(want, rel=1e-4)
    # dL/dp_w = β·σ(-z)·2(p - t)/n (a worse winner raises the loss): tiny but not zero
    sigma = math.exp(-z) / (1 + math.exp(-z))
    assert policy.grad[0, 0].item() == pytest.approx(beta * sigma * 2 * 1.0 / 4, rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,masked", [(1001, True), (1000, False), (37, True), (1024, False)])
def test_poisoned_buffers_are_fully_written_across_many_chunks(dtype, n, masked):
    """Each launcher writes every element of its output; multi-chunk, multi-step plans whose aligned ranges
    cross sample boundaries (n not a multiple of 16) and a tensor tail (2B·n not a multiple of 16)."""
    pairs = 3
    policy, ref, target = (t.detach() for t in _inputs((2 * pairs, n), dtype))
    mask = launch.mask_view(torch.rand(1, n, device=DEVICE), policy.shape) if masked else None
    mask_tensor = None if mask is None else mask.tensor
    plan = launch.LaunchPlan(block=64, chunk=192, n_chunks=math.ceil(n / 192))
    partials = torch.full((3, 2 * pairs, plan.n_chunks), float("nan"), device=DEVICE)
    launch.partial_sums_launch(policy, ref, target, mask, plan, partials)()
    assert torch.isfinite(partials).all()
    if masked:
        torch.testing.assert_close(
            partials[2].sum(1), mask_tensor.expand(policy.shape).sum(1), rtol=1e-5, atol=1e-5
        )

    nan = lambda *s: torch.full(s, float("nan"), device=DEVICE)
    outputs = (nan(), nan(len(STAT_NAMES) - 1), nan(pairs), nan(2, 2 * pairs), nan(2 * pairs))
    launch.finalize_launch(partials, None, None, n, 2.0, "sigmoid", 0.0, masked, outputs)()
    for t in outputs:
        assert torch.isfinite(t).all()
    errors, scale = outputs[3], outputs[4]
    torch.testing.assert_close(errors[0], per_sample_mse(policy, target, mask_tensor), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(errors[1], per_sample_mse(ref, target, mask_tensor), rtol=1e-5, atol=1e-6)

    grad = torch.full_like(policy, float("nan"))
    launch.grad_launch(policy, target, mask, scale, torch.ones((), device=DEVICE), plan, grad)()
    p = policy.clone().requires_grad_(True)
    reference_dpo_loss(p, ref, target, 2.0, "sigmoid", 0.0, None, mask_tensor, None)["loss"].backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(grad.float(), p.grad.float(), rtol=tol, atol=tol * p.grad.float().abs().max())


def test_upstream_gradient_scales_the_kernel_gradient():
    policy, ref, target = _inputs((4, 3, 17), torch.float32)
    out = diffusion_dpo_loss(policy, ref, target, 1.0, backend="triton")
    (out.loss * 3.5).backward()
    g3 = policy.grad.clone()
    policy.grad = None
    diffusion_dpo_loss(policy, ref, target, 1.0, backend="triton").loss.backward()
    torch.testing.assert_close(g3, 3.5 * policy.grad)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_precomputed_reference_errors_equal_online_reference(backend):
    policy, ref, target = _inputs((6, 2, 9, 5), torch.float32)
    mask = torch.rand(1, 2, 9, 1, device=DEVICE)
    online, g_online = _run(backend, policy, ref, target, 4.0, mask=mask)
    ref_err = per_sample_mse(ref, target, mask)
    pre, g_pre = _run(backend, policy, None, target, 4.0, mask=mask, ref_err=ref_err)
    torch.testing.assert_close(pre.loss, online.loss)
    torch.testing.assert_close(g_pre, g_online)


def test_kernel_is_deterministic():
    policy, ref, target = _inputs((6, 3, 31, 29), torch.bfloat16)
    a, ga = _run("triton", policy, ref, target, 50.0)
    b, gb = _run("triton", policy, ref, target, 50.0)
    assert torch.equal(a.loss, b.loss) and torch.equal(ga, gb)


def test_reference_gradcheck_float64():
    policy = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    ref, target = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    mask = torch.rand(1, 2, 3, dtype=torch.float64)
    weight = torch.rand(2, dtype=torch.float64)
    for loss_type, smoothing in LOSSES:

        def f(p, loss_type=loss_type, smoothing=smoothing):
            # per_sample_mse works in fp32 by contract; gradcheck the same formula in float64.
            e = ((p - target) ** 2 * mask).flatten(1).sum(1) / mask.expand_as(p).flatten(1).sum(1)
            r = ((ref - target) ** 2 * mask).flatten(1).sum(1) / mask.expand_as(p).flatten(1).sum(1)
            h = (r[:2] - e[:2]) - (r[2:] - e[2:])
            from videogpa.kernels.dpo_loss.reference import pair_loss

            return (pair_loss(h, 1.7, loss_type, smoothing) * weight).mean()

        assert torch.autograd.gradcheck(f, (policy,))


def test_reference_loss_formulas_against_closed_form():
    """One pair, errors known by construction: check each loss type's formula by hand."""
    target = torch.zeros(2, 4, device=DEVICE)
    policy = torch.tensor([[1.0] * 4, [2.0] * 4], device=DEVICE)  # E_θ(w) = 1, E_θ(l) = 4
    ref = torch.tensor([[2.0] * 4, [1.0] * 4], device=DEVICE)  # E_ref(w) = 4, E_ref(l) = 1
    h = (4 - 1) - (1 - 4)  # 6
    beta = 0.25
    for backend in ("torch", "triton"):
        out = lambda lt, ls=0.0, backend=backend: diffusion_dpo_loss(
            policy, ref, target, beta, loss_type=lt, label_smoothing=ls, backend=backend
        )
        z = beta * h
        sig = lambda x: 1 / (1 + math.exp(-x))
        assert out("sigmoid").loss.item() == pytest.approx(-math.log(sig(z)), rel=1e-6)
        expected = -0.9 * math.log(sig(z)) - 0.1 * math.log(sig(-z))
        assert out("sigmoid", 0.1).loss.item() == pytest.approx(expected, rel=1e-6)
        assert out("hinge").loss.item() == pytest.approx(max(0.0, 1 - z), abs=1e-7)
        assert out("ipo").loss.item() == pytest.approx((h - 1 / (2 * beta)) ** 2, rel=1e-6)
        o = out("sigmoid")
        assert o.accuracy.item() == 1.0 and o.reward_margin.item() == pytest.approx(3.0)
        assert o.policy_err_w.item() == pytest.approx(1.0) and o.ref_err_l.item() == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_large_beta_and_errors_stay_finite(backend):
    policy, ref, target = _inputs((4, 3, 50), torch.float32, scale=30.0)
    for loss_type in ("sigmoid", "hinge", "ipo"):
        out, grad = _run(backend, policy, ref, target, 1e4, loss_type=loss_type)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all(), loss_type
        assert abs(out.logits_mean.item()) > 100  # saturated regime really reached


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("where", ["policy", "target", "ref"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_give_non_finite_loss(backend, where, bad):
    tensors = dict(zip(("policy", "ref", "target"), _inputs((4, 2, 7), torch.bfloat16)))
    with torch.no_grad():
        tensors[where].view(-1)[5] = bad
    out = diffusion_dpo_loss(tensors["policy"], tensors["ref"], tensors["target"], 2.0, backend=backend)
    assert not torch.isfinite(out.loss)


def test_module_wrapper_matches_function():
    policy, ref, target = _inputs((4, 3, 8), torch.float32)
    module = DiffusionDPOLoss(beta=5.0, loss_type="sigmoid", label_smoothing=0.05)
    assert "beta=5.0" in repr(module)
    got = module(policy, ref, target)
    want = diffusion_dpo_loss(policy, ref, target, 5.0, label_smoothing=0.05)
    torch.testing.assert_close(got.loss, want.loss)


def test_auto_backend_picks_reference_on_cpu_and_triton_needs_interpreter(monkeypatch):
    x = torch.zeros(2, 3)
    assert resolve_backend("auto", x, op="t") == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        diffusion_dpo_loss(x, x, x, 1.0, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        diffusion_dpo_loss(x, x, x, 1.0, backend="cuda")


def test_runs_inside_torch_compile():
    policy, ref, target = _inputs((4, 3, 8), torch.float32)
    compiled = torch.compile(
        lambda p: diffusion_dpo_loss(p, ref, target, 2.0, backend="triton").loss, backend="eager"
    )
    torch.testing.assert_close(compiled(policy), diffusion_dpo_loss(policy, ref, target, 2.0).loss)


def _bad_calls():
    ok = torch.randn(4, 3, 5)
    yield "shape", dict(target=torch.randn(4, 3, 6)), "target has shape"
    yield (
        "odd batch",
        dict(policy=torch.randn(3, 3, 5), ref=torch.randn(3, 3, 5), target=torch.randn(3, 3, 5)),
        "2B > 0",
    )
    empty = torch.randn(0, 3, 5)
    yield "B = 0", dict(policy=empty, ref=empty, target=empty), "2B > 0"
    yield "integer dtype", dict(policy=torch.ones(4, 3, 5, dtype=torch.int64)), "floating"
    yield "wrong device", dict(target=torch.empty(4, 3, 5, device="meta")), "is on meta"
    yield (
        "no trailing dim",
        dict(policy=torch.randn(4), ref=torch.randn(4), target=torch.randn(4)),
        "trailing",
    )
    yield "weight shape", dict(weight=torch.ones(3)), "weight must have shape"
    yield "mask shape", dict(mask=torch.ones(4, 2, 5)), "does not broadcast"
    yield "beta", dict(beta=0.0), "beta must be"
    yield "beta nan", dict(beta=float("nan")), "beta must be"
    yield "loss type", dict(loss_type="kto"), "loss_type must be"
    yield "smoothing range", dict(label_smoothing=0.7), "label_smoothing must be"
    yield "smoothing hinge", dict(loss_type="hinge", label_smoothing=0.1), "applies only"
    yield "both refs", dict(ref_err=torch.zeros(4)), "exactly one"
    yield "ref_err shape", dict(ref=None, ref_err=torch.zeros(2)), "ref_err must have shape"
    del ok


@pytest.mark.parametrize("case", list(_bad_calls()), ids=lambda c: c[0])
def test_bad_input_raises_clear_value_error(case):
    _, overrides, message = case
    args = dict(policy=torch.randn(4, 3, 5), ref=torch.randn(4, 3, 5), target=torch.randn(4, 3, 5), beta=1.0)
    args.update(overrides)
    policy, ref, target, beta = (args.pop(k) for k in ("policy", "ref", "target", "beta"))
    for backend in ("torch", "triton"):
        with pytest.raises(ValueError, match=message):
            diffusion_dpo_loss(policy, ref, target, beta, backend=backend, **args)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(launch.AOT_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernel_matches_reference_at_trainer_shapes(case, dtype):
    """The compiled variants the AOT check inspects, on the GPU, against the reference (fresh inputs)."""
    shape, make_mask = launch.AOT_CASES[case]
    policy, ref, target = (t.detach().cuda() for t in _inputs(shape, dtype))
    policy.requires_grad_(True)
    mask = None if make_mask is None else torch.rand(make_mask(shape).shape, device="cuda") > 0.3
    if make_mask is not None and make_mask(shape).dtype != torch.bool:
        mask = mask.float()
    want, grad_want = _run("torch", policy, ref, target, 2.0, mask=mask)
    got, grad_got = _run("triton", policy, ref, target, 2.0, mask=mask)
    _assert_outputs_match(got, want, grad_got, grad_want, dtype)


@pytest.mark.gpu
def test_forward_and_backward_replay_in_a_cuda_graph():
    policy, ref, target = (t.detach().cuda() for t in _inputs((8, 4, 16, 30, 45), torch.bfloat16))
    policy.requires_grad_(True)

    def step():
        out = diffusion_dpo_loss(policy, ref, target, 2.0)
        return out.loss, torch.autograd.grad(out.loss, policy)[0]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compiles the kernels and fills the plan cache
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, grad = step()
    with torch.no_grad():
        policy.copy_(torch.randn_like(policy))
    graph.replay()
    torch.cuda.synchronize()
    want_loss, want_grad = step()
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)
