"""Video files in and out: read mp4/webm/gif/frame folders, sample T frames uniformly, centre-crop and
resize."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")


class VideoReadError(ValueError):
    """A video that cannot be used; the message names the file."""


def is_video(path: Path) -> bool:
    """A video file by suffix, or a folder holding image frames."""
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def _read_folder(path: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoReadError(f"video folder {path} holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if len({f.shape for f in frames}) != 1:
        raise VideoReadError(f"video folder {path}: frames differ in size")
    return np.stack(frames)


def _read_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)])


def _pyav(purpose: str):
    """PyAV, imported only where a video is decoded or encoded (gifs and frame folders need none, and the GPU
    image has none): without it, that one feature fails with this error, not every import of this module."""
    try:
        import av
    except ImportError:
        raise ImportError(f"{purpose} needs PyAV (pip install av), which is not installed") from None
    return av


def _declared_seconds(container, stream) -> float | None:
    """How long the video stream says it is: its own duration, Matroska/WebM's per-track DURATION tag, or the
    container's when the video is its only stream; None when nothing says."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass
    if container.duration and len(container.streams) == 1:
        return container.duration / 1e6
    return None


def _read_av(path: Path) -> np.ndarray:
    """Every frame of the first video stream. A stream that decodes fewer frames than its container declares
    (a file cut short at a packet boundary decodes without a decoder error) is a VideoReadError: scoring
    the part that survived would silently score another video. Containers that declare no frame count (mkv,
    webm) declare a duration: the decoded frames must reach its end (within 1.5 frames)."""
    av = _pyav(f"reading video {path}")

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoReadError(f"video {path} has no video stream")
        stream = container.streams.video[0]
        declared = stream.frames  # 0 when the container does not say (webm, mkv)
        frames, end = [], None
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            end = frame.time
        seconds, rate = _declared_seconds(container, stream), stream.average_rate or stream.guessed_rate
    if not frames:
        raise VideoReadError(f"video {path} decodes to no frames")
    if len(frames) < declared:
        raise VideoReadError(
            f"video {path} decodes {len(frames)} of the {declared} frames its container declares "
            "(truncated file?)"
        )
    if not declared and seconds and rate and end is not None:
        step = 1 / float(rate)
        if end + step < seconds - 1.5 * step:
            raise VideoReadError(
                f"video {path} decodes {len(frames)} frames ({end + step:.3f} s) of the {seconds:.3f} s its "
                f"container declares, about {round(seconds * float(rate))} frames (truncated file?)"
            )
    return np.stack(frames)


def read_frames(path: str | os.PathLike) -> torch.Tensor:
    """All frames as uint8 [N, H, W, 3]; ValueError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"video {path} does not exist")
    try:
        if path.is_dir():
            frames = _read_folder(path)
        elif path.suffix.lower() == ".gif":
            frames = _read_gif(path)
        else:
            frames = _read_av(path)
    except (VideoReadError, ImportError):  # a missing PyAV is no bad video: it must not be skipped as one
        raise
    except Exception as err:  # decoders raise many types (av.error.*, PIL.UnidentifiedImageError, OSError)
        raise VideoReadError(f"video {path} could not be read: {type(err).__name__}: {err}") from err
    return torch.from_numpy(frames)


def uniform_indices(n_available: int, n_frames: int) -> list[int]:
    """n_frames indices spread evenly over 0…n_available−1, first and last included."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be ≥ 1, got {n_frames}")
    if n_available < n_frames:
        raise ValueError(f"video too short: {n_available} frames, {n_frames} needed")
    if n_frames == 1:
        return [0]
    return [round(i * (n_available - 1) / (n_frames - 1)) for i in range(n_frames)]


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centred square crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def crop_resize(frames: torch.Tensor, size: int | None) -> torch.Tensor:
    """frames [T, 3, H, W] in [0, 1] -> centre square crop resized (bicubic, antialiased) to size×size."""
    if size is None:
        return frames
    top, left, side = centre_square(*frames.shape[-2:])
    square = frames[..., top : top + side, left : left + side]
    if side == size:
        return square
    return F.interpolate(square, size=(size, size), mode="bicubic", antialias=True).clamp(0.0, 1.0)


@dataclass
class LoadedVideo:
    """frames [T, 3, S, S] in [0, 1], which source frames they are, and the crop taken from the source."""

    frames: torch.Tensor
    indices: list[int]
    crop: tuple[int, int, int] | None  # (top, left, side), None when not cropped/resized
    source_size: tuple[int, int]  # (H, W)


def load_video(path: str | os.PathLike, n_frames: int, size: int | None = None) -> LoadedVideo:
    """Read, sample n_frames uniformly, centre-crop and resize to size (None: keep the frames as they are)."""
    raw = read_frames(path)
    try:
        indices = uniform_indices(raw.shape[0], n_frames)
    except ValueError as err:
        raise VideoReadError(f"video {path}: {err}") from err
    frames = raw[indices].permute(0, 3, 1, 2).float() / 255.0
    height, width = raw.shape[1:3]
    crop = None if size is None else centre_square(height, width)
    return LoadedVideo(crop_resize(frames, size), indices, crop, (height, width))


# suffix -> (encoder, pixel format, options): lossless, so the stored geometry matches the frames exactly.
_ENCODERS = {
    ".mp4": ("libx264rgb", "rgb24", {"crf": "0"}),
    ".mkv": ("libx264rgb", "rgb24", {"crf": "0"}),
    ".webm": ("libvpx-vp9", "yuv444p", {"lossless": "1"}),
}


def write_video(path: str | os.PathLike, frames: torch.Tensor, fps: int = 8) -> None:
    """Write frames [T, 3, H, W] in [0, 1] as lossless .mp4/.mkv (H.264 RGB) or .webm (VP9 4:4:4), .gif, or
    PNGs."""
    path = Path(path)
    data = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if path.suffix == "":
        from PIL import Image

        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(data):
            Image.fromarray(frame).save(path / f"{i:05d}.png")
        return
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in data]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return
    if path.suffix.lower() not in _ENCODERS:
        raise ValueError(
            f"write_video: {path} must end in one of {sorted(_ENCODERS)}, .gif, or have no suffix"
        )
    av = _pyav(f"writing video {path}")
    codec, pix_fmt, options = _ENCODERS[path.suffix.lower()]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = data.shape[2], data.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = options
        for frame in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
