"""Every picture a run writes, checked as the eye would: the PNG's size, the frame tiles' size in pixels and
their content (enlarged whole, nearest neighbour), no tick labels or other texts running into each other or
off the picture, no letters too small to read, labelled reference lines and legends that say it right; and
the report's numbers (4 significant digits, "n/a" where a value is missing) and its warning for the built-in
toys."""

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from tests.figure_checks import MIN_TEXT_PX, assert_reads_well, image_axes_boxes, png, texts_over_images
from videogpa.engine.core import figures
from videogpa.engine.core.report import number, write_report
from videogpa.engine.io.plots import save_figure
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.stages.evaluate import METRICS, compare_scores, comparison_figure
from videogpa.engine.stages.pairs import histogram_figure
from videogpa.engine.train import run_logs

READABLE_TILE = 64  # the floor: a frame tile's short side in pixels


def saved(fig, path, dpi):
    """The figure's texts and image boxes at `dpi`, then the PNG written at that dpi (as the stages do)."""
    texts = assert_reads_well(fig, dpi)
    boxes = image_axes_boxes(fig)
    size = tuple(round(v) for v in fig.get_size_inches() * dpi)
    save_figure(fig, path, dpi=dpi)
    image = png(path)
    assert image.shape[1::-1] == size  # the PNG is the figure, pixel for pixel
    return texts, boxes, image


# --------------------------------------------------------------------------------------------- pairs_examples
def pair_arrays(t: int, h: int, w: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.rand(t, 3, h, w, generator=g).half(),
        "error": torch.rand(t, h, w, generator=g).half(),
    }


@pytest.mark.parametrize(
    "h, w, frames, count",
    [(8, 8, 5, 1), (32, 32, 5, 2), (64, 64, 5, 1), (48, 80, 4, 1), (120, 200, 3, 1)],
    ids=["8px", "32px-synthetic-loop", "64px-tiny-loop", "48x80", "120x200"],
)
def test_pairs_examples_tiles_are_readable_and_show_the_frames(tmp_path, h, w, frames, count):
    title = (
        "a synthetic scene of boxes, the camera moves (orbit) around a long table (3DCS\xa0gap\xa00.00301)"
    )
    pairs = [
        {
            "title": title,
            "winner": ("3DCS 0.00165, motion 0.00997", pair_arrays(frames, h, w, 2 * i)),
            "loser": ("3DCS 0.004664, motion 0.00997", pair_arrays(frames, h, w, 2 * i + 1)),
        }
        for i in range(count)
    ]
    fig = figures.pairs_figure(pairs)
    texts, boxes, image = saved(fig, tmp_path / "pairs_examples.png", figures.DPI)
    assert not texts_over_images(fig, texts)
    assert len(boxes) == count * 4 * frames  # per pair: winner frames, its errors, loser frames, its errors
    factor, th, tw = figures.tile_shape(h, w)
    for left, top, width, height in boxes:
        assert min(width, height) >= READABLE_TILE, (width, height)
        assert abs(width - tw) <= 1 and abs(height - th) <= 1, (width, height, tw, th)
        assert image[top : top + height, left : left + width].std() > 0  # a picture, not a blank
    if factor > 1 or (th, tw) == (h, w):  # shown at a whole scale: every pixel is the frame's, sharp
        left, top, width, height = boxes[0]
        tile = image[top : top + height, left : left + width].astype(float)
        want = figures.enlarge(pairs[0]["winner"][1]["frames"][0].float().permute(1, 2, 0).numpy(), factor)
        assert tile.shape[:2] == want.shape[:2]
        assert np.abs(tile - 255 * want).max() <= 2.0
    words = " ".join(t.text.replace("\n", " ").replace("\xa0", " ") for t in texts)
    assert "winner: 3DCS 0.00165" in words and "loser: 3DCS 0.004664" in words and "gap 0.00301" in words


