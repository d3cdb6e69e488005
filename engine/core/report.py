"""DIR/report.html: one file that opens in a browser (images by relative path, no server) summarising a
training run or a loop folder from the records they already hold: configuration and versions, counts per
stage, score histograms and pictures, training curves, held-out accuracy over steps, validation frame grids,
and the before/after table with win rates. Reads JSON, JSONL, YAML text and file names only (nothing is
unpickled or recomputed); a section whose records are missing is left out."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.io.sharded import read_sharded, sharded_exists

REPORT = "report.html"
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
img{max-width:100%;border:1px solid #eee;margin:4px 0}pre{background:#f6f6f6;padding:8px;overflow:auto}
h2{border-bottom:1px solid #ddd;margin-top:1.6em}.note{color:#a33}
.demo{background:#fff3cd;border:2px solid #e0a800;padding:10px 14px;font-size:1.15em;font-weight:bold}"""


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def number(value, signed: bool = False) -> str:
    """How the report writes a number: 4 significant digits, "n/a" for a missing (None) or non-finite value;
    whole numbers and text as they are."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:+.4g}" if signed else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    """Every cell through `number` (a missing value reads "n/a")."""
    cell = lambda v: html.escape(number(v))  # noqa: E731
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Page:
    """The report being written: sections of HTML, images referenced relative to the report's folder."""

    def __init__(self, root: Path):
        self.root, self.parts = root, []

    def section(self, title: str) -> None:
        self.parts.append(f"<h2>{html.escape(title)}</h2>")

    def add(self, text: str) -> None:
        self.parts.append(text)

    def banner(self, text: str) -> None:
        """A line in a box at the top of the page (the first thing a reader sees)."""
        self.parts.insert(0, f'<p class="demo">{html.escape(text)}</p>')

    def text(self, text: str, cls: str = "") -> None:
        self.parts.append(f"<p{f' class={cls!r}' if cls else ''}>{html.escape(text)}</p>")

    def image(self, path: Path, caption: str = "") -> None:
        if path.is_file():
            rel = html.escape(os.path.relpath(path, self.root))
            self.parts.append(
                f'<figure><img src="{rel}" alt="{html.escape(caption or path.name)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )

    def html(self, title: str) -> str:
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{''.join(self.parts)}</body></html>\n"
        )


def _config_and_versions(page: _Page, run: Path) -> None:
    info, config = _json(run / "run_info.json"), run / "config.yaml"
    if info is None and not config.is_file():
        return
    page.section("Configuration and versions")
    if info is not None:
        page.add(_table(["", "value"], [[k, v] for k, v in info.items() if k != "demo"]))  # demo: the banner
    if config.is_file():
        page.add(
            f"<details><summary>resolved config ({html.escape(os.path.relpath(config, page.root))})</summary>"
            f"<pre>{html.escape(config.read_text())}</pre></details>"
        )


def _stage_counts(page: _Page, loop: Path) -> None:
    manifest, scores, pairs = loop / "generated" / "manifest.jsonl", loop / "generated" / "scores.jsonl", None
    rows = []
    if sharded_exists(manifest):
        gen = read_sharded(manifest)
        rows += [
            ["generate", "prompts", len({r.get("prompt_id") for r in gen})],
            ["generate", "candidates", len(gen)],
        ]
    if sharded_exists(scores):
        latest: dict[str, dict] = {}
        for r in read_sharded(scores):
            if latest.get(r["video"], {}).get("status") != "ok":
                latest[r["video"]] = r
        ok = sum(r.get("status") == "ok" for r in latest.values())
        rows += [["score", "scored", ok], ["score", "errors", len(latest) - ok]]
    pairs = _json(loop / "pairs" / "pairs_report.json")
    if pairs is not None:
        rows.append(["pairs", "kept", pairs["pairs"]])
        rows += [["pairs", f"dropped: {reason}", n] for reason, n in pairs["dropped"].items()]
    for split in ("train", "heldout"):
        index = loop / "shards" / split / "index.jsonl"
        if index.is_file():
            rows.append(["encode", f"{split} pairs", len(read_sharded(index))])
    if rows:
        page.section("Counts per stage")
        page.add(_table(["stage", "what", "count"], rows))
    if pairs is not None or (loop / "generated" / "figures").is_dir():
        page.section("Scores")
        if pairs is not None and pairs.get("score_mean") is not None:
            page.text(
                f"mean 3DCS {number(pairs['score_mean'])}; "
                f"mean best-worst gap {number(pairs.get('gap_mean'))} "
                f"(min_gap {number(pairs['min_gap'])}, min_motion {number(pairs['min_motion'])})"
            )
        page.image(loop / "pairs" / "pairs_scores.png", "3DCS of the scored candidates")
        page.image(loop / "pairs" / "pairs_gaps.png", "per-prompt worst − best gap")
        page.image(loop / "pairs" / "pairs_examples.png", "pairs: winners' and losers' frames and error maps")
        for png in sorted((loop / "generated" / "figures").glob("*.png"))[:4]:
            page.image(png, f"3D consistency of {png.stem}")


