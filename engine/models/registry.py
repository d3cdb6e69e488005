"""The adapter registry: adding a model family means adding one module with a `@register_adapter` class."""

from __future__ import annotations

from typing import Any

from videogpa.engine.models.base import ModelAdapter

_ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: make `cls` available as `get_adapter(cls.name)`."""
    if cls.name in _ADAPTERS:
        raise ValueError(
            f"model adapter name {cls.name!r} is registered twice ({_ADAPTERS[cls.name]}, {cls})"
        )
    _ADAPTERS[cls.name] = cls
    return cls


def adapter_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_ADAPTERS)


def adapter_class(name: str) -> type[ModelAdapter]:
    """The registered adapter class of a model name (its family facts are class attributes)."""
    if name not in _ADAPTERS:
        raise ValueError(f"unknown model {name!r}: expected one of {adapter_names()}")
    return _ADAPTERS[name]


def get_adapter(name: str, **kwargs: Any) -> ModelAdapter:
    """An adapter instance by registry name; kwargs go to its constructor (e.g. path=the model folder)."""
    return adapter_class(name)(**kwargs)
