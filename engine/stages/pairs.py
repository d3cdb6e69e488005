"""The pairs stage: scored candidates → the pair index (JSONL), a report (JSON) and histograms (PNG).

The paper's rule: drop failed scores and static videos (camera-motion score below pairs.min_motion), then per
prompt pair the best (lowest 3DCS) and the worst remaining candidate, kept when worst − best ≥
pairs.min_gap.

Score rows (recipes/score.py) are joined with the generation manifest by video path when a manifest is
given: the manifest supplies what the score rows lack (prompt, prompt_id, seed, latents, ...). Relative
`latents`/`image` paths are resolved against the manifest's folder (else the scores file's folder), and the
index stores absolute paths. A video scored several times counts with its last "ok" row.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videogpa.engine.core.config import PairsConfig
from videogpa.engine.core.figures import save_pairs_figure
from videogpa.engine.io.lock import one_process_per_folder
from videogpa.engine.io.plots import pyplot, save_figure, tidy_axis
from videogpa.engine.io.records import read_jsonl, write_json_atomic, write_jsonl_atomic
from videogpa.engine.io.sharded import sharded_exists, sharded_rows

PAIRS_FILE = "pairs.jsonl"
REPORT_FILE = "pairs_report.json"
SCORES_PNG = "pairs_scores.png"
GAPS_PNG = "pairs_gaps.png"
EXAMPLES_PNG = "pairs_examples.png"  # a few pairs' winner and loser frames and error maps
FIGURES = "figures"  # the score stage's pictures, beside its scores file (engine.stages.score.FIGURES)
_PATH_FIELDS = ("latents", "image")
DROP_REASONS = ("failed", "static", "too_few_candidates", "small_gap")


@dataclass(frozen=True)
class ScoredVideo:
    """One scored video of one prompt (score: lower is more 3D-consistent; None when scoring failed)."""

    prompt: str
    video: str
    score: float | None
    motion: float | None
    extra: dict = field(default_factory=dict, compare=False)  # carried into the pair index unchanged

    @property
    def failed(self) -> bool:
        return self.score is None or not math.isfinite(self.score)


@dataclass(frozen=True)
class Pair:
    pair_id: str
    prompt: str
    winner: ScoredVideo
    loser: ScoredVideo

    @property
    def gap(self) -> float:
        return self.loser.score - self.winner.score

    def to_row(self) -> dict:
        return {
            "pair_id": self.pair_id,
            "prompt": self.prompt,
            "gap": self.gap,
            "winner": asdict(self.winner),
            "loser": asdict(self.loser),
        }


@dataclass
class SelectionReport:
    """Counts of what was kept and why the rest was dropped (videos for failed/static, prompts otherwise)."""

    prompts: int = 0
    candidates: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)
    gaps: list[float] = field(default_factory=list)  # every prompt's best-worst gap, kept or not

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "candidates": self.candidates,
            "pairs": self.pairs,
            "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS},
        }


def select_pairs(
    candidates: Iterable[ScoredVideo],
    min_gap: float = PairsConfig.min_gap,
    min_motion: float = PairsConfig.min_motion,
) -> tuple[list[Pair], SelectionReport]:
    """Best-vs-worst pair per prompt; deterministic (ties go to the lexically first video)."""
    if min_gap < 0 or min_motion < 0:
        raise ValueError(f"select_pairs: min_gap and min_motion must be ≥ 0, got {min_gap}, {min_motion}")
    report = SelectionReport()
    by_prompt: dict[str, list[ScoredVideo]] = defaultdict(list)
    seen_prompts = set()
    for c in candidates:
        report.candidates += 1
        seen_prompts.add(c.prompt)
        if c.failed:
            report.dropped["failed"] += 1
        elif c.motion is None or not math.isfinite(c.motion) or c.motion < min_motion:
            report.dropped["static"] += 1
        else:
            by_prompt[c.prompt].append(c)
    report.prompts = len(seen_prompts)
    report.dropped["too_few_candidates"] = len(seen_prompts) - sum(len(v) >= 2 for v in by_prompt.values())
    pairs = []
    for prompt in sorted(by_prompt):
        group = by_prompt[prompt]
        if len(group) < 2:
            continue
        best = min(group, key=lambda c: (c.score, c.video))
        worst = min(group, key=lambda c: (-c.score, c.video))
        report.gaps.append(worst.score - best.score)
        if worst.score - best.score < min_gap:
            report.dropped["small_gap"] += 1
            continue
        pairs.append(Pair(f"pair{len(pairs):06d}", prompt, best, worst))
    report.pairs = len(pairs)
    return pairs, report


def _video_key(path: str, base: Path) -> str:
    return str((base / path).resolve())


def load_candidates(
    scores: str | os.PathLike, manifest: str | os.PathLike | None = None
) -> list[ScoredVideo]:
    """One ScoredVideo per scored video (prompt key: prompt_id if known, else the prompt text). The scores
    file and the manifest are each read with their shard files (engine.io.sharded)."""
    scores = Path(scores)
    base = Path(manifest).parent if manifest is not None else scores.parent
    for path in (scores, manifest):
        if path is not None and not sharded_exists(path):
            raise ValueError(f"{path} does not exist")
    by_video: dict[str, dict] = {}
    if manifest is not None:
        for file, _, row in sharded_rows(manifest):
            if not isinstance(row.get("video"), str):
                raise ValueError(f"generation manifest {file}: a row lacks the string field 'video': {row}")
            by_video[_video_key(row["video"], base)] = {"_manifest": row}
    for file, number, row in sharded_rows(scores):
        if not isinstance(row.get("video"), str) or row.get("status") not in ("ok", "error"):
            raise ValueError(f"{file}:{number}: a score row needs 'video' and 'status' ('ok' or 'error')")
        key = str(Path(row["video"]).resolve())
        if manifest is not None and key not in by_video:
            raise ValueError(
                f"{file}:{number}: video {row['video']} is not in the generation manifest {manifest}"
            )
        entry = by_video.setdefault(key, {})
        if row["status"] == "ok" or entry.get("_score", {}).get("status") != "ok":
            entry["_score"] = row
    candidates = []
    for video, entry in sorted(by_video.items()):
        if "_score" not in entry:
            continue  # generated, not scored (yet)
        row = {**entry.get("_manifest", {}), **entry["_score"]}
        for key in _PATH_FIELDS:
            if isinstance(row.get(key), str):
                row[key] = str((base / row[key]).resolve())
        prompt_key = row.get("prompt_id") or row.get("prompt")
        if not isinstance(prompt_key, str):
            raise ValueError(
                f"{scores}: video {video} has no 'prompt_id' or 'prompt' (give the generation manifest "
                "to join)"
            )
        ok = row["status"] == "ok"
        score = row.get("score") if ok else None
        motion = row.get("motion") if ok else None
        extra = {k: v for k, v in row.items() if k not in ("video", "score", "motion")}
        candidates.append(ScoredVideo(prompt_key, video, score, motion, extra))
    return candidates


def pair_row(pair: Pair) -> dict:
    """Pair.to_row() plus the prompt text, its id and the I2V image at the top level."""
    row = pair.to_row()
    row["prompt_id"] = pair.prompt
    row["prompt"] = pair.winner.extra.get("prompt", pair.prompt)
    row["image"] = pair.winner.extra.get("image")
    return row


@dataclass
class PairsSummary:
    index: Path  # the stage's output: the pair index
    pairs: list[Pair]
    report: SelectionReport
    changed: bool  # False: the index on disk already held exactly these pairs

    def __str__(self) -> str:
        return format_report(self.report) + ("" if self.changed else " (unchanged)")


def histogram_figure(
    values: list[float], title: str, xlabel: str, ylabel: str, threshold: float | None = None
):
    """A histogram with short, well-spaced tick labels, and the selection threshold as a labelled line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=100, layout="constrained")
    ax.hist(values, bins=max(5, min(40, len(values))), color="tab:blue")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"min_gap {threshold:g}")
        ax.legend(fontsize=9)
    tidy_axis(ax.xaxis, bins=6)
    tidy_axis(ax.yaxis, integer=True)
    if not values:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=9)
    return fig


