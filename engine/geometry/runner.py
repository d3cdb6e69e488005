"""Score many videos: list them (folder or JSONL manifest), reconstruct (batched when the backend can),
score, and append one JSONL row per video; resumable and robust to bad videos."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from videogpa.engine.data.records import append_jsonl, read_jsonl
from videogpa.engine.data.video import LoadedVideo, is_video, load_video
from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.io import crop_resize_geometry, load_geometry, select_frames, sidecar_path
from videogpa.engine.geometry.oracle import OracleGeometryModel
from videogpa.engine.geometry.scoring import score_reconstruction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoJob:
    """One video to score, its stored geometry (oracle) and the manifest fields to carry into its row."""

    video: Path
    geometry: Path
    extra: tuple[tuple[str, object], ...] = ()


def list_videos(source: str | os.PathLike) -> list[VideoJob]:
    """Videos of a folder (sorted; files by suffix and frame folders) or of a JSONL manifest (`video`, and
    optionally `geometry`, relative to the manifest)."""
    source = Path(source).resolve()  # absolute paths: resuming works from any working directory
    if source.is_dir():
        return [VideoJob(p, sidecar_path(p)) for p in sorted(source.iterdir()) if is_video(p)]
    if not source.is_file():
        raise ValueError(f"videos source {source} is neither a folder nor a JSONL manifest")
    jobs = []
    for number, row in enumerate(read_jsonl(source, allow_truncated_tail=False), start=1):
        if not isinstance(row.get("video"), str):
            raise ValueError(f"{source}: row {number} needs a string field 'video'")
        video = source.parent / row["video"]
        geometry = source.parent / row["geometry"] if row.get("geometry") else sidecar_path(video)
        extra = tuple((k, v) for k, v in row.items() if k not in ("video", "geometry"))
        jobs.append(VideoJob(video, geometry, extra))
    return jobs


def already_scored(out_path: Path) -> set[str]:
    """Videos with an "ok" row in an existing output file (errors are retried)."""
    if not out_path.is_file():
        return set()
    return {row["video"] for row in read_jsonl(out_path) if row.get("status") == "ok"}


def oracle_for(job: VideoJob, loaded: LoadedVideo) -> OracleGeometryModel:
    """The oracle of one video: its stored geometry brought to the sampled frames, crop and size."""
    geometry = select_frames(load_geometry(job.geometry), loaded.indices)
    if loaded.crop is not None:
        geometry = crop_resize_geometry(geometry, *loaded.crop, size=loaded.frames.shape[-1])
    return OracleGeometryModel(geometry=geometry)


def reconstruct_all(model: GeometryModel, videos: list[torch.Tensor]) -> list[Geometry]:
    """One Geometry per video; one batched call when the backend has reconstruct_batch and shapes agree."""
    batched = getattr(model, "reconstruct_batch", None)
    if batched is not None and len(videos) > 1 and len({v.shape for v in videos}) == 1:
        return batched(torch.stack(videos))
    return [model.reconstruct(v) for v in videos]


def _prefetch(jobs: list[VideoJob], load: Callable[[VideoJob], LoadedVideo], depth: int) -> Iterator:
    """(job, loaded video or the exception) in order, decoding up to `depth` videos ahead in threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(load, job) for job in jobs[:depth]]
        for i, job in enumerate(jobs):
            if i + depth < len(jobs):
                futures.append(pool.submit(load, jobs[i + depth]))
            try:
                yield job, futures[i].result()
            except Exception as err:  # reported per video, the run goes on
                yield job, err
            futures[i] = None


def score_videos(
    jobs: list[VideoJob],
    out_path: str | os.PathLike,
    *,
    model: GeometryModel | None,
    n_frames: int,
    size: int | None,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    conf_thres: float = 0.0,
    points: str = "auto",
    lpips=None,
    lpips_weight: float = 1.0,
    image_metrics: bool = True,
    backend: str = "auto",
    row_info: dict | None = None,
    progress: bool = True,
) -> list[dict]:
    """Score jobs not yet in out_path; append a row per video (status "ok" with scores, or "error" with the
    message) and return the new rows. model None = the oracle (each video's stored geometry)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = already_scored(out_path)
    todo = [j for j in jobs if str(j.video) not in done]
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d videos already scored in %s", len(jobs) - len(todo), len(jobs), out_path)
    device = torch.device(device)
    rows: list[dict] = []
    batch: list[tuple[VideoJob, LoadedVideo]] = []
    bar = tqdm(total=len(todo), desc="scoring", unit="video", disable=not progress)

    def write(row: dict) -> None:
        append_jsonl(out_path, row)  # cuts off a line left half-written by a killed run first
        rows.append(row)
        bar.update(1)

    def error_row(job: VideoJob, err: Exception) -> dict:
        log.error("%s: %s", job.video, err)
        return {
            "video": str(job.video),
            **dict(job.extra),
            "status": "error",
            "error": f"{type(err).__name__}: {err}",
        }

    def reconstruct(items: list[tuple[VideoJob, LoadedVideo]]) -> list[Geometry | Exception]:
        """Geometries of a batch; if the batch fails, each video alone, so the error names its video."""
        try:
            if model is None:
                return [oracle_for(job, v).reconstruct(v.frames) for job, v in items]
            return reconstruct_all(model, [v.frames.to(device) for _, v in items])
        except Exception as err:
            if len(items) == 1:
                return [err]
            return [g for item in items for g in reconstruct([item])]

    def flush() -> None:
        start = time.perf_counter()
        geometries = reconstruct(batch)
        for (job, video), geometry in zip(batch, geometries):
            if isinstance(geometry, Exception):
                write(error_row(job, geometry))
                continue
            try:
                scores = score_reconstruction(
                    video.frames.to(device),
                    geometry,
                    conf_thres=conf_thres,
                    points=points,
                    lpips=lpips,
                    lpips_weight=lpips_weight,
                    image_metrics=image_metrics,
                    backend=backend,
                )
            except Exception as err:
                write(error_row(job, err))
                continue
            write(
                {
                    "video": str(job.video),
                    **dict(job.extra),
                    "status": "ok",
                    **scores.as_dict(),
                    "frames_used": video.indices,
                    "size": list(video.frames.shape[-2:]),
                    "seconds": round((time.perf_counter() - start) / len(batch), 4),
                    **(row_info or {}),
                }
            )
        batch.clear()

    for job, loaded in _prefetch(todo, lambda j: load_video(j.video, n_frames, size), depth=2 * batch_size):
        if isinstance(loaded, Exception):
            write(error_row(job, loaded))
            continue
        batch.append((job, loaded))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return rows
