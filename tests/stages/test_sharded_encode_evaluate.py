"""Encode (over separate `--shard I/N` processes) and evaluate (over those and over torchrun ranks, no
process group) sharded give what one process gives, bit for bit; a shard that never finished is completed by
a rerun with another N, every item made exactly once, and only the run that completes the set writes the
shard folders / the table. Every process runs with one thread (OMP_NUM_THREADS=1), so the comparisons are
between the same computation on the same machine with the same thread count."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.models.model_builders import perturbed
from tests.stages.stage_helpers import TORCHRUN, build_pairs, files, finish, start, write_rows
from videogpa.engine.data.prompts import PromptItem
from videogpa.engine.io.records import read_jsonl, write_jsonl_atomic
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.models import get_adapter
from videogpa.engine.models.base import SamplerSettings
from videogpa.engine.models.lora import apply_lora, save_lora_weights
from videogpa.engine.models.pipelines import load_pipeline
from videogpa.engine.models.tiny import write_tiny_pipeline
from videogpa.engine.stages.generate import MANIFEST, generate_candidates
from videogpa.engine.stages.score import latest_rows


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded2")
    write_tiny_pipeline(root / "tiny")
    return root


# ------------------------------------------------------------------------------------------------- encode
@pytest.fixture(scope="module")
def pairs_index(root):
    """4 pairs of tiny videos; the winners lost their stored latents, so their videos go through the VAE."""
    sampler = SamplerSettings(
        num_frames=9,
        height=16,
        width=16,
        steps=2,
        guidance_scale=1.0,
        max_sequence_length=16,
        negative_prompt=None,
        fps=8,
    )
    items = [PromptItem(f"p{i}", f"prompt number {i}") for i in range(4)]
    generate_candidates(
        load_pipeline("tiny", root / "tiny"),
        get_adapter("tiny"),
        items,
        root / "gen",
        seeds=[0, 1],
        sampler=sampler,
        model="tiny",
        batch_size=2,
        progress=False,
    )
    scores = [
        {
            "video": str(root / "gen" / r["video"]),
            "status": "ok",
            "score": 0.1 + 0.3 * r["seed"] + 0.01 * i,
            "motion": 0.5,
        }
        for i, r in enumerate(read_jsonl(root / "gen" / MANIFEST))
    ]
    write_rows(root / "gen" / "scores.jsonl", scores)
    index = build_pairs(
        root / "gen" / "scores.jsonl", root / "pairs", manifest=root / "gen" / MANIFEST, plots=False
    ).index
    rows = read_jsonl(index)
    for row in rows:
        row["winner"]["extra"].pop("latents")
    write_jsonl_atomic(index, rows)
    assert len(rows) == 4
    return index


def encode(root, index, out, *extra):
    return start(
        "encode",
        "--pipeline",
        root / "tiny",
        "--pairs",
        index,
        "--out-dir",
        out,
        "--heldout-fraction",
        0.25,
        "--shard-size",
        2,
        "--device",
        "cpu",
        *extra,
    )


def shard_folders(out: Path) -> dict[str, bytes]:
    """Every file of the trainer's shard folders, by name."""
    return {
        name: (out / name).read_bytes() for name in files(out) if name.split("/")[0] in ("train", "heldout")
    }


def test_encode_sharded_equals_one_process_and_a_partial_run_is_finished_by_another_n(root, pairs_index):
    """`--shard` processes (encode takes its shard as generate does, whose torchrun ranks are checked in
    test_sharded_stages)."""
    one, mixed = root / "enc_one", root / "enc_mixed"
    finish(encode(root, pairs_index, one))
    reference = shard_folders(one)
    assert {n.split("/")[0] for n in reference} == {"train", "heldout"}
    cached = len(list((one / "cache").glob("*.safetensors")))
    assert cached == 4 + 4  # 4 winner videos + 4 prompts, each encoded once
    (out,) = finish(encode(root, pairs_index, mixed, "--shard", "0/3"))  # shards 1/3, 2/3 never ran
    assert "written by the shard that finds every pair encoded" in out
    assert not (mixed / "train").exists() and len(list((mixed / "cache").glob("*.safetensors"))) == 2 * 2
    outs = finish(
        encode(root, pairs_index, mixed, "--shard", "0/2"), encode(root, pairs_index, mixed, "--shard", "1/2")
    )
    assert sum("training +" in o for o in outs) == 1  # exactly one of them wrote the shard folders
    assert shard_folders(mixed) == reference
    assert sorted(p.name for p in (mixed / "cache").iterdir()) == sorted(
        p.name for p in (one / "cache").iterdir()
    )
    assert not [n for n in files(mixed) if Path(n).name.startswith(".")]  # no lock or temporary left


