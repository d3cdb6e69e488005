"""The encode stage's runner: load the model's pipeline from its local folder and encode a pair index into
training shards (engine.data.encode does the encoding; this module only picks the model's pipeline)."""

from __future__ import annotations

import os

from videogpa.engine.data.encode import EncodeSummary, PipelineEncoder, encode_pairs
from videogpa.engine.data.records import read_jsonl
from videogpa.engine.generation.pipelines import (
    SAMPLER_DEFAULTS,
    default_device,
    load_pipeline,
    pipeline_spec,
)


def run_encode(
    model: str,
    pipeline: str | os.PathLike,
    pairs: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_sequence_length: int | None = None,
    heldout_fraction: float = 0.0,
    seed: int = 0,
    shard_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> EncodeSummary:
    """Load the model's pipeline from its local folder (on `device`; None: cuda when available, else cpu)
    and encode the pair index into out_dir."""
    rows = read_jsonl(pairs, allow_truncated_tail=False)
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("pair_id", "prompt", "winner", "loser") if k not in row]
        if missing:
            raise ValueError(f"{pairs}:{number}: pair row lacks {missing}")
    spec = pipeline_spec(model)
    if max_sequence_length is None:
        used = {r["winner"].get("extra", {}).get("sampler", {}).get("max_sequence_length") for r in rows} - {
            None
        }
        if len(used) > 1:
            raise ValueError(
                f"{pairs}: videos were generated with several max_sequence_length values {sorted(used)}"
            )
        max_sequence_length = used.pop() if used else SAMPLER_DEFAULTS[model]["max_sequence_length"]
    image_to_video = spec.requires_image or any(r.get("image") for r in rows)
    pipe = load_pipeline(model, pipeline, image_to_video=image_to_video, device=device or default_device())
    encoder = PipelineEncoder(pipe, max_sequence_length)
    return encode_pairs(
        rows,
        out_dir,
        encoder,
        heldout_fraction=heldout_fraction,
        seed=seed,
        shard_size=shard_size,
        progress=progress,
    )
