"""Backend choice shared by every kernel: Triton on GPU tensors, the PyTorch reference on CPU tensors."""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "triton", "torch")


def triton_interpreter_active() -> bool:
    """True when TRITON_INTERPRET=1 is set (it must be set before any @triton.jit is defined)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, *tensors: torch.Tensor, op: str) -> str:
    """Return "triton" or "torch" for `backend` in ("auto", "triton", "torch") given the op's tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    on_gpu = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return "triton" if on_gpu and triton_installed() else "torch"
    if backend == "triton":
        if not triton_installed():
            raise ValueError(f"{op}: backend='triton' but triton is not installed")
        if not on_gpu and not triton_interpreter_active():
            raise ValueError(
                f"{op}: backend='triton' got CPU tensors; on a CPU the kernel runs only under Triton's "
                "interpreter (set TRITON_INTERPRET=1 before importing videogpa.kernels)"
            )
    return backend
