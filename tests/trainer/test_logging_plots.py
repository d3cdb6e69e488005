"""Training-curve plot and its moving average."""

import pytest

from videogpa.engine.train.run_logs import moving_average, plot_training_curves


def test_moving_average_by_hand():
    assert moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert moving_average([4.0, 0.0, 2.0, 6.0], 3) == [4.0, 2.0, 2.0, pytest.approx(8 / 3)]
    assert moving_average([5.0, 7.0], 1) == [5.0, 7.0]
    assert moving_average([], 4) == []


def test_training_curves_png(tmp_path):
    records = [{"step": i, "loss": 0.7 - 0.001 * i, "accuracy": (i % 4) / 4} for i in range(1, 61)]
    records.append({"step": 61, "loss": None, "accuracy": None})  # a skipped (non-finite) step
    plot_training_curves(records, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_training_curves([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