# ----------------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def eval_inputs(root):
    """The tiny pipeline, a random tiny VGGT, a LoRA with non-zero weights and 2 held-out prompts."""
    from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt

    torch.manual_seed(0)
    save_vggt(random_vggt(TINY_CONFIG), root / "vggt.safetensors")
    adapter = get_adapter("tiny")
    model = perturbed(
        apply_lora(adapter.load_transformer(None, torch.float32), 4, 4.0, adapter.default_lora_targets)
    )
    lora = save_lora_weights(model, root / "lora")
    (root / "heldout.txt").write_text("a sunlit museum hall\na harbour with fishing boats\n")
    return [
        f"--set={s}"
        for s in (
            f"loop.generation.pipeline={root / 'tiny'}",
            "loop.generation.steps=2",
            "loop.generation.batch_size=2",
            f"loop.score.weights={root / 'vggt.safetensors'}",
            "loop.score.random_weights=true",
            f"loop.evaluate.prompts={root / 'heldout.txt'}",
            "loop.evaluate.num_candidates=2",
        )
    ] + ["--lora", str(lora)]


def evaluate(eval_inputs, out, *extra, launcher=()):
    return start("evaluate", "--output-dir", out, *eval_inputs, *extra, launcher=launcher)


def outputs(out: Path) -> dict:
    """The table, and per run its manifest rows, score rows (without timing) and latents, by candidate."""
    found = {"table": json.loads((out / "evaluation.json").read_text())}
    for name in ("base", "lora"):
        folder = out / "eval" / name
        rows = read_sharded(folder / MANIFEST)
        assert len(rows) == len({r["video"] for r in rows}) == 4, "a candidate made twice or missing"
        scores = latest_rows(folder / "scores.jsonl")
        assert len(read_sharded(folder / "scores.jsonl")) == len(scores) == 4, (
            "a video scored twice or missing"
        )
        found[name] = {
            "manifest": sorted(rows, key=lambda r: r["video"]),
            "scores": {
                Path(r["video"]).name: {k: v for k, v in r.items() if k not in ("seconds", "video")}
                for r in scores
            },
            "latents": {r["video"]: load_file(str(folder / r["latents"]))["latents"] for r in rows},
        }
    return found


def assert_same(ours: dict, reference: dict) -> None:
    assert ours["table"] == reference["table"]
    for name in ("base", "lora"):
        a, b = ours[name], reference[name]
        assert a["manifest"] == b["manifest"] and a["scores"] == b["scores"]
        assert a["latents"].keys() == b["latents"].keys()
        assert all(torch.equal(a["latents"][k], b["latents"][k]) for k in a["latents"])


def test_evaluate_sharded_equals_one_process_and_a_partial_run_is_finished_by_another_n(root, eval_inputs):
    one, ranks, mixed = root / "ev_one", root / "ev_ranks", root / "ev_mixed"
    finish(evaluate(eval_inputs, one), evaluate(eval_inputs, ranks, launcher=TORCHRUN))
    reference = outputs(one)
    assert reference["table"]["videos"] == 4 and reference["base"]["manifest"][0]["lora"] is None
    assert {r["lora"] for r in reference["lora"]["manifest"]} == {str(Path(eval_inputs[-1]).resolve())}
    assert any(
        not torch.equal(reference["base"]["latents"][k], reference["lora"]["latents"][k])
        for k in reference["base"]["latents"]
    )
    assert_same(outputs(ranks), reference)
    (out,) = finish(evaluate(eval_inputs, mixed, "--shard", "0/3"))  # shards 1/3, 2/3 never ran
    assert (
        "is written by the shard that completes the set" in out and not (mixed / "evaluation.json").exists()
    )
    outs = finish(
        evaluate(eval_inputs, mixed, "--shard", "0/2"), evaluate(eval_inputs, mixed, "--shard", "1/2")
    )
    assert sum("LoRA wins" in o for o in outs) == 1  # exactly one of them wrote the table
    assert_same(outputs(mixed), reference)
