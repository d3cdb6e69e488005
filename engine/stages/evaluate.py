"""The evaluate stage: the same held-out prompts and seeds generated without and with the trained LoRA,
both scored, compared side by side in the paper's columns (PSNR, SSIM, LPIPS, MVCS, 3DCS, Epi; then MSE,
motion) with per-prompt win rates and a bootstrap confidence interval on each difference (engine.eval_stats).

A prompt is a win when its mean 3DCS over the seeds is lower with the LoRA (ties count half). Only videos
scored in both runs are compared.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from videogpa.engine.core.config import EvaluateConfig, GenerationConfig
from videogpa.engine.core.eval_stats import RESAMPLES, paired_metric
from videogpa.engine.core.figures import save_before_after_grid
from videogpa.engine.core.report import number
from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.io.plots import pyplot, save_figure, tidy_axis
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.io.sharded import read_sharded, sharded_exists
from videogpa.engine.stages.sharding import Shard, finishes, one_process_per_shard, sole

# metric -> True: lower is better, False: higher is better, None: neither (reported only)
# (the paper's main-table columns in its order, then the extra ones)
METRICS = {
    "psnr": False,
    "ssim": False,
    "lpips": True,
    "mvcs": False,
    "score": True,
    "epi": True,  # the authors' Epi, pixels (engine.geometry.epipolar)
    "epi_robust": True,  # ours beside it: the robust fit's inlier Sampson distance / max(H, W)
    "mse": True,
    "motion": None,
}
LABELS = {
    "score": "3DCS",
    "mse": "MSE",
    "lpips": "LPIPS",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "mvcs": "MVCS",
    "epi": "Epi",
    "epi_robust": "Epi robust (ours)",
    "motion": "motion",
}

# metrics a scored video may lack a value of (None in its row), and why: counted apart in the table's notes
NO_VALUE = {
    "epi": "no frame pair with enough matches",
    "epi_robust": "no frame pair with enough matches and inliers",
}


def _by_candidate(rows: list[dict], where: str) -> dict[tuple[str, int], dict]:
    out = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        if "prompt_id" not in row or "seed" not in row:
            raise ValueError(f"{where}: a score row lacks 'prompt_id'/'seed' (score the generation manifest)")
        out[(row["prompt_id"], row["seed"])] = row
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if _finite(v)]
    return sum(finite) / len(finite) if finite else None


def _without_value(rows: dict, keys: list, metric: str) -> int:
    """Videos whose row has the metric's key but no value (None or NaN: e.g. Epi without a valid frame pair);
    they are left out of the metric's means and differences, never counted as 0 or −1."""
    return sum(metric in rows[k] and not _finite(rows[k][metric]) for k in keys)


def _score_rows(scores: str | os.PathLike | list[dict]) -> list[dict]:
    """A row list as it is, or the rows of a scores file and its shard files."""
    if isinstance(scores, list):
        return scores
    if not sharded_exists(scores):
        raise ValueError(f"{scores} does not exist")
    return read_sharded(scores)


