"""Video input for scoring: read mp4/webm/gif/frame folders, uniform sampling, centre crop/resize, clear
errors."""

import pytest
import torch

from videogpa.engine.io.video import (
    centre_square,
    crop_resize,
    load_video,
    read_frames,
    uniform_indices,
    write_video,
)


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 6, 5, generator=g)
    smooth = torch.nn.functional.interpolate(base, size=(24, 40), mode="bilinear", align_corners=False)
    return torch.cat([smooth.roll(i, dims=-1) for i in range(7)]).clamp(0, 1)  # [7, 3, 24, 40]


@pytest.mark.parametrize(
    "name,tolerance", [("v.mp4", 0.5 / 255), ("frames", 0.5 / 255), ("v.webm", 0.08), ("v.gif", 0.25)]
)
def test_write_read_round_trip(tmp_path, frames, name, tolerance):
    write_video(tmp_path / name, frames)
    raw = read_frames(tmp_path / name)
    assert raw.dtype == torch.uint8 and raw.shape == (7, 24, 40, 3)
    loaded = raw.permute(0, 3, 1, 2).float() / 255
    assert (loaded - frames).abs().max() <= tolerance + 1e-6


def test_sampling_and_crop(tmp_path, frames):
    assert uniform_indices(7, 4) == [0, 2, 4, 6]
    assert uniform_indices(10, 1) == [0]
    assert uniform_indices(5, 5) == [0, 1, 2, 3, 4]
    write_video(tmp_path / "v.mp4", frames)
    video = load_video(tmp_path / "v.mp4", 4, size=None)
    assert video.indices == [0, 2, 4, 6] and video.frames.shape == (4, 3, 24, 40) and video.crop is None
    assert (video.frames - frames[[0, 2, 4, 6]]).abs().max() <= 0.5 / 255 + 1e-6
    square = load_video(tmp_path / "v.mp4", 3, size=24)
    assert square.crop == (0, 8, 24) and square.source_size == (24, 40)
    assert (square.frames - frames[[0, 3, 6], :, :, 8:32]).abs().max() <= 0.5 / 255 + 1e-6
    small = crop_resize(frames, 12)
    assert small.shape == (7, 3, 12, 12) and small.min() >= 0 and small.max() <= 1
    assert centre_square(30, 20) == (5, 0, 20)


def test_errors_name_the_file(tmp_path, frames):
    with pytest.raises(ValueError, match="does not exist"):
        read_frames(tmp_path / "nope.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="broken.mp4"):
        read_frames(tmp_path / "broken.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        read_frames(tmp_path / "empty")
    write_video(tmp_path / "short.mp4", frames[:3])
    with pytest.raises(ValueError, match="short.mp4.*too short: 3 frames, 5 needed"):
        load_video(tmp_path / "short.mp4", 5)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.avi", frames)
