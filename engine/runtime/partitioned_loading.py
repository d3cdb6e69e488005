"""Loading a transformer so that no rank ever holds a full copy (ZeRO-3): the model is built inside
DeepSpeed's `zero.Init` (each module's parameters are split over the ranks as soon as the module is
constructed), then each rank reads from the checkpoint's safetensors files only the elements of its own
partitions (plain file reads, no memory map). The same for the `separate` reference, always a ZeRO-3 inference
engine. ZeRO stages below 3, and the built-in tiny model (no files), load whole as before."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from torch import nn

from videogpa.engine.io.safetensors_ranges import TensorEntry, read_header, read_range
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.common import (
    checked_transformer_folder,
    safetensors_weight_files,
)


def partitions_parameters(ds_config: dict) -> bool:
    """Whether a DeepSpeed config partitions the parameters themselves (ZeRO stage 3)."""
    return ds_config.get("zero_optimization", {}).get("stage") == 3


def load_transformer(
    adapter: ModelAdapter, path: str | Path | None, dtype: torch.dtype, ds_config: dict
) -> nn.Module:
    """The adapter's transformer for a DeepSpeed engine made with `ds_config`: under ZeRO-3 from a checkpoint
    folder, built partitioned and filled rank by rank; otherwise whole (adapter.load_transformer)."""
    if path is None or not partitions_parameters(ds_config):
        model = adapter.load_transformer(path, dtype)
    else:  # each diffusers model the adapter's transformer is made of (one, or Wan 2.2 A14B's two experts)
        model = adapter.load_transformer(
            path, dtype, loader=functools.partial(load_partitioned, ds_config=ds_config)
        )
    check_weight_dtypes(model, dtype, path or "the built-in model")
    return model


# torch.nn.init's in-place initialisers, which modules' constructors call to draw their weights
INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def _weights_left_undrawn():
    """Inside, torch.nn.init's initialisers do nothing and the global generators end as they were on entry:
    the checkpoint overwrites every weight, so drawing them would only cost time and change what comes next
    (e.g. the LoRA initialisation) compared with a plain load."""
    saved = {name: getattr(torch.nn.init, name) for name in INITIALISERS}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        for name in INITIALISERS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def load_partitioned(
    cls: type[nn.Module], path: str | Path, dtype: torch.dtype, ds_config: dict
) -> nn.Module:
    """A diffusers `cls` from a local folder, built under zero.Init(ds_config) in `dtype` (its partitions
    placed where the config says: the accelerator, or the CPU with parameter offload) and filled from the
    folder's safetensors weights, each rank reading only its own elements."""
    import deepspeed

    folder = checked_transformer_folder(cls, path)
    files = safetensors_weight_files(folder)
    config = _config_building(ds_config, dtype)
    # exited in reverse: zero.Init first, then nn.Module's subclassing hook put back
    with (
        _weights_left_undrawn(),
        _module_subclassing_restored(),
        deepspeed.zero.Init(config_dict_or_path=config),
    ):
        model = cls.from_config(cls.load_config(folder))
    check_weight_dtypes(model, dtype, folder)
    fill_from_safetensors(model, files, folder)
    model.register_to_config(_name_or_path=str(folder))  # as from_pretrained records it
    return model.eval()


@contextlib.contextmanager
def _module_subclassing_restored():
    """On exit, nn.Module's __init_subclass__ as it was on entry. zero.Init (DeepSpeed 0.19) patches it and on
    exit sets the inherited object.__init_subclass__, bound to Module, into Module's own dict: every nn.Module
    subclass defined afterwards skips its other bases' __init_subclass__, so a
    `class M(nn.Module, Generic[T])` (kornia's models, which diffusers' guiders import) loses its type
    parameters and `M[X]` raises."""
    had = "__init_subclass__" in vars(nn.Module)
    saved = vars(nn.Module).get("__init_subclass__")
    try:
        yield
    finally:
        if had:
            nn.Module.__init_subclass__ = saved
        elif "__init_subclass__" in vars(nn.Module):
            delattr(nn.Module, "__init_subclass__")


