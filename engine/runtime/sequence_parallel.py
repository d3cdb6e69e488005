"""Ulysses sequence parallelism for the DPO step: each sample's video tokens split over a group of S ranks.

The transformer's embeddings run whole on every rank of the group (they are cheap and per-sample); before the
first block the video tokens are split into S contiguous chunks (uneven when S does not divide the token
count), each rank runs every block on its chunk, and after the last block the chunks are gathered again, so
the final projection, the prediction and the fused DPO loss are computed whole and alike on every rank of the
group. Inside each block only the self-attention mixes tokens: there, an all-to-all turns the
sequence-sharded q, k, v [B, H, L/S, D] into head-sharded ones [B, H/S, L, D], attention runs over the whole
sequence for H/S heads, and the inverse all-to-all brings the output back (DeepSpeed-Ulysses, Jacobs et al.
2023). Tokens the attention prepends from a replicated stream (CogVideoX's text) are sliced by heads on the
way in and gathered by heads on the way out. Cross-attention (Wan's text) needs no exchange: each video token
attends to the whole text on its own rank.

Gradients: every rank back-propagates the same whole loss; a gather's backward sums the ranks' gradients and
keeps its own chunk, a split's backward pads with zeros, an all-to-all's backward is the inverse all-to-all.
Each rank's parameter gradient is then S times its share of the unsplit gradient, and DeepSpeed's average
over all S·DP ranks gives exactly the data-parallel mean of unsplit gradients (tested against one rank).

Where the tokens enter and leave the blocks and which attention is exchanged is the family's
`SequenceParallelPlan` (engine/models/base.py). The self-attention's call of PyTorch's
scaled_dot_product_attention is intercepted with a TorchFunctionMode entered for that module's forward only,
so the family's own attention processor (projections, norms, rotary embedding) runs unchanged. Why not
diffusers' context-parallel hooks: they cover Wan only (no plan for CogVideoX), need the token count to be a
multiple of S (CogVideoX-5B's 17,550 tokens are not, for S = 4), and need a device mesh per backend; this one
mechanism serves every family and runs on gloo for the CPU tests.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from videogpa.engine.models.base import ModelAdapter, SequenceParallelPlan


@dataclass
class SequenceGroup:
    """The ranks that share each sample's tokens, and the split of the current sequence over them."""

    group: object  # torch process group
    size: int
    rank: int
    lengths: list[int] = field(default_factory=list)  # tokens per rank of the sequence in flight

    def split(self, total: int) -> None:
        """Split a sequence of `total` tokens: the first total % size ranks take one token more."""
        base, extra = divmod(total, self.size)
        self.lengths = [base + (r < extra) for r in range(self.size)]

    @property
    def total(self) -> int:
        return sum(self.lengths)

    @property
    def start(self) -> int:
        return sum(self.lengths[: self.rank])

    def local(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's chunk of a whole sequence along `dim` (backward: zeros elsewhere)."""
        return x.narrow(dim, self.start, self.lengths[self.rank])


class _AllToAll(torch.autograd.Function):
    """all_to_all_single of flat tensors with per-rank sizes; the backward is the inverse exchange."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, send: list[int], receive: list[int]) -> torch.Tensor:
        ctx.group, ctx.send, ctx.receive = group, send, receive
        out = x.new_empty(sum(receive))
        dist.all_to_all_single(out, x.contiguous(), receive, send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _AllToAll.apply(grad.contiguous(), ctx.group, ctx.receive, ctx.send), None, None, None


class _GatherChunks(torch.autograd.Function):
    """Each rank's chunk [start, start + n) along dim placed into the whole tensor, summed over the group; the
    backward sums the ranks' gradients of the whole and keeps this rank's chunk."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, start: int, total: int, group) -> torch.Tensor:
        ctx.dim, ctx.start, ctx.n, ctx.group = dim, start, x.shape[dim], group
        shape = list(x.shape)
        shape[dim] = total
        whole = x.new_zeros(shape)
        whole.narrow(dim, start, ctx.n).copy_(x)
        dist.all_reduce(whole, group=group)
        return whole

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(ctx.dim, ctx.start, ctx.n), None, None, None, None


def gather_tokens(x: torch.Tensor, dim: int, sg: SequenceGroup) -> torch.Tensor:
    """The whole sequence from every rank's chunk along `dim`."""
    return _GatherChunks.apply(x, dim, sg.start, sg.total, sg.group)


def tokens_to_heads(x: torch.Tensor, sg: SequenceGroup) -> torch.Tensor:
    """[B, H, L_r, D] (this rank's tokens, all heads) -> [B, H/S, L, D] (all tokens, this rank's heads)."""
    b, h, n, d = x.shape
    per = h // sg.size
    send = x.reshape(b, sg.size, per, n, d).transpose(0, 1).reshape(-1)  # grouped by destination rank
    chunk = b * per * d
    flat = _AllToAll.apply(send, sg.group, [chunk * n] * sg.size, [chunk * m for m in sg.lengths])
    parts = flat.split([chunk * m for m in sg.lengths])
    return torch.cat([p.view(b, per, m, d) for p, m in zip(parts, sg.lengths)], dim=2)


def heads_to_tokens(x: torch.Tensor, sg: SequenceGroup) -> torch.Tensor:
    """The inverse of tokens_to_heads: [B, H/S, L, D] -> [B, H, L_r, D]."""
    b, per, _, d = x.shape
    n, chunk = sg.lengths[sg.rank], b * per * d
    send = torch.cat([p.reshape(-1) for p in x.split(sg.lengths, dim=2)])
    flat = _AllToAll.apply(send, sg.group, [chunk * m for m in sg.lengths], [chunk * n] * sg.size)
    return flat.view(sg.size, b, per, n, d).transpose(0, 1).reshape(b, per * sg.size, n, d)


def ulysses_attention(
    q, k, v, sg: SequenceGroup, prefix: int, attend=F.scaled_dot_product_attention, **kwargs
):
    """Attention over the whole sequence for q, k, v [B, H, P + L_r, D] holding P replicated prefix tokens and
    this rank's L_r video tokens; returns [B, H, P + L_r, D] like the unsplit attention's rows."""
    if kwargs.get("attn_mask") is not None or kwargs.get("is_causal") or kwargs.get("dropout_p"):
        raise ValueError(
            "sequence parallelism: the self-attention must be unmasked, non-causal, without dropout"
        )
    heads = q.shape[1]
    if k.shape[1] != heads or heads % sg.size:
        raise ValueError(
            f"sequence parallelism: {heads} attention heads are not divisible by the group of {sg.size}"
        )
    lo, hi = sg.rank * heads // sg.size, (sg.rank + 1) * heads // sg.size

    def exchange(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, lo:hi, :prefix], tokens_to_heads(t[:, :, prefix:], sg)], dim=2)

    out = attend(exchange(q), exchange(k), exchange(v), **kwargs)
    video = heads_to_tokens(out[:, :, prefix:], sg)
    if not prefix:
        return video
    by_heads = SequenceGroup(sg.group, sg.size, sg.rank, [hi - lo] * sg.size)
    return torch.cat([gather_tokens(out[:, :, :prefix], 1, by_heads), video], dim=2)