def compare_scores(base: str | os.PathLike | list[dict], tuned: str | os.PathLike | list[dict]) -> dict:
    """The evaluation table of two score files (or row lists) of the same prompts and seeds."""
    base_rows, tuned_rows = (_score_rows(x) for x in (base, tuned))
    b, t = _by_candidate(base_rows, str(base)[:200]), _by_candidate(tuned_rows, str(tuned)[:200])
    common = sorted(set(b) & set(t))
    if not common:
        raise ValueError("evaluation: no video was scored in both the base and the LoRA run")
    table = {}
    for metric, lower in METRICS.items():
        before, after = _mean([b[k].get(metric) for k in common]), _mean([t[k].get(metric) for k in common])
        better = None
        if lower is not None and before is not None and after is not None:
            better = after < before if lower else after > before
        table[metric] = {
            "label": LABELS[metric],
            "base": before,
            "lora": after,
            "lower_is_better": lower,
            "improved": better,
            "without_value": {
                "base": _without_value(b, common, metric),
                "lora": _without_value(t, common, metric),
            },
            **paired_metric(b, t, metric, lower),
        }
    per_prompt = defaultdict(lambda: {"base": [], "lora": []})
    for key in common:
        per_prompt[key[0]]["base"].append(b[key]["score"])
        per_prompt[key[0]]["lora"].append(t[key]["score"])
    prompts = {}
    for pid, runs in sorted(per_prompt.items()):
        before, after = _mean(runs["base"]), _mean(runs["lora"])
        prompts[pid] = {
            "base": before,
            "lora": after,
            "win": 1.0 if after < before else 0.5 if after == before else 0.0,
        }
    videos_won = sum(t[k]["score"] < b[k]["score"] for k in common) + 0.5 * sum(
        t[k]["score"] == b[k]["score"] for k in common
    )
    notes = sorted({r["note"] for r in base_rows + tuned_rows if r.get("note")})
    return {
        "videos": len(common),
        "prompts": len(prompts),
        "skipped": {"base": len(base_rows) - len(common), "lora": len(tuned_rows) - len(common)},
        "metrics": table,
        "prompt_win_rate": sum(p["win"] for p in prompts.values()) / len(prompts),
        "video_win_rate": videos_won / len(common),
        "per_prompt": prompts,
        "notes": notes,
        "epi_computed": any("epi_pairs" in r for r in base_rows + tuned_rows),
    }


def difference_cell(m: dict) -> str:
    """`Δ [low, high]` (* when the interval excludes 0) | the LoRA's per-prompt win rate in that metric."""
    if m.get("delta") is None:
        return "n/a | n/a"
    low, high = m["ci"]
    star = "*" if low > 0 or high < 0 else ""
    won = (
        "-"
        if m["prompt_win_rate"] is None
        else f"{100 * m['prompt_win_rate']:.0f}% of {m['prompts_compared']}"
    )
    return f"{m['delta']:+.4g} [{low:+.4g}, {high:+.4g}]{star} | {won}"


