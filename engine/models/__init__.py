"""Model families, one adapter object each (CogVideoX T2V/I2V, Wan 2.2 TI2V, Wan 2.1 T2V/I2V, Wan 2.2 A14B
T2V/I2V, the built-in tiny model), LoRA, pipelines and the registry.

Importing this package registers every adapter; `get_adapter(name)` returns one.
"""

from videogpa.engine.models import (  # noqa: F401  (importing registers the adapters)
    cogvideox,
    tiny,
    wan21,
    wan22_a14b,
    wan22_ti2v,
)
from videogpa.engine.models.base import ModelAdapter
from videogpa.engine.models.registry import adapter_class, adapter_names, get_adapter, register_adapter
from videogpa.engine.models.tiny import TINY, TinySpec

__all__ = [
    "TINY",
    "ModelAdapter",
    "TinySpec",
    "adapter_class",
    "adapter_names",
    "get_adapter",
    "register_adapter",
]
