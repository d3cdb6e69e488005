"""PyAV is optional (the GPU image has none): without it, reading or writing an mp4 is one clear ImportError,
never a VideoReadError that a scorer would skip as a bad video; gifs and frame folders still work."""

import sys

import pytest
import torch

from videogpa.engine.io.video import VideoReadError, read_frames, write_video


@pytest.fixture
def no_pyav(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError


def test_mp4_without_pyav_is_an_import_error_naming_it(no_pyav, tmp_path):
    frames = torch.rand(3, 3, 8, 8)
    with pytest.raises(ImportError, match=r"writing video .*x\.mp4 needs PyAV \(pip install av\)"):
        write_video(tmp_path / "x.mp4", frames)
    (tmp_path / "y.mp4").write_bytes(b"\0" * 64)
    with pytest.raises(ImportError, match="reading video .*y.mp4 needs PyAV") as caught:
        read_frames(tmp_path / "y.mp4")
    assert not isinstance(caught.value, VideoReadError)


def test_gifs_and_frame_folders_need_no_pyav(no_pyav, tmp_path):
    frames = torch.rand(3, 3, 8, 8)
    for name in ("clip.gif", "clip"):
        write_video(tmp_path / name, frames)
        assert read_frames(tmp_path / name).shape == (3, 8, 8, 3)