def _training(page: _Page, run: Path) -> None:
    result, history = _json(run / "eval.json"), _json(run / "heldout_history.json")
    if not (run / "metrics.jsonl").is_file():
        return
    page.section("Training")
    if result and result.get("heldout_accuracy_before") is not None:
        page.text(
            f"held-out preference accuracy ({result['pairs']} pairs never trained on): "
            f"{100 * result['heldout_accuracy_before']:.1f}% before -> "
            f"{100 * result['heldout_accuracy_after']:.1f}% after {result['steps']} steps"
        )
    page.image(run / "training_curves.png", "DPO loss and training-batch accuracy")
    page.image(run / "heldout_accuracy.png", "held-out preference accuracy")
    if history:
        page.add(
            _table(
                ["step", "held-out accuracy"], [[h["step"], f"{100 * h['accuracy']:.1f}%"] for h in history]
            )
        )
    steps = sorted((run / "validation").glob("step_*/validation.json"), key=lambda p: int(p.parent.name[5:]))
    if steps:
        page.section("Validation videos")
        for path in steps:
            summary = json.loads(path.read_text())
            mean = summary.get("mean_3dcs")
            caption = f"step {summary['step']}" + (" (base model)" if summary["step"] == 0 else "")
            page.image(
                path.parent / summary.get("frames", "frames.png"),
                caption + (f", mean 3DCS {number(mean)}" if mean is not None else ""),
            )


def _evaluation(page: _Page, loop: Path) -> None:
    result = _json(loop / "evaluation.json")
    if result is None:
        return
    page.section("Before / after")
    rows = []
    for m in result["metrics"].values():
        ci = m.get("ci") or [None, None]
        better = {True: "lower", False: "higher", None: "-"}[m.get("lower_is_better")]
        won = m.get("prompt_win_rate")
        rows.append(
            [
                m["label"],
                m.get("base"),
                m.get("lora"),
                better,
                number(m.get("delta"), signed=True),
                "n/a" if ci[0] is None else f"[{number(ci[0], signed=True)}, {number(ci[1], signed=True)}]",
                "n/a" if won is None else f"{100 * won:.0f}%",
            ]
        )
    header = ["metric", "base", "LoRA", "better is", "Δ LoRA − base", "95% CI", "prompts won"]
    page.add(_table(header, rows))
    page.text(
        f"LoRA wins {100 * result['prompt_win_rate']:.1f}% of {result['prompts']} prompts "
        f"({100 * result['video_win_rate']:.1f}% of {result['videos']} videos) on 3DCS"
    )
    for note in result.get("notes", []):
        page.text(f"NOTE: {note}", cls="note")
    page.image(loop / "evaluation.png", "base vs LoRA per metric, prompts won")
    page.image(loop / "evaluation_frames.png", "the same prompt and seed before and after")


def write_report(folder: str | os.PathLike) -> Path:
    """Write folder/report.html for a loop folder (with train/ inside) or a training run folder; returns
    it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"report: {folder} is not a folder")
    loop = (
        (folder / "train").is_dir()
        or (folder / "generated").is_dir()
        or (folder / "evaluation.json").is_file()
    )
    run = folder / "train" if loop else folder
    if not loop and not (run / "metrics.jsonl").is_file():
        raise ValueError(
            f"report: {folder} is neither a training run (metrics.jsonl) nor a loop folder (train/)"
        )
    page = _Page(folder)
    _config_and_versions(page, run)
    demo = (_json(run / "run_info.json") or {}).get("demo")
    if demo:
        page.banner(demo[0].upper() + demo[1:])
    if loop:
        _stage_counts(page, folder)
    _training(page, run)
    _evaluation(page, folder)
    path = folder / REPORT
    write_atomic(path, page.html(f"videogpa {'loop' if loop else 'training run'}: {folder.name}"))
    return path
