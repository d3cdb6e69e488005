"""Run records on rank 0: metrics.jsonl, TensorBoard events, run info, plots."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import torch

from videogpa.engine.core.provenance import run_info
from videogpa.engine.io.plots import pyplot, save_figure
from videogpa.engine.io.records import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic

METRICS_FILE = "metrics.jsonl"


def _jsonable(value: object) -> object:
    """Non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(output_dir: str | Path) -> list[dict]:
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return read_jsonl(path)  # a line half-written by a killed run is dropped


class MetricsLogger:
    """Appends one JSON line per optimizer step and mirrors scalars, figures, tables and videos to TensorBoard
    and, when cfg.logging.wandb is set, to Weights & Biases (rank 0 only)."""

    def __init__(
        self, output_dir: str | Path, enabled: bool, resume_step: int = 0, tensorboard: bool = True, cfg=None
    ):
        self.enabled = enabled
        self.path = Path(output_dir) / METRICS_FILE
        self.writer = self.wandb = None
        if not enabled:
            return
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(output_dir) if r["step"] <= resume_step]
        write_jsonl_atomic(self.path, kept)  # a resumed run redoes the steps after its checkpoint
        if tensorboard and (cfg is None or cfg.logging.tensorboard):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=resume_step + 1)
        if cfg is not None and cfg.logging.wandb is not None:
            self.wandb = wandb_run(cfg, Path(output_dir), resume_step)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: _jsonable(v) for k, v in record.items()}
        append_jsonl(self.path, record)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.scalar(f"train/{key}", value, record["step"])

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.log({tag: value}, step=step)

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure as an image (the caller still owns and closes it)."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=False)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(fig)}, step=step)

    def table(self, tag: str, columns: list[str], rows: list[list], step: int) -> None:
        """A small table: Markdown text in TensorBoard, a wandb.Table in W&B."""
        if self.writer is not None:
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
            self.writer.add_text(tag, "\n".join(lines), step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Table(columns=columns, data=rows)}, step=step)

    def videos(self, tag: str, paths: list[Path], captions: list[str], step: int) -> None:
        """mp4 files as videos in W&B (TensorBoard gets the frame grid instead: its video needs moviepy)."""
        if self.wandb is not None and paths:
            import wandb

            items = [wandb.Video(str(p), caption=c, format="mp4") for p, c in zip(paths, captions)]
            self.wandb.log({tag: items}, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


WANDB_ID_FILE = "wandb_run_id.txt"


def wandb_login_problem(cfg) -> str | None:
    """Why logging.wandb cannot work on this machine, found before any work (None when it can): online mode
    needs credentials (WANDB_API_KEY, an identity token file, or a netrc entry for the W&B host, which `wandb
    login` writes); without them wandb.init fails only once training starts."""
    import netrc
    import os
    from urllib.parse import urlsplit

    settings = cfg.logging.wandb
    if settings is None or settings.mode != "online":
        return None
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return None
    host = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    path = Path(os.environ.get("NETRC") or Path.home() / (".netrc" if os.name != "nt" else "_netrc"))
    try:
        if netrc.netrc(str(path)).authenticators(urlsplit(host).netloc or host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (
        f"config key 'logging.wandb.mode': online, but this machine is not logged in to W&B at {host} (no "
        f"WANDB_API_KEY, no entry in {path}): run `wandb login`, or set logging.wandb.mode: offline and "
        "`wandb sync` the run folder's wandb/ later"
    )


def wandb_run(cfg, out_dir: Path, resume_step: int):
    """A W&B run for the output folder (offline files under out_dir/wandb; one run id per folder, so a resumed
    run continues it), carrying the resolved config."""
    try:
        import wandb
    except ImportError:
        raise ValueError(
            "logging.wandb: needs the wandb package (pip install wandb), not installed"
        ) from None
    from videogpa.engine.io.atomic import write_atomic

    settings, id_file = cfg.logging.wandb, out_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume_step > 0 and id_file.is_file() else uuid.uuid4().hex[:12]
    write_atomic(id_file, run_id + "\n")
    (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=settings.name or out_dir.name,
        id=run_id,
        resume="allow",
        mode=settings.mode,
        dir=str(out_dir),
        config=cfg.to_dict(),
    )


def format_line(record: dict) -> str:
    """One human-readable log line for a metrics record."""
    keys = ("loss", "accuracy", "reward_margin", "lr", "grad_norm", "samples_per_s")
    parts = [f"step {record['step']}"]
    for key in keys:
        value = record.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4g}")
    return " | ".join(parts)


def demo_note(cfg, builtin_model: bool) -> str | None:
    """What a run's numbers stand for when its model (`builtin_model`: its family ships in code) or its data
    is a built-in toy; None for a real model on real data. A built-in model's data is always toy data: its
    synthetic set or videos it generated."""
    if builtin_model:
        what = f"built-in {cfg.model.name} model and synthetic data"
        return f"{what}: numbers show the machinery, not a real model"
    if cfg.data.synthetic is not None:
        return "synthetic data: numbers show the machinery, not results on real videos"
    return None


def write_run_records(
    out_dir: Path, cfg, world_size: int, source_dir: str | Path, builtin_model: bool | None = None
) -> None:
    """What reproduces a run, written at its start: the resolved config.yaml and run_info.json (with `demo`,
    the report's warning, when the model or the data is a built-in toy; builtin_model None: the model
    registry says)."""
    from videogpa.engine.core.config_loading import save_config

    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    if builtin_model is None:
        from videogpa.engine.models import adapter_class

        builtin_model = adapter_class(cfg.model.name).ships_pipeline
    info = run_info(cfg.seed, world_size, source_dir)
    info["torch_threads"] = torch.get_num_threads()  # CPU float results depend on it
    note = demo_note(cfg, builtin_model)
    if note is not None:
        info["demo"] = note
    write_json_atomic(out_dir / "run_info.json", info)


CHANCE = "chance (50%)"  # the label of the 50% line: a model that cannot tell winner from loser


def _chance_line(ax) -> None:
    """The 50% line, named at its right end, outside the plot."""
    ax.axhline(50, color="k", lw=0.8, ls="--")
    ax.annotate(
        CHANCE,
        xy=(1, 50),
        xycoords=ax.get_yaxis_transform(),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=9,
    )


def heldout_accuracy_figure(before: float, after: float, pairs: int):
    """Bar chart of held-out preference accuracy before and after training."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.2, 3.5), dpi=120, layout="constrained")
    bars = ax.bar(["before", "after"], [100 * before, 100 * after], color=["#999999", "#2a7ab9"])
    ax.bar_label(bars, fmt="%.1f%%")
    _chance_line(ax)
    ax.set_ylim(0, 109)
    ax.set_ylabel("held-out preference accuracy (%)")
    ax.set_title(f"Diffusion-DPO, {pairs} held-out pairs")
    return fig


def plot_heldout_accuracy(before: float, after: float, pairs: int, path: str | Path) -> None:
    """heldout_accuracy_figure as a PNG."""
    save_figure(heldout_accuracy_figure(before, after, pairs), path, dpi=120)


def heldout_curve_figure(history: list[dict], pairs: int):
    """Held-out preference accuracy over the training steps (eval.every), step 0 being the initial model."""
    plt = pyplot()

    rows = sorted(history, key=lambda h: h["step"])
    fig, ax = plt.subplots(figsize=(5.7, 3.5), dpi=120, layout="constrained")
    ax.plot([h["step"] for h in rows], [100 * h["accuracy"] for h in rows], marker="o", color="#2a7ab9")
    _chance_line(ax)
    ax.set_ylim(0, 105)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out preference accuracy (%)")
    ax.set_title(f"Diffusion-DPO, {pairs} held-out pairs")
    return fig


def plot_heldout_curve(history: list[dict], pairs: int, path: str | Path) -> None:
    """heldout_curve_figure as a PNG."""
    save_figure(heldout_curve_figure(history, pairs), path, dpi=120)


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and up to window − 1 values before it (same length as values)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def training_curves_figure(records: list[dict]):
    """Loss and training-batch accuracy per step, each with its moving average over ~5% of the run (None when
    no step has a loss). A run shorter than 40 steps has no average: its curve is the steps themselves."""
    plt = pyplot()

    rows = [r for r in records if r.get("loss") is not None]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 20)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120, layout="constrained")
    for ax, key, label in zip(axes, ("loss", "accuracy"), ("DPO loss", "train implicit-reward accuracy")):
        values = [r[key] for r in rows]
        if window == 1:
            ax.plot(steps, values, color="tab:blue", linewidth=1.0, label="per step")
        else:
            ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=0.8, label="per step")
            mean = f"mean of the last {window} steps"
            ax.plot(steps, moving_average(values, window), color="tab:blue", label=mean)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    return fig


def plot_training_curves(records: list[dict], path: str | Path) -> None:
    """training_curves_figure as a PNG (nothing when no step has a loss)."""
    fig = training_curves_figure(records)
    if fig is not None:
        save_figure(fig, path, dpi=120)


def write_final_report(out_dir: Path, result: dict, plots: bool) -> None:
    """Rank 0's end of a run: eval.json, the before/after line, the plots."""
    write_json_atomic(out_dir / "eval.json", result)
    print(
        f"held-out preference accuracy ({result['pairs']} pairs never trained on): "
        f"{100 * result['heldout_accuracy_before']:.1f}% before -> "
        f"{100 * result['heldout_accuracy_after']:.1f}% after training",
        flush=True,
    )
    if plots:
        before, after = result["heldout_accuracy_before"], result["heldout_accuracy_after"]
        if len(result.get("heldout_history", [])) > 2:  # evaluated during training too (eval.every)
            plot_heldout_curve(result["heldout_history"], result["pairs"], out_dir / "heldout_accuracy.png")
        else:
            plot_heldout_accuracy(before, after, result["pairs"], out_dir / "heldout_accuracy.png")
        plot_training_curves(read_metrics(out_dir), out_dir / "training_curves.png")
    print(f"outputs in {out_dir}/: eval.json, metrics.jsonl, plots, checkpoints, final weights", flush=True)


class StepReporter:
    """Rank 0's view of a run: a progress bar (when enabled) and a log line every `every` steps."""

    def __init__(self, total: int, initial: int, every: int, enabled: bool, bar: bool):
        self.every, self.enabled, self.bar = every, enabled, None
        if enabled and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="dpo", dynamic_ncols=True)

    def step(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=record["loss"], acc=record["accuracy"])
        if self.enabled and (record["step"] % self.every == 0 or record["step"] == 1):
            (self.bar.write if self.bar is not None else print)(format_line(record))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
