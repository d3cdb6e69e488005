"""The one training config: a YAML file validated into nested dataclasses (unknown keys are errors)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from videogpa.kernels import LOSS_TYPES

REFERENCE_STRATEGIES = ("adapters_off", "separate", "precomputed")
PRECISIONS = ("bf16", "fp32")
NAN_POLICIES = ("skip", "stop")
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class ModelConfig:
    name: str = "tiny"  # adapter registry name (videogpa.engine.models.adapter_names())
    path: str | None = None  # local diffusers transformer folder (None: the adapter's built-in tiny config)
    gradient_checkpointing: bool = True


@dataclass
class LoraConfig:
    enabled: bool = True  # False: full fine-tuning (needs reference: separate or precomputed)
    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.0
    targets: list[str] | None = None  # module-name suffixes; None: the adapter's defaults


@dataclass
class DPOConfig:
    beta: float = 1.0
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    reference: str = "adapters_off"
    reference_offload: bool = False  # separate: keep the frozen copy's parameters on the CPU
    noise_cycle: int | None = None  # per-pair (noise, t) draws repeat every N epochs (None: never)
    nan_policy: str = "skip"


@dataclass
class SyntheticDataConfig:
    """The embedded default's scene pairs (engine.data.synthetic_pairs): clean clip vs corrupted clip."""

    train_pairs: int = 160
    heldout_pairs: int = 48
    seed: int = 1234
    corruptions: list[str] = field(default_factory=lambda: ["jitter", "scale"])  # used in turn
    strength: float = 4.0  # engine.data.synthetic.corrupt's strength


@dataclass
class DataConfig:
    train: str | None = None  # preference-shard folder
    heldout: str | None = None  # preference-shard folder never trained on (evaluation)
    synthetic: SyntheticDataConfig | None = None  # generate the sets into <output_dir>/data instead


@dataclass
class OptimConfig:
    lr: float = 5e-6
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 10_000
    # pairs per rank per forward (None: the global batch split over the ranks, no accumulation)
    micro_batch_size: int | None = 1
    global_batch_size: int = 16  # pairs per optimizer step (micro × accumulation × ranks)
    precision: str = "bf16"
    log_every: int = 10
    checkpoint_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 2
    progress_bar: bool = True


@dataclass
class DistributedConfig:
    zero_stage: int = 3
    offload_optimizer: bool = False
    offload_params: bool = False
    deepspeed_config: str | None = None  # a user's DeepSpeed JSON, merged over the generated one


@dataclass
class EvalConfig:
    draws: int = 4  # fixed (noise, t) draws per held-out pair
    batch_size: int = 8
    plot: bool = True


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "runs/dpo"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"config key {where!r}: expected {tp.__name__}, got {value!r}")
    return value


def build_dataclass(cls: type, data: object, where: str) -> object:
    """Instantiate the (nested) config dataclass cls from a mapping, checking keys and types; errors name `where`."""
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


def _choice(value: object, choices: tuple, key: str) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r}: expected one of {choices}, got {value!r}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"config key {key!r}: expected a {'non-negative' if allow_zero else 'positive'} value"
        )


def _check_synthetic(syn: SyntheticDataConfig) -> None:
    from videogpa.engine.data.synthetic import CORRUPTIONS

    _positive(syn.train_pairs, "data.synthetic.train_pairs")
    _positive(syn.heldout_pairs, "data.synthetic.heldout_pairs")
    _positive(syn.strength, "data.synthetic.strength")
    if not syn.corruptions:
        raise ValueError("config key 'data.synthetic.corruptions': expected at least one corruption")
    for kind in syn.corruptions:
        _choice(kind, CORRUPTIONS, "data.synthetic.corruptions")


def validate(cfg: Config) -> Config:
    """Cross-field checks that the types alone cannot express."""
    from videogpa.engine.models import adapter_names

    _choice(cfg.model.name, tuple(adapter_names()), "model.name")
    _choice(cfg.dpo.reference, REFERENCE_STRATEGIES, "dpo.reference")
    _choice(cfg.dpo.loss_type, LOSS_TYPES, "dpo.loss_type")
    _choice(cfg.dpo.nan_policy, NAN_POLICIES, "dpo.nan_policy")
    _choice(cfg.train.precision, PRECISIONS, "train.precision")
    _choice(cfg.optim.schedule, LR_SCHEDULES, "optim.schedule")
    # Stages 1-3 discard a step whose gradients are non-finite (dpo.nan_policy: skip relies on it).
    _choice(cfg.distributed.zero_stage, (1, 2, 3), "distributed.zero_stage")
    _positive(cfg.dpo.beta, "dpo.beta")
    if not 0.0 <= cfg.dpo.label_smoothing < 0.5:
        raise ValueError("config key 'dpo.label_smoothing': expected a value in [0, 0.5)")
    if cfg.dpo.label_smoothing and cfg.dpo.loss_type != "sigmoid":
        raise ValueError("config key 'dpo.label_smoothing': applies only to dpo.loss_type 'sigmoid'")
    if cfg.dpo.noise_cycle is not None:
        _positive(cfg.dpo.noise_cycle, "dpo.noise_cycle")
    if cfg.dpo.reference == "adapters_off" and not cfg.lora.enabled:
        raise ValueError(
            "config key 'dpo.reference': 'adapters_off' needs LoRA (lora.enabled: true); "
            "full fine-tuning needs 'separate' or 'precomputed'"
        )
    if cfg.lora.enabled:
        _positive(cfg.lora.rank, "lora.rank")
        _positive(cfg.lora.alpha, "lora.alpha")
        if not 0.0 <= cfg.lora.dropout < 1.0:
            raise ValueError("config key 'lora.dropout': expected a value in [0, 1)")
    for key in ("max_steps", "global_batch_size", "log_every"):
        _positive(getattr(cfg.train, key), f"train.{key}")
    if cfg.train.micro_batch_size is not None:
        _positive(cfg.train.micro_batch_size, "train.micro_batch_size")
    _positive(cfg.train.checkpoint_every, "train.checkpoint_every", allow_zero=True)
    _positive(cfg.train.keep_checkpoints, "train.keep_checkpoints")
    _positive(cfg.optim.lr, "optim.lr")
    _positive(cfg.optim.warmup_steps, "optim.warmup_steps", allow_zero=True)
    _positive(cfg.optim.grad_clip, "optim.grad_clip", allow_zero=True)
    if len(cfg.optim.betas) != 2:
        raise ValueError(f"config key 'optim.betas': expected two values, got {cfg.optim.betas}")
    if cfg.data.synthetic is None and cfg.data.train is None:
        raise ValueError("config section 'data': set 'train' (a preference-shard folder) or 'synthetic'")
    if cfg.data.synthetic is not None:
        _check_synthetic(cfg.data.synthetic)
    if cfg.distributed.offload_params and cfg.distributed.zero_stage != 3:
        raise ValueError("config key 'distributed.offload_params': parameter offload needs zero_stage 3")
    _positive(cfg.eval.draws, "eval.draws")
    _positive(cfg.eval.batch_size, "eval.batch_size")
    return cfg


def config_from_dict(data: dict) -> Config:
    return validate(build_dataclass(Config, data, ""))


def read_config_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The YAML mapping at `path` with `key.sub=value` overrides applied (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(data, item)
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, validate it."""
    data = read_config_dict(path, overrides)
    try:
        return config_from_dict(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def apply_override(data: dict, item: str) -> None:
    """Set `a.b.c=value` in a nested dict (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key.sub=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