def _config_building(ds_config: dict, dtype: torch.dtype) -> dict:
    """`ds_config` with its bf16/fp16 switches saying `dtype`, the one way to choose zero.Init's dtype that
    holds on every CPU: DeepSpeed 0.19's Init ignores an explicit `dtype=` when the accelerator reports no
    fp16 support (`dtype or fp16 if fp16_supported else bf16 ...` in Init._set_dtype), so fp32 came out as
    bf16 on CPUs without mkldnn fp16; with dtype=None it follows the config's switches."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"partitioned loading builds fp32, bf16 or fp16 weights, not {dtype}")
    return {
        **ds_config,
        "bf16": {**ds_config.get("bf16", {}), "enabled": dtype == torch.bfloat16},
        "fp16": {**ds_config.get("fp16", {}), "enabled": dtype == torch.float16},
    }


def check_weight_dtypes(model: nn.Module, dtype: torch.dtype, origin: str | Path) -> None:
    """A ValueError naming the first weight of `model` (loaded from `origin`) whose dtype is not `dtype`;
    fp32 is also accepted in the modules the model's class keeps in fp32 (diffusers' _keep_in_fp32_modules).
    For a ZeRO-3 parameter, the dtype of this rank's partition is checked."""
    kept = {
        name for module in model.modules() for name in getattr(module, "_keep_in_fp32_modules", None) or ()
    }
    for name, param in model.named_parameters():
        actual = getattr(param, "ds_tensor", param).dtype
        if actual == dtype or (actual == torch.float32 and kept.intersection(name.split("."))):
            continue
        raise ValueError(
            f"weight {name!r} of the transformer from {str(origin)!r} is {actual}, expected {dtype} "
            "(train.precision): the loader built it in another dtype"
        )


def fill_from_safetensors(model: nn.Module, files: dict[str, Path], folder: Path) -> None:
    """Every weight of a zero.Init-built model from its file: parameters into this rank's partition, the
    (small, unpartitioned) persistent buffers whole; a ValueError naming missing or unexpected weights."""
    import deepspeed

    names = set(model.state_dict())
    missing, unexpected = sorted(names - files.keys()), sorted(files.keys() - names)
    if missing or unexpected:
        raise ValueError(
            f"the weights in {str(folder)!r} do not match a {type(model).__name__} built from its "
            f"config.json: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})"
        )
    headers = {file: read_header(file) for file in sorted(set(files.values()))}
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    main = not deepspeed.comm.is_initialized() or deepspeed.comm.get_rank() == 0
    from tqdm import tqdm

    for name in tqdm(sorted(names), desc="loading weights", disable=not main, leave=False):
        entry = headers[files[name]].get(name)
        if entry is None:
            raise ValueError(f"{str(files[name])!r} has no tensor {name!r} (its index says it does)")
        with torch.no_grad():
            if name in params:
                _fill_partition(params[name], entry, name)
            else:
                _check_shape(name, entry, tuple(buffers[name].shape))
                buffers[name].copy_(read_range(entry, 0, entry.numel).view(entry.shape))


def _check_shape(name: str, entry: TensorEntry, shape: tuple[int, ...]) -> None:
    if entry.shape != shape:
        raise ValueError(
            f"{str(entry.path)!r}: tensor {name!r} has shape {list(entry.shape)}, the model "
            f"expects {list(shape)}"
        )


def _fill_partition(param: nn.Parameter, entry: TensorEntry, name: str) -> None:
    """This rank's ZeRO-3 partition of a parameter from its file: partition k of a world of n holds flattened
    elements [k·s, (k+1)·s) with s = ceil(numel / n), zero-padded at the end (DeepSpeed's layout)."""
    import deepspeed
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum

    _check_shape(name, entry, tuple(param.ds_shape))
    part = param.ds_tensor
    if (
        getattr(param, "ds_secondary_tensor", None) is not None
        or part.final_location == OffloadDeviceEnum.nvme
    ):
        raise ValueError(
            f"parameter {name!r}: partitioned loading supports plain ZeRO-3 partitions (on the "
            "accelerator or the CPU), not hpZ secondary partitions or NVMe offload"
        )
    size = part.ds_numel
    start = size * deepspeed.comm.get_rank(group=param.ds_process_group)
    count = max(0, min(size, param.ds_numel - start))
    part[:count].copy_(read_range(entry, start, count))
    part[count:].zero_()
