"""The score stage: every video of a folder or a generation manifest scored by a geometry model
(engine.geometry): reconstruct (batched when the backend can), reproject, compare, and append one JSONL row
per video (status "ok" with its scores, or "error" with the message); resumable and robust to bad videos.

A scores file holds one row per video: a rerun skips the "ok" videos and retries the others, and a retried
video's new row replaces its old error row (the file is rewritten atomically), so no reader sees two rows
for one video. A video that decodes fewer frames than its container declares, and a reconstruction with
non-finite depth or cameras or without a valid point, is an error row naming the video and the reason.

Sharded (engine.stages.sharding): the videos, sorted by path, in fixed batches of batch_size; a shard takes
every count-th batch and writes its own scores file (`scores.shard-I-of-N.jsonl`); every reader takes the
union of the scores files (engine.io.sharded), a video counting by its "ok" row if it has one, else by its
last row. A retry writes only to the retrying shard's own file (it replaces an error row there; one in
another shard's file is outranked by the new row), so no two processes ever write one file."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.core.figures import consistency_arrays, save_consistency_figure, score_label
from videogpa.engine.core.provenance import package_version
from videogpa.engine.geometry.base import Geometry, GeometryModel
from videogpa.engine.geometry.io import crop_resize_geometry, load_geometry, select_frames, sidecar_path
from videogpa.engine.geometry.oracle import OracleGeometryModel
from videogpa.engine.geometry.scoring import score_reconstruction
from videogpa.engine.io.records import append_jsonl, read_jsonl, write_jsonl_atomic
from videogpa.engine.io.sharded import sharded_exists, sharded_rows
from videogpa.engine.io.video import LoadedVideo, is_video, load_video
from videogpa.engine.stages.score_metrics import NoGeometry, build_epipolar, metric_scores
from videogpa.engine.stages.sharding import WHOLE, Shard, one_process_per_shard, shard_device
from videogpa.engine.types import default_device

log = logging.getLogger(__name__)

FIGURES = "figures"  # the consistency pictures (ScoreConfig.figures), beside the scores file
RANDOM_WEIGHTS_NOTE = "geometry model with random weights: these scores are NOT meaningful (mechanics only)"


@dataclass(frozen=True)
class VideoJob:
    """One video to score, its stored geometry (oracle) and the manifest fields to carry into its row."""

    video: Path
    geometry: Path
    extra: tuple[tuple[str, object], ...] = ()


def video_digest(path: Path) -> str:
    """The SHA-256 of a video's bytes (a frame folder: of its image files' names and bytes, in order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def video_key(video: Path, scores: Path) -> str:
    """A video's path relative to its scores file's folder: with its content's SHA-256, its identity in the
    scores file (a scored folder copied or moved with its scores is not scored again)."""
    return Path(os.path.relpath(Path(video).resolve(), Path(scores).resolve().parent)).as_posix()


def identity(row: dict) -> str:
    """What a score row is the row of: its video's relative path and content, else (older rows) its path."""
    if row.get("video_key") and row.get("video_sha256"):
        return f"{row['video_key']}#{row['video_sha256']}"
    return row["video"]


def list_videos(source: str | os.PathLike) -> list[VideoJob]:
    """Videos of a folder (sorted; files by suffix and frame folders) or of a JSONL manifest (`video`, and
    optionally `geometry`, relative to the manifest; the union of its shard files, sorted by video)."""
    source = Path(source).resolve()  # absolute paths: resuming works from any working directory
    if source.is_dir():
        return [VideoJob(p, sidecar_path(p)) for p in sorted(source.iterdir()) if is_video(p)]
    if not sharded_exists(source):
        raise ValueError(f"videos source {source} is neither a folder nor a JSONL manifest")
    jobs = {}
    for file, number, row in sharded_rows(source, allow_truncated_tail=False):
        if not isinstance(row.get("video"), str):
            raise ValueError(f"{file}: row {number} needs a string field 'video'")
        video = source.parent / row["video"]
        geometry = source.parent / row["geometry"] if row.get("geometry") else sidecar_path(video)
        extra = tuple((k, v) for k, v in row.items() if k not in ("video", "geometry"))
        jobs.setdefault(str(video), VideoJob(video, geometry, extra))
    return [jobs[k] for k in sorted(jobs)]