def test_validation_frame_grid_tiles(tmp_path):
    rows = [
        (f"a room, the camera pans (seed {s})  3DCS 0.2648 | MSE 0.2648 | motion 0.07226 | LPIPS off", v)
        for s, v in enumerate(torch.rand(2, 5, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    ]
    fig = figures.frame_grid(rows, "validation at step 0 (base model)")
    texts, boxes, _ = saved(fig, tmp_path / "g.png", figures.DPI)
    assert not texts_over_images(fig, texts)
    assert len(boxes) == 10 and all(min(w, h) >= READABLE_TILE for _, _, w, h in boxes)


def test_consistency_figure_reads_well(tmp_path):
    arrays = pair_arrays(5, 48, 48, 0)
    arrays["renders"] = arrays["frames"].flip(-1)
    arrays["hit"] = arrays["error"] > 0.2
    title = "scene0000_jitter.mp4: 3DCS 0.001716 | MSE 0.001716 | motion 0.4317 | LPIPS off"
    texts, boxes, _ = saved(figures.consistency_figure(arrays, title), tmp_path / "c.png", 90)
    assert len(boxes) == 20 and all(min(w, h) >= READABLE_TILE for _, _, w, h in boxes)
    assert {"frame", "render", "error"} <= {t.text for t in texts}


# ------------------------------------------------------------------------------------------ pairs histograms
@pytest.mark.parametrize(
    "values, threshold",
    [
        ([0.0012, 0.0013, 0.0015, 0.0016, 0.0017, 0.0019], 0.0),  # the tiny loop's (min_gap 0): ran together
        ([0.000101, 0.000104, 0.000108, 0.000113, 0.000119], 0.0005),  # ran together too
        ([0.000123, 0.000456, 0.00102, 0.0021, 0.0036, 0.00361], 0.0),
        ([0.0, 12345.678, 23456.789, 99999.5], 0.05),
        ([1e-7, 3.3e-6, 7.123e-6], 0.0),
        ([0.25], 0.05),
        ([], 0.05),
        (list(np.random.default_rng(0).uniform(0.01, 0.5, 300)), 0.05),
    ],
    ids=["tiny-loop-gaps", "long-decimals", "small-gaps", "large", "tiny", "one", "none", "many"],
)
def test_pairs_histograms_read_well(tmp_path, values, threshold):
    title = "per-prompt gap: worst − best 3DCS"
    fig = histogram_figure(values, title, "3DCS gap", "prompts", threshold=threshold)
    _, _, image = saved(fig, tmp_path / "pairs_gaps.png", 100)
    assert image.shape[:2] == (340, 560)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_result(extra_metric: bool = False) -> dict:
    """A real compare_scores table of 3 prompts × 2 seeds: every metric valued except LPIPS and Epi (never
    computed), one metric with a very long value, and (extra_metric) one more column than today's."""
    rng = np.random.default_rng(1)
    base, tuned = [], []
    for p in range(3):
        for s in range(2):
            row = {"prompt_id": f"p{p}", "seed": s, "status": "ok", "video": f"p{p}_{s}.mp4"}
            values = {
                "psnr": 27.3,
                "ssim": 0.86,
                "mvcs": 0.815,
                "score": 0.00207,
                "mse": 0.00207,
                "motion": 0.3,
            }
            base.append({**row, **{k: v * rng.uniform(0.9, 1.1) for k, v in values.items()}})
            tuned.append({**row, **{k: v * rng.uniform(0.9, 1.1) for k, v in values.items()}})
    for row in base + tuned:
        row["psnr"] *= 1234.5  # a value far from 1: its axis carries a power of ten
        if extra_metric:
            row["extra"] = rng.uniform(0.4, 0.6)
    if extra_metric:
        METRICS["extra"] = True
    try:
        result = compare_scores(base, tuned)
    finally:
        METRICS.pop("extra", None) if extra_metric else None
    result["notes"] = ["scores are NOT meaningful (random-weights geometry)"]
    return result


def test_evaluation_figure_reads_well(tmp_path):
    result = evaluation_result()
    texts, _, image = saved(comparison_figure(result), tmp_path / "evaluation.png", 100)
    shown = [t.text.split("\n")[0] for t in texts]
    assert {"PSNR", "SSIM", "MVCS", "3DCS", "MSE", "motion"} <= set(shown) and "LPIPS" not in shown
    assert any(t.text.startswith("prompts won") for t in texts)
    assert "no value: LPIPS, Epi, Epi robust (ours)" in [t.text for t in texts]
    assert all(t.px >= MIN_TEXT_PX for t in texts)
    assert image.shape[1] <= 1100  # 4 panels a row, not one long strip


def test_evaluation_figure_with_one_more_metric(tmp_path, monkeypatch):
    from videogpa.engine.stages import evaluate

    monkeypatch.setitem(evaluate.LABELS, "extra", "Extra metric")
    saved(comparison_figure(evaluation_result(extra_metric=True)), tmp_path / "evaluation.png", 100)


# -------------------------------------------------------------------------------------- training pictures
@pytest.mark.parametrize("kind", ["bars", "curve"])
def test_heldout_accuracy_names_its_50_percent_line(tmp_path, kind):
    if kind == "bars":
        fig = run_logs.heldout_accuracy_figure(0.5, 1.0, 48)
    else:
        history = [{"step": s, "accuracy": a} for s, a in ((0, 0.5), (15, 0.875), (30, 0.958), (60, 1.0))]
        fig = run_logs.heldout_curve_figure(history, 48)
    axes = fig.axes[0]
    (line,) = [ln for ln in axes.lines if list(ln.get_ydata()) == [50, 50]]
    texts, _, _ = saved(fig, tmp_path / "heldout_accuracy.png", 120)
    (label,) = [t for t in texts if "chance" in t.text]
    assert "50%" in label.text
    # the name sits at the line's height
    y = axes.transData.transform((0, 50))[1]
    assert label.box.y0 <= y <= label.box.y1


@pytest.mark.parametrize(
    "steps, legend", [(10, ["per step"]), (39, ["per step"]), (60, ["per step", "mean of the last 3 steps"])]
)
def test_training_curves_legend_says_it_right(tmp_path, steps, legend):
    records = [{"step": i, "loss": 0.7 - 0.001 * i, "accuracy": (i % 4) / 4} for i in range(1, steps + 1)]
    fig = run_logs.training_curves_figure(records)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
    texts, _, _ = saved(fig, tmp_path / "training_curves.png", 120)
    assert not any(re.search(r"\b1 steps\b", t.text) for t in texts)


# ---------------------------------------------------------------------------------------------- report.html
class Text(HTMLParser):
    """The page's text outside <pre> (the resolved config, shown verbatim), by table row."""

    def __init__(self):
        super().__init__()
        self.pre, self.rows, self.row, self.words, self.classes = 0, [], None, [], []

    def handle_starttag(self, tag, attrs):
        self.pre += tag == "pre"
        if tag == "tr":
            self.row = []
        if tag == "p":
            self.classes.append(dict(attrs).get("class"))

    def handle_endtag(self, tag):
        self.pre -= tag == "pre"
        if tag == "tr":
            self.rows.append(self.row)
            self.row = None

    def handle_data(self, data):
        if not self.pre:
            self.words.append(data)
            if self.row is not None and data.strip():
                self.row.append(data.strip())


def significant_digits(text: str) -> list[tuple[str, int]]:
    """Every decimal number in the text with its count of significant digits."""
    out = []
    for match in re.finditer(r"(?<![\w.])[-+]?\d+\.\d+(?:e[-+]?\d+)?(?![\d.])", text):
        mantissa = re.sub(r"e.*", "", match.group()).lstrip("+-").replace(".", "").lstrip("0")
        out.append((match.group(), len(mantissa)))
    return out


def test_number_helper():
    assert [number(v) for v in (None, float("nan"), float("inf"), 3, 0.1 + 0.2, 1 / 3, 27.283456, 1e-7)] == [
        "n/a",
        "n/a",
        "n/a",
        "3",
        "0.3",
        "0.3333",
        "27.28",
        "1e-07",
    ]
    assert number(-0.0123456, signed=True) == "-0.01235" and number(0.5, signed=True) == "+0.5"


@pytest.mark.parametrize("demo", [True, False])
def test_report_numbers_are_formatted_and_missing_values_read_na(tmp_path, demo):
    loop = tmp_path / "loop"
    (loop / "train").mkdir(parents=True)
    result = evaluation_result()
    write_json_atomic(loop / "evaluation.json", result)
    (loop / "train" / "metrics.jsonl").write_text('{"step": 1, "loss": 0.6931471805599453}\n')
    info = {"torch": "2.13.0", "python": "3.11.7", "seed": 0, "git_commit": None}
    if demo:
        info["demo"] = "built-in tiny model and synthetic data: numbers show the machinery, not a real model"
    write_json_atomic(loop / "train" / "run_info.json", info)
    page = Text()
    page.feed(write_report(loop).read_text())
    text = " ".join(page.words)
    assert any(ci for ci in result["metrics"]["score"]["ci"] if len(repr(ci)) > 12)  # the raw values are long
    long = [(n, d) for n, d in significant_digits(text) if d > 4]
    assert not long, long
    rows = {r[0]: r for r in page.rows if r}
    for metric in ("LPIPS", "Epi"):
        assert rows[metric][1:] == ["n/a", "n/a", "lower", "n/a", "n/a", "n/a"], rows[metric]
    assert rows["git_commit"] == ["git_commit", "n/a"]
    ci = rows["3DCS"][5]
    assert re.fullmatch(r"\[[-+][\d.e+-]+, [-+][\d.e+-]+\]", ci), ci
    if demo:  # the first thing on the page, in its box
        assert page.classes[0] == "demo"
        assert text.index("Built-in tiny model and synthetic data") < text.index("Configuration")
        assert "numbers show the machinery, not a real model" in text
    else:
        assert "demo" not in page.classes and "machinery" not in text


def test_demo_note_names_the_builtin_model_and_synthetic_data():
    from videogpa.engine.core.config_loading import config_from_dict

    tiny = config_from_dict({"data": {"synthetic": {}}})
    assert run_logs.demo_note(tiny, builtin_model=True) == (
        "built-in tiny model and synthetic data: numbers show the machinery, not a real model"
    )
    assert run_logs.demo_note(tiny, builtin_model=False).startswith("synthetic data: ")
    tiny.data.synthetic = None
    assert run_logs.demo_note(tiny, builtin_model=False) is None  # a real model on real data: no box
