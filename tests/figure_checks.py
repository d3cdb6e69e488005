"""What the eye checks in a matplotlib figure, as functions a test can assert on: which texts are drawn and
where (in pixels of the saved PNG), tick labels that run into each other, text that runs into other text or
off the picture, letters too small to read, and the PNG's own size.

A text counts when matplotlib actually draws it (Text.draw is watched during one canvas draw): tick labels
outside the view, hidden axes and empty strings do not count."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import matplotlib.text as mtext
import numpy as np

MIN_TEXT_PX = 10.0  # the smallest letters a picture may use, in pixels (font size in points × dpi / 72)


@dataclass
class Drawn:
    text: str
    box: object  # matplotlib Bbox in display pixels (origin bottom left)
    px: float  # font size in pixels
    axis: tuple | None  # (axes index, "x" or "y") for a tick label


def drawn_texts(fig, dpi: float | None = None) -> list[Drawn]:
    """Every text drawn when the figure is rendered at `dpi` (its save dpi; default the figure's)."""
    if dpi is not None:
        fig.set_dpi(dpi)
    seen: list[mtext.Text] = []
    original = mtext.Text.draw

    def watch(self, renderer):
        if self.get_visible() and self.get_text().strip():
            seen.append(self)
        return original(self, renderer)

    mtext.Text.draw = watch
    try:
        fig.canvas.draw()
    finally:
        mtext.Text.draw = original
    ticks = {}
    for i, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks[id(tick.label1)] = ticks[id(tick.label2)] = (i, name)
    renderer = fig.canvas.get_renderer()
    out, done = [], set()
    for t in seen:
        if id(t) not in done:
            done.add(id(t))
            box = t.get_window_extent(renderer)
            out.append(Drawn(t.get_text(), box, t.get_fontsize() * fig.dpi / 72, ticks.get(id(t))))
    return out


def _overlap(a, b, slack: float = 0.5) -> bool:
    """Two boxes share more than a hairline."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > slack and h > slack


def tick_label_overlaps(texts: list[Drawn]) -> list[tuple[str, str]]:
    """Pairs of tick labels of the same axis whose boxes overlap."""
    ticks = [t for t in texts if t.axis is not None]
    return [
        (a.text, b.text)
        for a, b in itertools.combinations(ticks, 2)
        if a.axis == b.axis and _overlap(a.box, b.box)
    ]


def text_overlaps(texts: list[Drawn]) -> list[tuple[str, str]]:
    """Pairs of drawn texts (any kind) whose boxes overlap."""
    return [(a.text, b.text) for a, b in itertools.combinations(texts, 2) if _overlap(a.box, b.box)]


def texts_off_the_picture(fig, texts: list[Drawn]) -> list[str]:
    """Texts that do not lie wholly inside the figure."""
    w, h = fig.get_size_inches() * fig.dpi
    return [
        t.text
        for t in texts
        if t.box.x0 < -0.5 or t.box.y0 < -0.5 or t.box.x1 > w + 0.5 or t.box.y1 > h + 0.5
    ]


def texts_over_images(fig, texts: list[Drawn]) -> list[str]:
    """Texts drawn over a shown image (a frame tile, an error map); the figure drawn already (drawn_texts)."""
    boxes = [ax.get_window_extent() for ax in fig.axes if ax.images]
    return [t.text for t in texts if any(_overlap(t.box, b) for b in boxes)]


def small_texts(texts: list[Drawn], minimum: float = MIN_TEXT_PX) -> list[tuple[str, float]]:
    return [(t.text, round(t.px, 1)) for t in texts if t.px < minimum]


def assert_reads_well(fig, dpi: float | None = None) -> list[Drawn]:
    """No tick labels or other texts overlapping, none off the picture, none too small. Returns the texts."""
    texts = drawn_texts(fig, dpi)
    assert not tick_label_overlaps(texts), f"tick labels overlap: {tick_label_overlaps(texts)}"
    assert not text_overlaps(texts), f"texts overlap: {text_overlaps(texts)}"
    assert not texts_off_the_picture(fig, texts), (
        f"texts off the picture: {texts_off_the_picture(fig, texts)}"
    )
    assert not small_texts(texts), f"texts smaller than {MIN_TEXT_PX} px: {small_texts(texts)}"
    return texts


def png(path: str | Path) -> np.ndarray:
    """A PNG as an [H, W, C] uint8 array (what a viewer shows)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def image_axes_boxes(fig) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) in PNG pixels of every axes that shows an image, in drawing order; the
    figure drawn already at its save dpi (drawn_texts)."""
    height = fig.get_size_inches()[1] * fig.dpi
    out = []
    for ax in fig.axes:
        if ax.images:
            box = ax.get_window_extent()
            out.append((round(box.x0), round(height - box.y1), round(box.width), round(box.height)))
    return out