def _plot(candidates: list[ScoredVideo], report: SelectionReport, min_gap: float, out_dir: Path) -> None:
    scores = [c.score for c in candidates if not c.failed]
    save_figure(
        histogram_figure(scores, "3DCS of the scored candidates (lower is better)", "3DCS", "videos"),
        out_dir / SCORES_PNG,
        dpi=100,
    )
    save_figure(
        histogram_figure(
            report.gaps, "per-prompt gap: worst − best 3DCS", "3DCS gap", "prompts", threshold=min_gap
        ),
        out_dir / GAPS_PNG,
        dpi=100,
    )


@one_process_per_folder
def run(
    cfg: PairsConfig,
    scores: str | os.PathLike,
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
) -> PairsSummary:
    """The pairs stage: select pairs from a scores file (joined with its generation manifest when given)
    and write out_dir/{pairs.jsonl, pairs_report.json, *.png}. An existing non-empty index that differs from
    the new selection is kept (ValueError) unless cfg.overwrite."""
    min_gap, min_motion = cfg.min_gap, cfg.min_motion
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidates = load_candidates(scores, manifest)
    pairs, report = select_pairs(candidates, min_gap=min_gap, min_motion=min_motion)
    rows = [pair_row(p) for p in pairs]
    index = out_dir / PAIRS_FILE
    old = read_jsonl(index, allow_truncated_tail=False) if index.is_file() else None
    fresh = json.loads(json.dumps(rows))  # what the rows read back as
    if old and old != fresh and not cfg.overwrite:  # an empty index holds nothing anyone could depend on
        raise ValueError(
            f"{index} exists and differs from the pairs the current scores give ({len(old)} vs {len(rows)} "
            "pairs); move it away or pass overwrite (--overwrite) to replace it"
        )
    write_jsonl_atomic(index, rows)
    ok = [c.score for c in candidates if not c.failed]
    summary = {
        **report.to_dict(),
        "min_gap": min_gap,
        "min_motion": min_motion,
        "scores": str(Path(scores).resolve()),
        "manifest": manifest and str(Path(manifest).resolve()),
        "score_mean": sum(ok) / len(ok) if ok else None,
        "gap_mean": sum(report.gaps) / len(report.gaps) if report.gaps else None,
        "gaps": report.gaps,
    }
    write_json_atomic(out_dir / REPORT_FILE, summary)
    if cfg.plots:
        _plot(candidates, report, min_gap, out_dir)
        save_pairs_figure(pairs, Path(scores).parent / FIGURES, out_dir / EXAMPLES_PNG)
    return PairsSummary(index, pairs, report, changed=old != fresh)


def format_report(report: SelectionReport) -> str:
    d = report.to_dict()
    dropped = ", ".join(f"{k} {v}" for k, v in d["dropped"].items())
    gaps = [g for g in report.gaps if math.isfinite(g)]
    gap = f"; mean gap {sum(gaps) / len(gaps):.4f}" if gaps else ""
    return (
        f"{d['pairs']} pairs from {d['prompts']} prompts / {d['candidates']} candidates "
        f"(dropped: {dropped}){gap}"
    )
