"""Iterative rounds of the loop (`recipes/pipeline.py --rounds K`, loop.rounds): round k generates its
candidates with round k-1's LoRA (the manifest rows name it), scores, pairs and encodes them, and trains a new
LoRA on top of the previous one, folded into the transformer (round k-1's merged export): the reference of
round k's DPO is round k-1's model. Round k is evaluated before (its starting model) and after (its LoRA).

    DIR/round_<k>/          one loop folder per round (engine.loop.loop); round 1 is the plain loop
    DIR/round_<k>/models/pipeline   round k's trained pipeline (k ≥ 2): round k-1's pipeline with its merged
                                    transformer (links to the other components)
    DIR/evaluation.json     {"rounds": [one before/after row per finished round]}

With one round (the default) the loop runs in DIR itself, as it always has. Every round generates from the
same prompts, or with loop.round_prompts = n round k from the k-th slice of n prompts
(DIR/round_<k>/round_prompts.jsonl).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from videogpa.engine.core.config import Config
from videogpa.engine.data.prompts import load_prompts
from videogpa.engine.io.atomic import atomic_path, write_atomic
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.records import write_json_atomic
from videogpa.engine.loop.loop import LOCK_NAME, Loop
from videogpa.engine.models.lora import trained_lora_file
from videogpa.engine.stages import evaluate
from videogpa.engine.train.exports import MERGED_NAME


def merged_pipeline(base: Path, transformer: Path, folder: Path) -> Path:
    """A pipeline folder that is `base` with `transformer` as its transformer (links; written once)."""
    if (folder / "model_index.json").is_file():
        return folder
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for entry in base.iterdir():
            target = transformer if entry.name == "transformer" else entry.resolve()
            (tmp / entry.name).symlink_to(target.resolve(), target_is_directory=target.is_dir())
    return folder


def prompt_slice(prompts: str | os.PathLike, k: int, per_round: int, folder: Path) -> Path:
    """Round k's prompts: the k-th slice of `per_round` prompts of the file (ids and images kept), as
    folder/round_prompts.jsonl."""
    items = load_prompts(prompts)
    start = (k - 1) * per_round
    if per_round < 1 or start + per_round > len(items):
        raise ValueError(
            f"loop.round_prompts {per_round}: round {k} needs prompts "
            f"{start + 1}..{start + per_round} of {prompts}, "
            f"which has {len(items)}"
        )
    rows = [
        {"id": it.prompt_id, "prompt": it.prompt, **({"image": str(it.image.resolve())} if it.image else {})}
        for it in items[start : start + per_round]
    ]
    path = folder / "round_prompts.jsonl"
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def round_row(k: int, loop: Loop, result: dict, started_from: str | None) -> dict:
    """One round's before/after row of DIR/evaluation.json."""
    metrics = result["metrics"]
    return {
        "round": k,
        "started_from": started_from,  # the LoRA its candidates were generated with (None: the base model)
        "lora": result["lora"],
        "before": {m: metrics[m]["base"] for m in metrics},
        "after": {m: metrics[m]["lora"] for m in metrics},
        "prompt_win_rate": result["prompt_win_rate"],
        "videos": result["videos"],
        "table": str(loop.out / evaluate.EVALUATION_FILE),
    }


def run_rounds(cfg: Config, out_dir: str | os.PathLike) -> list[dict]:
    """Run loop.rounds rounds (resuming finished ones) and return their rows; one round: the plain loop."""
    rounds = cfg.loop.rounds
    if rounds < 1:
        raise ValueError(f"loop.rounds: expected ≥ 1, got {rounds}")
    out = Path(out_dir)
    if rounds == 1:
        loop = Loop(cfg, out)
        return [round_row(1, loop, loop.run(), None)]
    rows, previous = [], None
    with folder_lock(out, LOCK_NAME):
        for k in range(1, rounds + 1):
            config = copy.deepcopy(cfg)
            if "merged" not in config.train.export_formats and k < rounds:  # the next round's base
                config.train.export_formats = [*config.train.export_formats, "merged"]
            loop = Loop(config, out / f"round_{k}")
            if config.loop.round_prompts is not None:
                if config.loop.generation.prompts is None:
                    raise ValueError("loop.round_prompts needs a prompt file (loop.generation.prompts)")
                loop.cfg.generation.prompts = str(
                    prompt_slice(config.loop.generation.prompts, k, config.loop.round_prompts, loop.out)
                )
            started_from = None
            if previous is not None:
                started_from = continue_from(loop, previous)
            print(f"\n===== round {k} of {rounds} ({loop.out}) =====", flush=True)
            rows.append(round_row(k, loop, loop.run(), started_from))
            write_json_atomic(out / evaluate.EVALUATION_FILE, {"rounds": rows})
            previous = loop
    return rows


def continue_from(loop: Loop, previous: Loop) -> str:
    """Set up round `loop` after `previous`: generate with the previous pipeline and LoRA, reuse its geometry
    model, train and evaluate on its merged transformer. Returns the previous LoRA's path."""
    lora = str(trained_lora_file(previous.out / "train").resolve())
    merged = previous.out / "train" / MERGED_NAME
    if not (merged / "config.json").is_file():
        raise ValueError(f"round {previous.out.name}: no merged transformer {merged} (train.export_formats)")
    gen, score = loop.cfg.generation, loop.cfg.score
    gen.pipeline, gen.lora = previous.model_pipeline, lora
    score.weights, score.random_weights = previous.cfg.score.weights, previous.cfg.score.random_weights
    score.epipolar = copy.deepcopy(previous.cfg.score.epipolar)
    loop.cfg.encode.pipeline = previous.cfg.encode.pipeline
    base = Path(previous.model_pipeline)
    loop.trained_pipeline = str(merged_pipeline(base, merged, loop.out / "models" / "pipeline"))
    return lora
