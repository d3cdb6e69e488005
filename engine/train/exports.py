"""Exports of a finished training run, read from its folder: the LoRA in diffusers format, in the key format
ComfyUI loads for the run's model family, and the merged transformer (LoRA folded in) as a diffusers folder.
A two-expert model (Wan 2.2 A14B) has one LoRA per expert: each export is written per expert, the second
expert's with the component in its name (pytorch_lora_weights_transformer_2.safetensors,
comfyui_lora_transformer_2.safetensors, transformer_merged_transformer_2/).

Every export carries what made it (`export_info`): the base model (name, path), rank, alpha, targets, steps,
β and the held-out accuracy before/after from the run's eval.json (when present) — as the `videogpa` key of
the safetensors metadata, or OUT/transformer_merged.json beside the merged folder. The run folder is read
through JSON, YAML and safetensors only: nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from videogpa.engine.core.config import EXPORT_FORMATS, Config
from videogpa.engine.core.config_loading import apply_override, config_from_dict, read_config_dict
from videogpa.engine.io.atomic import atomic_path, write_atomic
from videogpa.engine.models.lora import LORA_PREFIX, LORA_WEIGHT_NAME, lora_weight_name, model_components
from videogpa.engine.models.lora_formats import LoraFile, merge_lora, read_lora
from videogpa.engine.models.registry import adapter_class
from videogpa.engine.train import checkpoint as ckpt

INFO_KEY = "videogpa"  # the safetensors metadata key of export_info
COMFYUI_NAME = "comfyui_lora.safetensors"
MERGED_NAME = "transformer_merged"


@dataclass(frozen=True)
class FinishedRun:
    """What an export needs of a run folder: its config, its diffusers-format LoRA (of pipeline component
    `component`) and its eval.json; `experts`: the LoRA of each further trained expert of a two-expert model,
    by pipeline component."""

    folder: Path
    cfg: Config
    lora: LoraFile
    evaluation: dict | None
    experts: dict[str, LoraFile] = field(default_factory=dict)
    component: str = LORA_PREFIX

    def loras(self) -> list[tuple[str, LoraFile]]:
        """(pipeline component, its LoRA), the first trained one (`transformer` unless lora.experts) first."""
        return [(self.component, self.lora), *self.experts.items()]


def with_component(path: Path, component: str) -> Path:
    """Where a further expert's export goes beside `path`: the component added to its name."""
    return path if component == LORA_PREFIX else path.with_name(f"{path.stem}_{component}{path.suffix}")


def refuse_non_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """A one-line ValueError naming the first tensor holding NaN or inf: no export carries one."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            count = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{what}: tensor {name!r} holds {count} non-finite value(s) (NaN/inf); not exporting"
            )


def _read_checked_lora(path: Path, cfg: Config) -> LoraFile:
    lora = read_lora(path)
    refuse_non_finite(lora.state, f"LoRA {path}")
    if (lora.rank, lora.alpha) != (cfg.lora.rank, float(cfg.lora.alpha)):
        raise ValueError(
            f"{path}: rank {lora.rank}, alpha {lora.alpha} differ from the run's config "
            f"(lora.rank {cfg.lora.rank}, lora.alpha {cfg.lora.alpha})"
        )
    return lora


def _run_config(folder: Path, config: str | Path | None, overrides: Sequence[str]) -> Config:
    """The run's config: `config` if given, else its resolved config.yaml, else the newest checkpoint's
    config.json; then the `key.sub=value` overrides (e.g. model.path where the base model lives here)."""
    if config is None and not (folder / "config.yaml").is_file():
        newest = ckpt.latest_checkpoint(folder)
        if newest is None:
            raise ValueError(f"{folder} is not a trainer run folder: no config.yaml and no checkpoint")
        source, data = newest / "config.json", ckpt.read_trainer_state(newest)["config"]
        for item in overrides:
            apply_override(data, item)
    else:
        source = Path(config or folder / "config.yaml")
        data = read_config_dict(source, list(overrides))
    try:
        return config_from_dict(data)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def read_run(
    folder: str | Path, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> FinishedRun:
    """A finished run's config (see _run_config), LoRA and evaluation; a one-line ValueError naming what is
    missing or wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"run folder {folder} does not exist")
    cfg = _run_config(folder, config, overrides)
    if not cfg.lora.enabled:
        raise ValueError(
            f"{folder}: the run fine-tuned the whole transformer (lora.enabled: false); "
            f"its export is {folder / 'transformer'} already"
        )
    trained = cfg.lora.experts or adapter_class(cfg.model.name).lora_components  # (lora.experts: some)
    loras = {}
    for component in trained:
        path = folder / lora_weight_name(component)
        if not path.is_file() and not loras:
            raise ValueError(f"{folder} holds no {path.name}: the run has not finished")
        if not path.is_file():
            raise ValueError(
                f"{folder} holds no {path.name}: model {cfg.model.name!r} trains a LoRA for its "
                f"{component} too"
            )
        loras[component] = _read_checked_lora(path, cfg)
    (first, lora), *experts = loras.items()
    evaluation = None
    if (folder / "eval.json").is_file():
        try:
            evaluation = json.loads((folder / "eval.json").read_text())
        except ValueError as err:
            raise ValueError(f"{folder / 'eval.json'}: not JSON ({err})") from None
    return FinishedRun(folder, cfg, lora, evaluation, dict(experts), first)