def score_rows(scores: str | os.PathLike) -> list[dict]:
    """Every row of a scores file and its shard files, each checked: an object with a string 'video', a
    'status' of "ok" or "error", and string 'video_key' / 'video_sha256' when present; else a ValueError
    naming the file and line."""
    rows = []
    for file, number, row in sharded_rows(scores):
        where = f"scores file {file}, line {number}"
        if not isinstance(row, dict) or not isinstance(row.get("video"), str):
            raise ValueError(f"{where}: expected an object with a string field 'video', got {str(row)[:80]}")
        if row.get("status") not in ("ok", "error"):
            raise ValueError(
                f"{where}: field 'status' must be 'ok' or 'error', got {str(row.get('status'))[:40]}"
            )
        for name in ("video_key", "video_sha256"):
            if name in row and not isinstance(row[name], str):
                raise ValueError(f"{where}: field {name!r} must be a string, got {str(row[name])[:40]}")
        rows.append(row)
    return rows


def latest_rows(scores: str | os.PathLike) -> list[dict]:
    """One row per video (its identity: a moved or copied video counts once) of a scores file and its shard
    files: its latest "ok" row if it has one, else its last row; in the order the videos first appear; []
    when no file exists."""
    every = list(score_rows(scores))
    # a row without a content hash (an older row, a shard's last words) is the keyed video's row at its path
    keyed = {row["video"]: identity(row) for row in every if row.get("video_key") and row.get("video_sha256")}
    rows: dict[str, dict] = {}
    for row in every:
        key = keyed.get(row["video"], identity(row))
        if row.get("status") == "ok" or rows.get(key, {}).get("status") != "ok":
            rows[key] = row
    return list(rows.values())


def _same_video(a: dict, b: dict) -> bool:
    return a.get("video") == b["video"] or (bool(b.get("video_key")) and a.get("video_key") == b["video_key"])


def replace_row(out_path: Path, row: dict) -> None:
    """Rewrite out_path atomically with `row` in place of its video's earlier rows (a retried video, also at
    its earlier path when the folder moved)."""
    kept = [r for r in read_jsonl(out_path) if not _same_video(r, row)]
    write_jsonl_atomic(out_path, [*kept, row])


