"""Regional torch.compile: each of a transformer's repeated blocks compiled in place, so one block's graph
serves every block and compile time stays short (training: model.compile; sampling:
loop.generation.compile)."""

from __future__ import annotations

import torch

from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.common import base_module


def compile_blocks(transformer: torch.nn.Module, adapter: ModelAdapter, backend: str, key: str) -> int:
    """torch.compile (in place, `backend`) each of the transformer's repeated blocks; returns how many. `key`:
    the config key named in errors."""
    known = torch.compiler.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(f"config key {key!r}: unknown torch.compile backend {backend!r}; one of {known}")
    blocks = getattr(base_module(transformer), adapter.blocks_attribute)
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)
