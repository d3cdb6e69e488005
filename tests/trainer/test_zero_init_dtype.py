"""ZeRO-3 partitioned loading builds the weights in the dtype asked for, whatever the CPU: DeepSpeed 0.19's
zero.Init turns an explicit fp32 into bf16 when the accelerator reports no fp16 support (AMD EPYC without
mkldnn fp16). Both answers of that capability are forced here, so the test does not depend on CI's CPU."""

import typing

import pytest
import torch
from safetensors.torch import load_file

from tests.models.model_builders import cogvideox_t2v
from videogpa.engine.runtime.distributed import init_distributed
from videogpa.engine.runtime.partitioned_loading import check_weight_dtypes, load_partitioned

DS_CONFIG = {
    "train_micro_batch_size_per_gpu": 1,
    "zero_optimization": {"stage": 3},
    "bf16": {"enabled": False},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero_init") / "transformer"
    cogvideox_t2v().save_pretrained(folder, safe_serialization=True)
    init_distributed()
    return folder


@pytest.mark.parametrize("fp16_supported", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_partitioned_weights_have_the_configured_dtype(saved, monkeypatch, fp16_supported, dtype):
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: fp16_supported)
    from diffusers import CogVideoXTransformer3DModel

    config = {**DS_CONFIG, "bf16": {"enabled": dtype == torch.bfloat16}}
    model = load_partitioned(CogVideoXTransformer3DModel, saved, dtype, config)
    weights = load_file(str(saved / "diffusion_pytorch_model.safetensors"))
    for name, param in model.named_parameters():
        assert param.ds_tensor.dtype == dtype, name
        whole = weights[name].to(dtype).flatten()
        torch.testing.assert_close(param.ds_tensor[: whole.numel()], whole, rtol=0, atol=0)


def test_a_weight_in_another_dtype_is_named():
    model = cogvideox_t2v()
    model.proj_out.weight.data = model.proj_out.weight.data.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"'proj_out\.weight'.*torch\.bfloat16, expected torch\.float32"):
        check_weight_dtypes(model, torch.float32, "/models/cogvideox")


def test_modules_the_class_keeps_in_fp32_may_stay_fp32():
    model = cogvideox_t2v().to(torch.bfloat16)
    model._keep_in_fp32_modules = ["proj_out"]
    model.proj_out.float()
    check_weight_dtypes(model, torch.bfloat16, "/models/cogvideox")
    model.norm_final.float()
    with pytest.raises(ValueError, match="norm_final"):
        check_weight_dtypes(model, torch.bfloat16, "/models/cogvideox")


def test_generic_modules_defined_after_a_partitioned_load_keep_their_type_parameters(saved):
    """zero.Init's exit leaves nn.Module with a bound object.__init_subclass__; kornia's `class
    ModelBase(nn.Module, Generic[T])` then fails at `ModelBase[X]` (diffusers' guiders import it)."""
    from diffusers import CogVideoXTransformer3DModel

    load_partitioned(CogVideoXTransformer3DModel, saved, torch.float32, DS_CONFIG)
    assert "__init_subclass__" not in vars(torch.nn.Module)
    T = typing.TypeVar("T")

    class Probe(torch.nn.Module, typing.Generic[T]):
        pass

    assert Probe[int].__origin__ is Probe
