"""What every recipe shares: flags built from a stage's config dataclass, `--config` / `--set`, and one error
convention (a ValueError is a one-line `error: ...` on stderr and exit status 2, never a traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import apply_override, build_dataclass, read_config_dict


def _flag_type(tp: object) -> type:
    """The scalar type behind `X | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return tp


def comma_list(value: str) -> list[str]:
    """`a,b` -> ["a", "b"] (a list field's flag)."""
    return [v.strip() for v in value.split(",")]


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
    prefix: str = "",
    **choices,
) -> None:
    """One flag per field of the config dataclass (`num_candidates` → `--num-candidates`); a flag left out
    leaves the config's value. Booleans: `--name` sets True, or `--no-name` False for fields that default to
    True. Lists of strings: `--name a,b`. A nested section's fields: `--section-field` (dest `section.field`).
    `aliases` adds flags by dest (`{"epipolar.stride": "--pair-stride"}`); `choices` restrict fields by
    dest."""
    hints = typing.get_type_hints(cls)
    aliases = aliases or {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        dest = prefix + field.name
        flags = [
            "--" + dest.replace(".", "-").replace("_", "-"),
            *([aliases[dest]] if dest in aliases else []),
        ]
        tp = _flag_type(hints[field.name])
        if dataclasses.is_dataclass(tp):
            add_config_flags(parser, tp, aliases=aliases, prefix=dest + ".", **choices)
        elif tp is bool:
            if field.default is True:
                parser.add_argument("--no-" + flags[0][2:], dest=dest, action="store_false", default=None)
            else:
                parser.add_argument(*flags, dest=dest, action="store_true", default=None)
        elif tp in (int, float, str):
            metavar = field.name.upper() if prefix and dest not in choices else None
            parser.add_argument(
                *flags,
                dest=dest,
                type=tp,
                default=None,
                choices=choices.get(dest),
                metavar=metavar,
                help=f"default: {field.default!r}",
            )
        elif typing.get_origin(tp) is list and typing.get_args(tp) == (str,):
            default = field.default_factory() if callable(field.default_factory) else field.default
            parser.add_argument(
                *flags,
                dest=dest,
                type=comma_list,
                default=None,
                metavar="A,B",
                help=f"comma-separated; default: {','.join(default or [])!r}",
            )


def add_config_file_flags(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument(
        "--config", help=f"YAML: a whole config (its loop.{section} section) or that section alone"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            f"override a config key, e.g. --set loop.{section}.seed=3 (repeatable; the flags are its aliases)"
        ),
    )


def section_override(item: str, section: str) -> str:
    """`loop.<section>.key=value` (the one override grammar: full dotted keys, as every recipe takes them) →
    `key=value` within the section; a ValueError for a key outside it."""
    prefix = f"loop.{section}."
    if not item.startswith(prefix):
        key = item.partition("=")[0]
        raise ValueError(
            f"override {item!r}: this recipe runs the loop.{section} section; "
            f"expected --set {prefix}KEY=VALUE" + (f" (e.g. --set {prefix}{item})" if "." not in key else "")
        )
    return item[len(prefix) :]


def stage_config(cls: type, section: str, args: argparse.Namespace):
    """The stage's config: its section of --config (if given), then --set, then the flags; validated."""
    data: dict = {}
    if args.config:
        given = read_config_dict(args.config)
        whole = bool(set(given) & {f.name for f in dataclasses.fields(Config)})
        data = ((given.get("loop") or {}).get(section) or {}) if whole else given
        model = (given.get("model") or {}).get("name")
        if whole and model is not None and "model" in {f.name for f in dataclasses.fields(cls)}:
            data.setdefault("model", model)  # a whole config's stages run its model
    for item in args.overrides:
        apply_override(data, section_override(item, section))
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in vars(args).items():  # flags of nested sections have dests `section.field`
        *parents, leaf = key.split(".")
        if value is None or (parents or [leaf])[0] not in names:
            continue
        node = data
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[leaf] = value
    where = f"loop.{section}"
    try:
        cfg = build_dataclass(cls, data, where)
        cfg.check(where)
    except ValueError as err:
        raise ValueError(f"{args.config}: {err}" if args.config else str(err)) from None
    return cfg


def add_shard_flag(parser: argparse.ArgumentParser) -> None:
    """`--shard I/N`: this process does shard I of N of the stage's items (engine.stages.sharding); under a
    launcher (torchrun, deepspeed) each rank takes its share of it. Checked when the stage starts."""
    parser.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="do shard I of N (0 ≤ I < N) of the items, e.g. --shard $SLURM_ARRAY_TASK_ID/8; "
        "under torchrun each rank takes its part of it",
    )


def run_recipe(main: Callable[[], int]) -> int:
    """Run a recipe's body: bad input (a ValueError) or an unwritable path (an OSError: a full disk, a
    read-only folder) ends as one line and exit status 2; a diverged run (FloatingPointError) as one line and
    exit status 1."""
    try:
        return main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
