"""Model adapters (CogVideoX T2V/I2V, Wan 2.2 TI2V, the built-in tiny model), LoRA and the registry.

Importing this package registers every adapter; `get_adapter(name)` returns one.
"""

from videogpa.engine.models import cogvideox, tiny, wan  # noqa: F401  (registers the adapters)
from videogpa.engine.models.base import Conditioning, ModelAdapter
from videogpa.engine.models.registry import adapter_names, get_adapter, register_adapter
from videogpa.engine.models.tiny import TINY, TinySpec

__all__ = [
    "TINY",
    "Conditioning",
    "ModelAdapter",
    "TinySpec",
    "adapter_names",
    "get_adapter",
    "register_adapter",
]