def _relocate(jobs: list[VideoJob], rows: list[dict], out_path: Path, key_of) -> set[str]:
    """The jobs' paths whose video was scored "ok" at another path with the same relative path and content
    (a copied or moved folder): their rows now name the new path (rewritten in this shard's file, or added
    to it when the row is in another's), so they are not scored again."""
    ok = [
        row for row in rows if row.get("status") == "ok" and row.get("video_key") and row.get("video_sha256")
    ]
    found = {row["video_key"]: row for row in ok}
    moved: dict[tuple[str, str], dict] = {}
    for job in jobs:
        row = found.get(key_of(job))
        if row is not None and row["video"] != str(job.video) and job.video.exists():
            if video_digest(job.video) == row["video_sha256"]:
                moved[(row["video"], row["video_key"])] = {**row, "video": str(job.video)}
    if not moved:
        return set()
    relocated = {row["video"] for row in moved.values()}
    mine = read_jsonl(out_path) if out_path.is_file() else []
    renamed = []
    for r in mine:
        old = (r.get("video"), r.get("video_key"))
        renamed.append(moved.pop(old) if r.get("status") == "ok" and old in moved else r)
    write_jsonl_atomic(out_path, [*renamed, *moved.values()])
    log.info("%d scored videos found at a new path (moved or copied): not scored again", len(relocated))
    return relocated


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
    score: Callable[[torch.Tensor, Geometry], object] = score_reconstruction,
    row_info: dict | None = None,
    progress: bool = True,
    shard: Shard = WHOLE,
    select: Callable[[list[VideoJob]], list[VideoJob]] | None = None,
    figure: Callable[[VideoJob, torch.Tensor, Geometry, dict], None] | None = None,
) -> list[dict]:
    """Score `shard`'s share of the jobs (every count-th batch of batch_size) without an "ok" row in out_path
    or its shard files; write a row per video to the shard's file (status "ok" with scores, or "error" with
    the message; appended, or in place of a retried video's error row in that file) and return the new rows.
    model None = the oracle (each video's stored geometry); `score(frames, geometry)` gives a video's scores
    (engine.geometry.scoring.score_reconstruction with its settings); `select` picks this process's jobs
    instead of the shard's share; `figure(job, frames, geometry, row)` draws an ok video's picture before its
    row is written (a video with a row has its picture)."""
    logical = Path(out_path)
    out_path = shard.path(logical)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    existing = score_rows(logical)
    done = {row["video"] for row in existing if row.get("status") == "ok"}  # errors are retried
    mine = read_jsonl(out_path) if out_path.is_file() else []
    retried = {row["video"] for row in mine} - done

    def key_of(job: VideoJob) -> str:
        return video_key(job.video, logical)

    stale = {row["video_key"] for row in mine if row.get("video_key")}  # rows of a video at its earlier path
    if select is not None:  # the caller's share (evaluate: the videos this shard generated)
        jobs = select(jobs)
    else:
        jobs = [
            j
            for batch in shard.select([jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)])
            for j in batch
        ]
    done |= _relocate([j for j in jobs if str(j.video) not in done], existing, out_path, key_of)
    todo = [j for j in jobs if str(j.video) not in done]
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d videos already scored in %s", len(jobs) - len(todo), len(jobs), out_path)
    device = torch.device(device)
    rows: list[dict] = []
    batch: list[tuple[VideoJob, LoadedVideo]] = []
    bar = tqdm(total=len(todo), desc="scoring", unit="video", disable=not progress)

    def write(row: dict) -> None:
        if row["video"] in retried or row["video_key"] in stale:
            replace_row(out_path, row)  # a retried video: its new row replaces the error row
        else:
            append_jsonl(out_path, row)  # cuts off a line left half-written by a killed run first
        rows.append(row)
        bar.update(1)

    def error_row(job: VideoJob, err: Exception) -> dict:
        log.error("%s: %s", job.video, err)
        return {
            "video": str(job.video),
            "video_key": key_of(job),
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
                scores = score(video.frames.to(device), geometry)
            except Exception as err:
                write(error_row(job, err))
                continue
            row = {
                "video": str(job.video),
                "video_key": key_of(job),
                "video_sha256": video_digest(job.video),
                **dict(job.extra),
                "status": "ok",
                **scores.as_dict(),
                "frames_used": video.indices,
                "size": list(video.frames.shape[-2:]),
                "seconds": round((time.perf_counter() - start) / len(batch), 4),
                **(row_info or {}),
            }
            if figure is not None:
                figure(job, video.frames.to(device), geometry, row)
            write(row)
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


def resolve_geometry(cfg: ScoreConfig) -> ScoreConfig:
    """The config with `auto` settled (the backend the weights file is for, else the oracle) and the device
    chosen (cuda:LOCAL_RANK under a launcher)."""
    from videogpa.engine.geometry.registry import detect_backend

    geometry = (
        cfg.geometry if cfg.geometry != "auto" else (detect_backend(cfg.weights) if cfg.weights else "oracle")
    )
    device = shard_device(cfg.device, default_device())
    return dataclasses.replace(cfg, geometry=geometry, device=device)


@dataclass
class Scorer:
    """A loaded geometry model (None: the oracle) and LPIPS (None: off) with their settings, and the epipolar
    scorer when cfg.metrics has "epipolar"."""

    cfg: ScoreConfig
    model: GeometryModel | None
    lpips: object | None
    epipolar: object | None = None  # engine.geometry.epipolar.EpipolarScorer

    @classmethod
    def build(cls, cfg: ScoreConfig) -> Scorer:
        from videogpa.engine.geometry.registry import build_geometry_model

        cfg = resolve_geometry(cfg)
        epipolar = build_epipolar(cfg)
        if "reprojection" not in cfg.metrics:  # no reconstruction, but the oracle matcher's stored geometry
            return cls(cfg, None if epipolar.needs_geometry else NoGeometry(), None, epipolar)
        if cfg.geometry != "oracle" and not cfg.weights:
            raise ValueError(
                f"score: geometry {cfg.geometry!r} needs weights (a local safetensors file or folder; "
                "nothing is downloaded)"
            )
        model = None
        if cfg.geometry != "oracle":
            model = build_geometry_model(
                cfg.geometry, weights_path=cfg.weights, device=cfg.device, dtype=cfg.dtype
            )
            log.info("%s loaded from %s on %s", cfg.geometry, cfg.weights, cfg.device)
        if bool(cfg.vgg_weights) != bool(cfg.lpips_weights):
            raise ValueError("score: give both vgg_weights and lpips_weights for LPIPS, or neither")
        lpips = None
        if cfg.vgg_weights:
            from videogpa.engine.geometry.lpips import LPIPS

            lpips = LPIPS.from_files(cfg.vgg_weights, cfg.lpips_weights).to(cfg.device).eval()
        elif cfg.mse_only:
            log.info("mse_only: 3DCS = reprojection MSE from the fused kernel; no PSNR/SSIM/LPIPS")
        else:
            log.warning("LPIPS is OFF (no vgg_weights/lpips_weights given): 3DCS = reprojection MSE only")
        if cfg.random_weights:
            log.warning(RANDOM_WEIGHTS_NOTE)
        return cls(cfg, model, lpips, epipolar)

    def score(
        self,
        videos: str | os.PathLike,
        out: str | os.PathLike,
        progress: bool = True,
        shard: Shard = WHOLE,
        select=None,
    ) -> list[dict]:
        """Score `shard`'s videos (of a folder or manifest) not yet in the scores file `out` (or its shard
        files); returns the new rows."""
        cfg = self.cfg
        size = cfg.size if cfg.size is not None else getattr(self.model, "input_size", None)
        info = {
            "backend": cfg.geometry,
            "geometry_weights": cfg.weights,
            "n_frames": cfg.num_frames,
            "kernel_backend": cfg.kernel_backend,
            "conf_thres": cfg.conf_thres,
            "points": cfg.points,
        }
        info["versions"] = {name: package_version(name) for name in ("videogpa", "torch", "triton")}
        if self.epipolar is not None:
            info["epi_matcher"] = cfg.epipolar.matcher
        if cfg.random_weights:
            info["note"] = RANDOM_WEIGHTS_NOTE
        batch = cfg.batch_size or (4 if str(cfg.device).startswith("cuda") else 1)
        reprojection = (
            functools.partial(
                score_reconstruction,
                conf_thres=cfg.conf_thres,
                points=cfg.points,
                lpips=self.lpips,
                lpips_weight=cfg.lpips_weight,
                image_metrics=not cfg.mse_only,
                backend=cfg.kernel_backend,
            )
            if "reprojection" in cfg.metrics
            else None
        )
        settings = metric_scores(reprojection, self.epipolar)
        jobs = list_videos(videos)
        return score_videos(
            jobs,
            out,
            model=self.model,
            n_frames=cfg.num_frames,
            size=size,
            batch_size=batch,
            device=cfg.device,
            score=settings,
            row_info=info,
            progress=progress,
            shard=shard,
            select=select,
            figure=self._figure(jobs, Path(out).parent / FIGURES),
        )

    def _figure(self, jobs: list[VideoJob], folder: Path):
        """score_videos' `figure` for cfg.figures / cfg.figure_videos (None when no picture is asked for)."""
        cfg = self.cfg
        named = set(cfg.figure_videos)
        chosen = {
            str(j.video)
            for i, j in enumerate(jobs)
            if i < cfg.figures or j.video.name in named or j.video.stem in named
        }
        if not chosen:
            return None

        def draw(job: VideoJob, frames: torch.Tensor, geometry: Geometry, row: dict) -> None:
            if str(job.video) not in chosen:
                return
            try:
                arrays = consistency_arrays(
                    frames, geometry, conf_thres=cfg.conf_thres, points=cfg.points, backend=cfg.kernel_backend
                )
                save_consistency_figure(
                    arrays, f"{job.video.name}: {score_label(row)}", folder / f"{job.video.stem}.png"
                )
            except Exception as err:  # a picture never costs a score
                log.warning("%s: no consistency figure (%s: %s)", job.video, type(err).__name__, err)

        return draw


def unscored(videos: str | os.PathLike, scores: str | os.PathLike) -> list[str]:
    """Videos of a folder or manifest without any score row (ok or error) in `scores` or its shard files."""
    have = {r.get("video") for r in score_rows(scores)}
    return [str(job.video) for job in list_videos(videos) if str(job.video) not in have]


@dataclass
class ScoreSummary:
    scores: Path  # the stage's output: one row per video
    new_rows: int  # videos scored or retried in this run (one row each)
    ok: int
    errors: int
    mean_score: float | None
    random_weights: bool
    mean_epi: float | None = None  # the authors' Epi (pixels) over the videos that have one
    epi_missing: int = 0  # ok videos scored for Epi without a value (no valid frame pair): never averaged in
    mean_epi_robust: float | None = None  # ours, beside it

    def __str__(self) -> str:
        mean = f", mean 3DCS {self.mean_score:.5f}" if self.mean_score is not None else ""
        if self.mean_epi is not None or self.epi_missing:
            epi = "n/a" if self.mean_epi is None else f"{self.mean_epi:.4g} px"
            mean += f", mean Epi {epi} ({self.epi_missing} videos without a value)"
        mean += f", mean Epi robust {self.mean_epi_robust:.4g}" if self.mean_epi_robust is not None else ""
        note = " [random-weights geometry: not meaningful]" if self.random_weights else ""
        return f"{self.ok} videos scored, {self.errors} errors{mean}{note} ({self.new_rows} in this run)"


def summarize_scores(scores: str | os.PathLike, new_rows: int = 0) -> ScoreSummary:
    """Counts of videos (not rows) over a scores file and its shard files; a video counts once
    (latest_rows)."""
    rows = latest_rows(scores)
    ok = [r for r in rows if r.get("status") == "ok"]
    missing = sum("epi_pairs" in r and _mean_of([r], "epi") is None for r in ok)
    return ScoreSummary(
        Path(scores),
        new_rows,
        len(ok),
        len(rows) - len(ok),
        _mean_of(ok, "score"),
        any(r.get("note") for r in rows),
        _mean_of(ok, "epi"),
        missing,
        _mean_of(ok, "epi_robust"),
    )


def _mean_of(rows: list[dict], key: str) -> float | None:
    """The mean of a metric over the rows that have a finite value (a video without an Epi has None there: it
    is left out, never counted as 0); None when no row has one."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return sum(values) / len(values) if values else None


@one_process_per_shard
def run(
    cfg: ScoreConfig,
    videos: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    scorer: Scorer | None = None,
    *,
    shard: Shard,
    select=None,
) -> ScoreSummary:
    """The score stage: score this process's shard (engine.stages.sharding) of the videos of a folder or
    manifest into out_dir/cfg.scores_file (its shard file when sharded; resumed). `scorer` reuses an already
    built one (the loop scores several folders); `select` (score_videos) picks the videos instead."""
    scores = Path(out_dir) / cfg.scores_file
    new = (scorer or Scorer.build(cfg)).score(videos, scores, progress=progress, shard=shard, select=select)
    return summarize_scores(scores, len(new))
