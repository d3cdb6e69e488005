"""The pairs stage: scored candidates → the pair index (JSONL), a report (JSON) and histograms (PNG).

Score rows (recipes/score.py) are joined with the generation manifest by video path when a manifest is
given: the manifest supplies what the score rows lack (prompt, prompt_id, seed, latents, ...). Relative
`latents`/`image` paths are resolved against the manifest's folder (else the scores file's folder), and the
index stores absolute paths. A video scored several times counts with its last "ok" row.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from videogpa.engine.data.pair_selection import Candidate, Pair, SelectionReport, select_pairs
from videogpa.engine.data.records import read_jsonl, write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
REPORT_FILE = "pairs_report.json"
SCORES_PNG = "pairs_scores.png"
GAPS_PNG = "pairs_gaps.png"
_PATH_FIELDS = ("latents", "image")


def _video_key(path: str, base: Path) -> str:
    return str((base / path).resolve())


def load_candidates(scores: str | os.PathLike, manifest: str | os.PathLike | None = None) -> list[Candidate]:
    """One Candidate per scored video (prompt key: prompt_id if known, else the prompt text)."""
    scores = Path(scores)
    base = Path(manifest).parent if manifest is not None else scores.parent
    by_video: dict[str, dict] = {}
    if manifest is not None:
        for row in read_jsonl(manifest):
            if not isinstance(row.get("video"), str):
                raise ValueError(
                    f"generation manifest {manifest}: a row lacks the string field 'video': {row}"
                )
            by_video[_video_key(row["video"], base)] = {"_manifest": row}
    for number, row in enumerate(read_jsonl(scores), start=1):
        if not isinstance(row.get("video"), str) or row.get("status") not in ("ok", "error"):
            raise ValueError(f"{scores}:{number}: a score row needs 'video' and 'status' ('ok' or 'error')")
        key = str(Path(row["video"]).resolve())
        if manifest is not None and key not in by_video:
            raise ValueError(
                f"{scores}:{number}: video {row['video']} is not in the generation manifest {manifest}"
            )
        entry = by_video.setdefault(key, {})
        if row["status"] == "ok" or entry.get("_score", {}).get("status") != "ok":
            entry["_score"] = row
    candidates = []
    for video, entry in sorted(by_video.items()):
        if "_score" not in entry:
            continue  # generated, not scored (yet)
        row = {**entry.get("_manifest", {}), **entry["_score"]}
        for field in _PATH_FIELDS:
            if isinstance(row.get(field), str):
                row[field] = str((base / row[field]).resolve())
        prompt_key = row.get("prompt_id") or row.get("prompt")
        if not isinstance(prompt_key, str):
            raise ValueError(
                f"{scores}: video {video} has no 'prompt_id' or 'prompt' (give the generation manifest to join)"
            )
        ok = row["status"] == "ok"
        score = row.get("score") if ok else None
        motion = row.get("motion") if ok else None
        extra = {k: v for k, v in row.items() if k not in ("video", "score", "motion")}
        candidates.append(Candidate(prompt_key, video, score, motion, extra))
    return candidates


def pair_row(pair: Pair) -> dict:
    """Pair.to_row() plus the prompt text, its id and the I2V image at the top level."""
    row = pair.to_row()
    row["prompt_id"] = pair.prompt
    row["prompt"] = pair.winner.extra.get("prompt", pair.prompt)
    row["image"] = pair.winner.extra.get("image")
    return row


@dataclass
class PairsResult:
    pairs: list[Pair]
    report: SelectionReport
    changed: bool  # False: the index on disk already held exactly these pairs


def _plot(candidates: list[Candidate], report: SelectionReport, min_gap: float, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [c.score for c in candidates if not c.failed]
    for name, values, title, line in (
        (SCORES_PNG, scores, "3DCS of scored candidates (lower is better)", None),
        (GAPS_PNG, report.gaps, "per-prompt worst - best 3DCS gap", min_gap),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(values, bins=max(5, min(40, len(values))), color="tab:blue")
        if line is not None:
            ax.axvline(line, color="tab:red", linestyle="--", label=f"threshold {line:g}")
            ax.legend()
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("count")
        fig.tight_layout()
        tmp = out_dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, out_dir / name)


def build_pairs(
    scores: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    manifest: str | os.PathLike | None = None,
    min_gap: float = 0.05,
    min_motion: float = 0.001,
    overwrite: bool = False,
    plots: bool = True,
) -> PairsResult:
    """Select pairs and write out_dir/{pairs.jsonl, pairs_report.json, *.png}. An existing non-empty index
    that differs from the new selection is kept (ValueError) unless overwrite."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidates = load_candidates(scores, manifest)
    pairs, report = select_pairs(candidates, min_gap=min_gap, min_motion=min_motion)
    rows = [pair_row(p) for p in pairs]
    index = out_dir / PAIRS_FILE
    old = read_jsonl(index, allow_truncated_tail=False) if index.is_file() else None
    fresh = json.loads(json.dumps(rows))  # what the rows read back as
    if old and old != fresh and not overwrite:  # an empty index holds nothing anyone could depend on
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
    if plots:
        _plot(candidates, report, min_gap, out_dir)
    return PairsResult(pairs, report, changed=old != fresh)


def format_report(report: SelectionReport) -> str:
    d = report.to_dict()
    dropped = ", ".join(f"{k} {v}" for k, v in d["dropped"].items())
    gaps = [g for g in report.gaps if math.isfinite(g)]
    gap = f"; mean gap {sum(gaps) / len(gaps):.4f}" if gaps else ""
    return (
        f"{d['pairs']} pairs from {d['prompts']} prompts / {d['candidates']} candidates "
        f"(dropped: {dropped}){gap}"
    )