def format_table(result: dict) -> str:
    """A side-by-side Markdown table and the win rates."""
    fmt = lambda v: "n/a" if v is None else f"{v:.5g}"
    lines = [
        "| metric | base | LoRA | better is | Δ LoRA − base [95% CI] | prompts won |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["metrics"].values():
        direction = {True: "lower", False: "higher", None: "-"}[m["lower_is_better"]]
        mark = " ✓" if m["improved"] else ""
        lines.append(
            f"| {m['label']} | {fmt(m['base'])} | {fmt(m['lora'])}{mark} | {direction} | "
            f"{difference_cell(m)} |"
        )
    lines.append("")
    geometry = result.get("geometry")
    if geometry:
        weights = f" ({geometry['weights']})" if geometry["weights"] else ""
        lines.append(
            f"Geometry columns (MVCS, 3DCS, PSNR, SSIM, LPIPS) scored by {geometry['backend']}{weights} on "
            f"{geometry['num_frames']} frames; MVCS is in that model's depth units: compare it only with "
            "tables scored by the same model"
        )
    lines.append(
        f"Δ: mean per-prompt difference, 95% percentile-bootstrap CI over prompts ({RESAMPLES} resamples, "
        "seed 0); * where the CI excludes 0 (a real change at that level)"
    )
    lines.append(
        f"LoRA wins {100 * result['prompt_win_rate']:.1f}% of {result['prompts']} prompts "
        f"({100 * result['video_win_rate']:.1f}% of {result['videos']} videos) on 3DCS"
    )
    held = result.get("heldout_pairs")
    if held and held.get("heldout_accuracy_before") is not None:
        lines.append(
            f"trainer's held-out preference pairs ({held['pairs']}): accuracy "
            f"{100 * held['heldout_accuracy_before']:.1f}% before -> "
            f"{100 * held['heldout_accuracy_after']:.1f}% after"
        )
    if result.get("epi_computed") and result["metrics"]["epi"]["delta"] is None:
        lines.append(
            "NOTE: Epi was computed, but no video had a frame pair with enough matches (see epi_pair_matches)"
        )
    for metric, why in NO_VALUE.items():
        missing = result["metrics"].get(metric, {}).get("without_value") or {}
        if any(missing.values()):
            lines.append(
                f"NOTE: {LABELS[metric]} has no value for {missing['base']} of {result['videos']} base "
                f"videos and {missing['lora']} of {result['videos']} LoRA videos ({why}); they are left "
                "out of its means, differences and win rates, never counted as 0"
            )
    lines += [f"NOTE: {n}" for n in result["notes"]]
    return "\n".join(lines)


PANELS_PER_ROW = 4


def comparison_figure(result: dict):
    """Bars: base vs LoRA per metric (one panel each, the metrics without values left out) and the per-prompt
    win rate, at most PANELS_PER_ROW panels a row; the metrics without a value are named below."""
    plt = pyplot()
    metrics = [m for m in result["metrics"].values() if m["base"] is not None and m["lora"] is not None]
    panels = len(metrics) + 1
    cols = min(panels, PANELS_PER_ROW)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.7 * rows + 0.3), dpi=100, squeeze=False, layout="constrained"
    )
    axes = list(axes.flat)
    better = {True: "lower is better", False: "higher is better", None: "reported only"}
    for ax, m in zip(axes, metrics):
        bars = ax.bar(["base", "LoRA"], [m["base"], m["lora"]], color=["tab:gray", "tab:blue"])
        ax.bar_label(bars, labels=[number(m["base"]), number(m["lora"])], fontsize=9, padding=2)
        ax.margins(y=0.2)
        tidy_axis(ax.yaxis, bins=4)
        ax.set_title(f"{m['label']}\n({better[m['lower_is_better']]})", fontsize=10)
        ax.tick_params(labelsize=9)
    won = axes[len(metrics)]
    bars = won.bar(["LoRA"], [100 * result["prompt_win_rate"]], color="tab:green", width=0.5)
    won.bar_label(bars, fmt="%.0f%%", fontsize=9, padding=2)
    won.set_xlim(-0.75, 0.75)
    won.set_ylim(0, 115)
    won.set_yticks([0, 25, 50, 75, 100])
    won.axhline(50, color="k", linestyle="--", linewidth=0.8)
    won.set_title(f"prompts won (of {result['prompts']})\n(dashed: even, 50%)", fontsize=10)
    won.tick_params(labelsize=9)
    for ax in axes[panels:]:
        ax.set_axis_off()
    missing = [m["label"] for m in result["metrics"].values() if m not in metrics]
    if missing:
        fig.supxlabel(f"no value: {', '.join(missing)}", fontsize=10)
    if result["notes"]:
        fig.suptitle("scores from random-weights geometry: not meaningful", fontsize=10, color="tab:red")
    return fig


def plot_comparison(result: dict, path: str | os.PathLike) -> None:
    """comparison_figure as a PNG."""
    save_figure(comparison_figure(result), path, dpi=100)


EVALUATION_FILE = "evaluation.json"
FRAMES_PNG = "evaluation_frames.png"  # the same prompts and seeds before and after (engine.figures)


@dataclass
class EvaluateInputs:
    prompts: str | os.PathLike  # the held-out prompt file
    lora: str | os.PathLike  # the trained LoRA (folder or file)
    generation: (
        GenerationConfig  # model, pipeline and sampler; evaluate's seeds and candidate count replace its own
    )


@dataclass
class EvaluateSummary:
    table: Path  # the stage's output: evaluation.json (and .md, .png beside it)
    result: dict
    skipped: bool = False  # a finished evaluation was kept
    waiting: bool = False  # sharded: other shards' candidates are not all scored yet (or one reports)

    def __str__(self) -> str:
        if self.waiting:
            return (
                f"this shard's candidates done; {self.table} is written by the shard that completes the set"
            )
        if self.skipped:
            return f"complete; skipped ({self.table})"
        return f"{self.table}: LoRA wins {100 * self.result['prompt_win_rate']:.1f}% of prompts"


def _stems(scores: Path) -> set[str]:
    """The candidates (video stems) with a score row (ok or error) in a scores file or its shard files."""
    return {Path(row["video"]).stem for row in read_sharded(scores)}


