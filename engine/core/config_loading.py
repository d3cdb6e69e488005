"""Reading and writing configs: a YAML file and `--set key=value` overrides built into the checked dataclasses
of engine.core.config (unknown keys and wrong types are errors), saving them, and what a resume may change."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from pathlib import Path

import yaml

from videogpa.engine.core.config import Config
from videogpa.engine.io.atomic import write_atomic


def _dataclass_type(tp: object) -> type | None:
    """The dataclass in `tp` (also inside `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _check_scalar(value: object, tp: object, where: str) -> object:
    """Validate a leaf value against its annotation (ints accepted for floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _check_scalar(value, tp, where)
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ValueError(f"config key {where!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_scalar(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 5e-6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {where!r}: expected a finite number, got {value!r}")
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"config key {where!r}: expected {tp.__name__}, got {value!r}")
    return value


def build_dataclass(cls: type, data: object, where: str) -> object:
    """Instantiate the (nested) config dataclass cls from a mapping, checking keys and types; errors name
    `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; expected one of {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        sub = _dataclass_type(hints[name])
        if sub is not None and not (value is None and sub is not hints[name]):
            kwargs[name] = build_dataclass(sub, value, key)
        else:
            kwargs[name] = _check_scalar(value, hints[name], key)
    return cls(**kwargs)


def merge_dicts(base: dict, override: dict) -> dict:
    """A deep copy of base with override's keys laid over it, mappings merged recursively."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_dicts(out[key], value) if nested else copy.deepcopy(value)
    return out


def config_from_dict(data: dict) -> Config:
    return build_dataclass(Config, data, "").check()


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line saying where (1-based line and column) and what is wrong in a YAML text."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "reason", None) or type(err).__name__
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown place"
    if mark is None and getattr(err, "position", None) is not None:  # a ReaderError: bad character
        where = f"character {err.position}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def read_config_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The YAML mapping at `path` with `key.sub=value` overrides applied (values parsed as YAML); invalid
    YAML is a one-line ValueError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r}: invalid YAML at {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(data, item)
    return data


def parse_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply overrides: keys and types checked, nothing else (no heavy import: a bad
    --set is reported before torch's model stack is loaded); Config.check() does the rest."""
    return config_tree(read_config_dict(path, overrides), path)


def config_tree(data: dict, path: str | Path) -> Config:
    """The Config of a mapping read from `path`, keys and types checked; errors name the file."""
    try:
        return build_dataclass(Config, data, "")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, validate it."""
    cfg = parse_config(path, overrides)
    try:
        return cfg.check()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def check_input_paths(cfg: Config) -> None:
    """A ValueError naming the first input folder of the run (model.path, data.train, data.heldout) that does
    not exist: cheap checks a recipe makes before it loads anything."""
    for key, path, what in (
        (
            "model.path",
            cfg.model.path,
            f"checkpoint folder (a local diffusers folder for model {cfg.model.name!r})",
        ),
        ("data.train", cfg.data.train, "preference-shard folder (recipes/encode.py writes it)"),
        ("data.heldout", cfg.data.heldout, "preference-shard folder (recipes/encode.py writes it)"),
    ):
        if path is not None and not Path(path).is_dir():
            raise ValueError(f"config key {key!r}: {what} {path!r} does not exist")


def check_output_folder(out: str | Path) -> None:
    """A ValueError when the output folder cannot be made: its nearest existing ancestor is a file or not
    writable. A cheap check a recipe makes before it loads anything."""
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists())
    problem = None
    if not existing.is_dir():
        problem = "Not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "Permission denied"
    if problem:
        raise ValueError(f"cannot write the output folder {out}: {problem}")


def apply_override(data: dict, item: str) -> None:
    """Set `a.b.c=value` in a nested dict (value parsed as YAML; invalid YAML is a one-line ValueError naming
    the override and the line)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key.sub=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"override {item!r}: invalid YAML value at {_yaml_problem(err)}") from None


# Keys a resumed run may change freely: where and how often it reports, not what it computes.
BOOKKEEPING_KEYS = (
    "output_dir",
    "loop",
    "logging",
    "train.log_every",
    "train.progress_bar",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.export_formats",
    "eval.plot",
    "eval.every",
    "eval.validation",
)


# Keys no resume may change, even with --allow-config-change: the checkpoint's tensors would not fit (their
# shapes, which parameters train, the optimizer's state layout), and DeepSpeed's load would fail half-way.
STRUCTURAL_KEYS = {
    "model.name": "another model family's weights",
    "lora.enabled": "LoRA or full fine-tuning trains other parameters",
    "lora.rank": "the LoRA matrices' shapes",
    "lora.targets": "which modules carry LoRA",
    "lora.experts": "which experts carry LoRA",
    "train.precision": "the optimizer states' precision and files",
    "distributed.zero_stage": "how the optimizer states are partitioned",
    "distributed.offload_optimizer": "the optimizer (DeepSpeed's CPU Adam or torch's AdamW) and its states",
    "distributed.sequence_parallel": "the data-parallel ranks the states are partitioned over",
}


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} for what differs between two config dicts, bookkeeping aside."""
    a, b = _flatten(old), _flatten(new)
    keep = lambda k: not any(k == p or k.startswith(p + ".") for p in BOOKKEEPING_KEYS)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if keep(k) and a.get(k) != b.get(k)}


def save_config(cfg: Config, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# The shipped model configs leave local paths as placeholders under this prefix.
PLACEHOLDER_PREFIX = "/path/to/"


def require_real_paths(cfg: Config, set_later: tuple[str, ...] = ()) -> None:
    """A ValueError naming every key that still holds a /path/to/... placeholder, all in one message; keys
    under the `set_later` sections (e.g. "data", which the loop fills from its encode stage) are passed
    over."""
    found = [
        f"{key} ({value})"
        for key, value in _flatten(cfg.to_dict()).items()
        if isinstance(value, str)
        and value.startswith(PLACEHOLDER_PREFIX)
        and not key.startswith(tuple(f"{section}." for section in set_later))
    ]
    if found:
        raise ValueError(
            f"the config still holds {len(found)} placeholder path(s); set each to a local folder or file "
            f"(--set KEY=PATH or in the YAML): {', '.join(found)}"
        )