def export_info(run: FinishedRun) -> dict:
    """What made the exported weights (the metadata every export carries)."""
    cfg, ev = run.cfg, run.evaluation or {}
    targets = cfg.lora.targets or list(adapter_class(cfg.model.name).default_lora_targets)
    return {
        "base_model": {"name": cfg.model.name, "path": cfg.model.path},
        "rank": run.lora.rank,
        "alpha": run.lora.alpha,
        "targets": targets,
        "steps": ev.get("steps", cfg.train.max_steps),
        "beta": cfg.dpo.beta,
        "heldout_accuracy_before": ev.get("heldout_accuracy_before"),
        "heldout_accuracy_after": ev.get("heldout_accuracy_after"),
    }


def _save_lora(state: dict[str, torch.Tensor], metadata: dict[str, str], info: dict, path: Path) -> Path:
    refuse_non_finite(state, f"export {path}")
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={**metadata, INFO_KEY: json.dumps(info, sort_keys=True)})
    return path


def write_diffusers(run: FinishedRun, info: dict, out: Path) -> list[Path]:
    """OUT/pytorch_lora_weights.safetensors: the run's LoRA, its diffusers metadata kept, export_info added
    (and each further expert's file); returns the paths."""
    return [
        _save_lora(lora.state, lora.metadata, info, with_component(out / LORA_WEIGHT_NAME, component))
        for component, lora in run.loras()
    ]


def write_comfyui(run: FinishedRun, info: dict, out: Path) -> list[Path]:
    """OUT/comfyui_lora.safetensors: the LoRA in the key format ComfyUI loads for the run's model family."""
    family = adapter_class(run.cfg.model.name)
    return [
        _save_lora(
            family.comfyui_lora_keys(lora),
            family.comfyui_lora.metadata(lora),
            info,
            with_component(out / COMFYUI_NAME, component),
        )
        for component, lora in run.loras()
    ]


def write_merged(run: FinishedRun, info: dict, out: Path) -> list[Path]:
    """OUT/transformer_merged/ (a diffusers folder: from_pretrained loads it) with the LoRA folded in, in the
    run's precision, and OUT/transformer_merged.json (a further expert: transformer_merged_<component>/ and
    its .json). A previous merged export there is replaced. Returns the folders."""
    cfg = run.cfg
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
    parts = dict(model_components(adapter_class(cfg.model.name).load_transformer(cfg.model.path, dtype)))
    folders = []
    for component, lora in run.loras():
        model = merge_lora(parts[component], lora)
        folder = with_component(out / MERGED_NAME, component)
        refuse_non_finite(
            model.state_dict(), f"merged export {folder} (base model {cfg.model.path or cfg.model.name})"
        )
        with atomic_path(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            if folder.exists():
                shutil.rmtree(folder)
        write_atomic(out / f"{folder.name}.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
        folders.append(folder)
    return folders


WRITERS = {"diffusers": write_diffusers, "comfyui": write_comfyui, "merged": write_merged}
assert tuple(WRITERS) == EXPORT_FORMATS


def export_run(
    folder: str | Path,
    formats: Sequence[str],
    out: str | Path | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> list[Path]:
    """Write the formats of a finished run's weights to `out` (default: the run folder); returns the paths
    (a further expert's beside each, see with_component). config / overrides: see _run_config."""
    unknown = [f for f in formats if f not in WRITERS]
    if unknown or not formats:
        raise ValueError(f"export formats {list(formats)}: expected some of {list(EXPORT_FORMATS)}")
    run = read_run(folder, config, overrides)
    info = export_info(run)
    out = Path(folder if out is None else out)
    out.mkdir(parents=True, exist_ok=True)
    return [path for f in dict.fromkeys(formats) for path in WRITERS[f](run, info, out)]


def export_after_training(folder: Path, formats: Sequence[str]) -> None:
    """Collective, at the end of a run: rank 0 writes the formats beyond the diffusers file the trainer wrote
    (made from that file, with eval.json's numbers in their metadata)."""
    from videogpa.engine.runtime import distributed as D

    if list(formats) != ["diffusers"] and D.is_main():
        export_run(folder, formats)
    D.barrier()