@one_process_per_shard
def run(
    cfg: EvaluateConfig, inputs: EvaluateInputs, out_dir: str | os.PathLike, make_scorer, *, shard: Shard
) -> EvaluateSummary:
    """Generate this process's shard (engine.stages.sharding) of the held-out prompts × seeds without and
    with the LoRA into out_dir/eval/{base,lora}, score those videos with the scorer `make_scorer()` gives
    (engine.stages.score.Scorer; built only when needed), and, once every candidate of both runs is scored
    (rank 0 after a barrier, or the shard that completes the set), write out_dir/evaluation.{json,md,png}.
    A finished evaluation.json is kept."""
    from videogpa.engine.models import get_adapter
    from videogpa.engine.stages import generate, score

    out_dir = Path(out_dir)
    path = out_dir / EVALUATION_FILE
    if path.is_file():
        return EvaluateSummary(path, json.loads(path.read_text()), skipped=True)
    lora = Path(inputs.lora)
    base = dataclasses.replace(
        inputs.generation,
        num_candidates=cfg.num_candidates,
        seed=cfg.seed,
        lora=None,
        lora_scale=cfg.lora_scale,
    )
    items, _ = generate.load_items(base, inputs.prompts)
    seeds = generate.candidate_seeds(base.num_candidates, base.seed)
    wanted = {c.stem for c in (generate.CandidateSpec(item, s) for item in items for s in seeds)}
    batches = generate.shard_batches(get_adapter(base.model), items, seeds, base.batch_size, shard)
    mine = {c.stem for batch in batches for c in batch}
    scores, scorer = {}, None
    for name, adapter in (("base", None), ("lora", lora)):
        folder = out_dir / "eval" / name
        gen = dataclasses.replace(base, lora=adapter and str(adapter))
        # unlocked: this run's lock of out_dir covers eval/, where one shard scores while another generates
        generated = generate.run.__wrapped__(gen, inputs.prompts, folder, shard=shard)
        print(f"[evaluate] {name}: {generated}", flush=True)
        scorer = make_scorer()
        scored = score.run.__wrapped__(
            scorer.cfg,
            generated.manifest,
            folder,
            scorer=scorer,
            shard=shard,
            select=lambda jobs: [j for j in jobs if j.video.stem in mine],
        )
        print(f"[evaluate] {name} score: {scored}", flush=True)
        scores[name] = scored.scores
    if not finishes(shard, lambda: all(wanted <= _stems(s) for s in scores.values())):
        return EvaluateSummary(path, {}, waiting=True)
    with sole(out_dir, "evaluate.report") as reporting:
        if not reporting:
            return EvaluateSummary(path, {}, waiting=True)
        if path.is_file():  # another shard reported meanwhile
            return EvaluateSummary(path, json.loads(path.read_text()), skipped=True)
        return _report(cfg, inputs, out_dir, scores, lora, scorer.cfg)


def geometry_description(score_cfg) -> dict:
    """Which geometry model made the table's columns (MVCS is in its depth units, 3DCS from its clouds)."""
    weights = score_cfg.weights and Path(score_cfg.weights).name
    return {"backend": score_cfg.geometry, "weights": weights, "num_frames": score_cfg.num_frames}


def _report(
    cfg: EvaluateConfig, inputs: EvaluateInputs, out_dir: Path, scores: dict, lora: Path, score_cfg
) -> EvaluateSummary:
    """The table of the two scored runs: evaluation.json, .md and .png in out_dir."""
    path = out_dir / EVALUATION_FILE
    result = compare_scores(scores["base"], scores["lora"])
    result.update(
        {
            "geometry": geometry_description(score_cfg),
            "lora": str(lora),
            "lora_scale": cfg.lora_scale,
            "prompts_file": str(inputs.prompts),
            "seeds": list(range(cfg.seed, cfg.seed + cfg.num_candidates)),
        }
    )
    train_eval = lora.parent / "eval.json" if lora.is_file() else lora / "eval.json"
    if train_eval.is_file():  # the trainer's preference accuracy on held-out pairs, before/after
        result["heldout_pairs"] = json.loads(train_eval.read_text())
    table = format_table(result)
    write_atomic(out_dir / "evaluation.md", table + "\n")
    plot_comparison(result, out_dir / "evaluation.png")
    save_before_after_grid(out_dir / "eval" / "base", out_dir / "eval" / "lora", out_dir / FRAMES_PNG)
    write_json_atomic(path, result)
    print(table, flush=True)
    return EvaluateSummary(path, result)
