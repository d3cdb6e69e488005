"""On a CUDA device: the kernel paths no GPU had run before, each against the plain-PyTorch reference on the
same GPU (tolerances, never bit-exact: the GPU contracts multiply-adds and sums in another order).

- the fused reprojection error (resolve_kernel with COMPUTE_ERROR, what scoring uses) at the paper's size;
- the precomputed-reference DPO path, fp16, hinge / IPO / label smoothing / per-pair weights and per-sample
  masks, at a trainer's latent shape;
- base pointers that are not 16-byte aligned (views at an odd element offset): Triton compiles another
  variant for them (no alignment assumed), which must give the same numbers.
"""

import pytest
import torch

from videogpa.kernels.dpo_loss import diffusion_dpo_loss, per_sample_mse
from videogpa.kernels.dpo_loss.reference import STAT_NAMES
from videogpa.kernels.reproject import render_point_cloud, reprojection_error

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
SHAPE = (4, 13, 16, 30, 45)  # 2 pairs of CogVideoX-like latents at a quarter of the area: 281 k per sample


def _inputs(shape=SHAPE, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda: torch.randn(shape, generator=g).to(CUDA, dtype)
    return make().requires_grad_(True), make(), make()


def _run(backend, policy, ref, target, beta=2.0, **kw):
    policy.grad = None
    out = diffusion_dpo_loss(policy, ref, target, beta, backend=backend, **kw)
    out.loss.backward()
    return out, policy.grad.clone()


def _close(got, want, grad_got, grad_want, low_precision: bool):
    for name in (*STAT_NAMES, "logits", "policy_err", "ref_err"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5, msg=name)
    assert grad_got.dtype == grad_want.dtype
    tol = 1e-2 if low_precision else 1e-5
    scale = grad_want.float().abs().max().item()
    torch.testing.assert_close(grad_got.float(), grad_want.float(), rtol=tol, atol=tol * scale)


def _both(policy, ref, target, low_precision=True, **kw):
    want, grad_want = _run("torch", policy, ref, target, **kw)
    got, grad_got = _run("triton", policy, ref, target, **kw)
    _close(got, want, grad_got, grad_want, low_precision)
    return got


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_precomputed_reference_errors(dtype, masked):
    policy, ref, target = _inputs(dtype=dtype)
    mask = None
    if masked:  # Wan image-to-video: the first latent frame left out
        mask = torch.ones(1, SHAPE[1], 1, 1, 1, device=CUDA)
        mask[:, 0] = 0
    ref_err = per_sample_mse(ref, target, mask)
    got = _both(policy, None, target, dtype != torch.float32, mask=mask, ref_err=ref_err)
    online, _ = _run("triton", policy, ref, target, mask=mask)
    torch.testing.assert_close(got.loss, online.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "loss_type,smoothing,weighted",
    [("sigmoid", 0.0, True), ("sigmoid", 0.1, False), ("hinge", 0.0, True), ("ipo", 0.0, True)],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_loss_types_smoothing_and_weights(loss_type, smoothing, weighted, dtype):
    policy, ref, target = _inputs(dtype=dtype, seed=1)
    weight = torch.rand(SHAPE[0] // 2, device=CUDA) + 0.5 if weighted else None
    # β small enough that hinge and sigmoid are not saturated (their gradients are not all 0)
    _both(policy, ref, target, beta=0.5, loss_type=loss_type, label_smoothing=smoothing, weight=weight)


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda s: torch.rand(s[0], s[1], 1, 1, 1, device=CUDA),  # per sample and frame
        lambda s: torch.rand(s[0], 1, 1, s[3], s[4], device=CUDA) > 0.3,  # per sample and pixel (bool)
        lambda s: torch.rand(s, device=CUDA),  # everything
    ],
    ids=["sample_frame", "sample_pixel_bool", "full"],
)
def test_per_sample_masks(make_mask):
    policy, ref, target = _inputs(seed=2)
    _both(policy, ref, target, mask=make_mask(SHAPE))


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values in a view starting one element into a larger buffer (not 16-byte aligned)."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buffer[1:].view(t.shape)
    view.copy_(t.detach())
    assert view.data_ptr() % 16 != 0 and view.is_contiguous()
    return view


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dpo_loss_with_misaligned_base_pointers(dtype):
    policy, ref, target = _inputs(dtype=dtype, seed=3)
    mask = torch.rand(SHAPE[0], SHAPE[1], 1, 1, 1, device=CUDA)
    want, grad_want = _run("torch", policy, ref, target, mask=mask)
    odd_policy = _misaligned(policy).requires_grad_(True)
    got, grad_got = _run("triton", odd_policy, _misaligned(ref), _misaligned(target), mask=_misaligned(mask))
    _close(got, want, grad_got, grad_want, dtype != torch.float32)
    ref_err = _misaligned(per_sample_mse(ref, target, mask))
    pre, _ = _run("triton", odd_policy, None, _misaligned(target), mask=mask, ref_err=ref_err)
    torch.testing.assert_close(pre.loss, want.loss, rtol=1e-4, atol=1e-5)


def _scene(n_views: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    n = n_views * size * size
    depth = 2.0 + 2.0 * torch.rand(n, generator=g)
    u, v = torch.rand(n, generator=g) * size, torch.rand(n, generator=g) * size
    focal = 0.9 * size
    points = torch.stack([(u - size / 2) * depth / focal, (v - size / 2) * depth / focal, depth], dim=1)
    colors = torch.rand(n, 3, generator=g)
    intr = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]).repeat(
        n_views, 1, 1
    )
    angle = torch.linspace(0.0, 0.2, n_views)
    extr = torch.zeros(n_views, 3, 4)
    extr[:, 0, 0], extr[:, 0, 2], extr[:, 1, 1] = angle.cos(), angle.sin(), 1.0
    extr[:, 2, 0], extr[:, 2, 2] = -angle.sin(), angle.cos()
    frames = torch.rand(n_views, 3, size, size, generator=g)
    return [t.to(CUDA) for t in (points, colors, intr, extr, frames)]


@pytest.mark.parametrize("frame_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_reprojection_error_at_the_papers_size(frame_dtype):
    """T = 10 views of 518² (2.68 M points): the fused error kernel against the reference render's error."""
    points, colors, intr, extr, frames = _scene(10, 518, seed=4)
    frames = frames.to(frame_dtype)
    want = reprojection_error(points, colors, intr, extr, frames, backend="torch")
    got = reprojection_error(points, colors, intr, extr, frames, backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
    assert torch.equal(got, reprojection_error(points, colors, intr, extr, frames, backend="triton"))


def test_reprojection_with_misaligned_base_pointers():
    points, colors, intr, extr, frames = _scene(3, 96, seed=5)
    want_images, want_hit = render_point_cloud(points, colors, intr, extr, 96, 96, backend="torch")
    odd = [_misaligned(t) for t in (points, colors, intr, extr)]
    images, hit = render_point_cloud(*odd, 96, 96, backend="triton")
    differing = ((images != want_images).any(dim=1) | (hit != want_hit)).float().mean().item()
    assert differing <= 1e-3
    want = reprojection_error(points, colors, intr, extr, frames, backend="torch")
    got = reprojection_error(*odd, _misaligned(frames), backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)