SDPA_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class _UlyssesMode(TorchFunctionMode):
    """Inside one self-attention forward: its scaled_dot_product_attention call becomes ulysses_attention."""

    def __init__(self, sg: SequenceGroup, prefix: int):
        super().__init__()
        self.sg, self.prefix, self.calls = sg, prefix, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.calls += 1
            given = {**dict(zip(SDPA_ARGUMENTS, args)), **kwargs}
            q, k, v = (given.pop(name) for name in SDPA_ARGUMENTS[:3])
            return ulysses_attention(q, k, v, self.sg, self.prefix, **given)
        return func(*args, **kwargs)


def _token_arg(value, dim: int, ndim: int, sg: SequenceGroup, name: str):
    """This rank's chunk of a per-token block argument (a tensor or a tuple of them) of the given ndim."""
    if isinstance(value, (tuple, list)):
        return type(value)(_token_arg(v, dim, ndim, sg, name) for v in value)
    if not isinstance(value, torch.Tensor) or value.ndim != ndim:
        return value
    if value.shape[dim] != sg.total:
        raise ValueError(
            f"sequence parallelism: block argument {name!r} has {value.shape[dim]} tokens along dim "
            f"{dim}, the video has {sg.total}"
        )
    return sg.local(value, dim)


def _install(blocks: nn.ModuleList, plan: SequenceParallelPlan, sg: SequenceGroup) -> None:
    signature = inspect.signature(blocks[0].forward)

    def split_inputs(module, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        if module is blocks[0]:
            hidden = bound.arguments[plan.hidden_states]
            sg.split(hidden.shape[1])
            bound.arguments[plan.hidden_states] = sg.local(hidden, 1)
        for name, dim, ndim in plan.token_args:
            if name in bound.arguments:
                bound.arguments[name] = _token_arg(bound.arguments[name], dim, ndim, sg, name)
        return bound.args, bound.kwargs

    def gather_output(module, args, output):
        if plan.output_index is None:
            return gather_tokens(output, 1, sg)
        out = list(output)
        out[plan.output_index] = gather_tokens(out[plan.output_index], 1, sg)
        return type(output)(out)

    def enter_attention(module, args, kwargs):
        prefix = 0 if plan.replicated_prefix is None else kwargs[plan.replicated_prefix].shape[1]
        module._ulysses = _UlyssesMode(sg, prefix)
        module._ulysses.__enter__()

    def leave_attention(module, args, kwargs, output):
        mode = module._ulysses
        mode.__exit__(None, None, None)
        if output is not None and mode.calls != 1:  # (None: the forward raised, or a recompute stopped early)
            raise ValueError(
                f"sequence parallelism: {type(module).__name__} called torch's scaled_dot_product_"
                f"attention {mode.calls} times, expected once (a non-native attention backend?)"
            )

    for block in blocks:
        block.register_forward_pre_hook(split_inputs, with_kwargs=True)
        attention = getattr(block, plan.self_attention)
        attention.register_forward_pre_hook(enter_attention, with_kwargs=True)
        attention.register_forward_hook(leave_attention, with_kwargs=True, always_call=True)
    blocks[-1].register_forward_hook(gather_output)


def enable_sequence_parallel(
    model: nn.Module, adapter: ModelAdapter, group, size: int, rank: int
) -> nn.Module:
    """Split every diffusers transformer inside `model` (one, or a family's several experts) over the
    sequence-parallel group; returns the same model. A ValueError if the family has no plan or its head count
    is not divisible by the group."""
    from diffusers.configuration_utils import ConfigMixin

    plan = adapter.sequence_parallel_plan
    if plan is None:
        raise ValueError(
            f"config key 'distributed.sequence_parallel': model {adapter.name!r} has no sequence-"
            "parallel plan; use 1"
        )
    found = [
        m for m in model.modules() if isinstance(m, ConfigMixin) and hasattr(m, adapter.blocks_attribute)
    ]
    for transformer in found:
        heads = transformer.config.num_attention_heads
        if heads % size:
            raise ValueError(
                f"config key 'distributed.sequence_parallel' ({size}) must divide the model's "
                f"{heads} attention heads"
            )
        _install(getattr(transformer, adapter.blocks_attribute), plan, SequenceGroup(group, size, rank))
    if not found:
        raise ValueError(
            f"sequence parallelism: no {adapter.blocks_attribute!r} transformer inside the model"
        )
    return model
