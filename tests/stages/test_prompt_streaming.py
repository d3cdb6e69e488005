"""A long prompt list is streamed, never held: the generate stage reads the prompt file line by line, forms
its batches as the prompts go by and keeps only its shard's, so a process holds a batch of prompts at a
time."""

import json
import weakref
from dataclasses import dataclass

import pytest
import torch

from tests.stages.stage_helpers import write_rows
from videogpa.engine.core.config import GenerationConfig
from videogpa.engine.data.prompts import PromptFile, PromptItem, load_prompts, with_camera_motion
from videogpa.engine.io.records import read_jsonl, text_lines
from videogpa.engine.io.sharded import read_sharded
from videogpa.engine.models import get_adapter
from videogpa.engine.models.tiny import write_tiny_pipeline
from videogpa.engine.stages import generate
from videogpa.engine.stages.sharding import Shard

LONG = 20_000  # prompts in the long files


def test_text_lines_split_and_number_as_the_whole_text_does(tmp_path):
    path = tmp_path / "t.txt"
    data = "\ufeffa\r\nb\rc\x85d\u2028e\x0c\n\n  f  \ng\x1ch\n\x0bi".encode()
    for tail in (b"", b"\n", b"\r", b"\r\n", b"\x0c"):
        path.write_bytes(data + tail)
        text = path.read_text(encoding="utf-8")
        whole = text.splitlines()
        assert [(n, line) for n, line, _ in text_lines(path)] == list(enumerate(whole, start=1))
        unterminated = [n for n, _, cut in text_lines(path) if cut]
        assert unterminated == ([] if text.endswith("\n") else [len(whole)])
    path.write_bytes("line one\nline \xe9 two\n".encode() + b"bad \xff byte\n")
    with pytest.raises(UnicodeDecodeError) as err:
        list(text_lines(path))
    with pytest.raises(UnicodeDecodeError) as whole_file:
        path.read_bytes().decode("utf-8")
    assert str(err.value) == str(whole_file.value)  # the byte position is the file's, not the line's


@dataclass
class _Adapter:
    image_per_video: bool


@pytest.mark.parametrize("image_per_video", [True, False])
def test_streamed_shard_batches_are_the_fixed_batches_of_the_full_candidate_list(tmp_path, image_per_video):
    items = [PromptItem(f"p{k}", f"prompt {k}", tmp_path / f"{k}.png") for k in range(7)]
    seeds = [0, 1, 2]
    full = [generate.CandidateSpec(it, s) for it in items for s in seeds]
    for batch_size in (1, 2, 4):
        if image_per_video:  # one image per video: fixed batches of the whole list
            expected = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
        else:  # one image per call: each prompt's candidates in batches of their own
            per_prompt = [full[k : k + len(seeds)] for k in range(0, len(full), len(seeds))]
            expected = [g[i : i + batch_size] for g in per_prompt for i in range(0, len(g), batch_size)]
        for n in (1, 2, 3, 5):
            for i in range(n):
                got = generate.shard_batches(
                    _Adapter(image_per_video), iter(items), seeds, batch_size, Shard(i, n)
                )
                assert list(got) == expected[i::n], (batch_size, i, n)


@pytest.fixture
def live_prompt_items(monkeypatch):
    """Counts the PromptItem objects alive: {'live', 'peak', 'made'} (instances are freed on their last
    reference, so `live` is what some code still holds)."""
    count = {"live": 0, "peak": 0, "made": 0}
    init = PromptItem.__init__

    def freed():
        count["live"] -= 1

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        count["live"] += 1
        count["made"] += 1
        count["peak"] = max(count["peak"], count["live"])
        weakref.finalize(self, freed)

    monkeypatch.setattr(PromptItem, "__init__", counting_init)
    return count


def test_generate_holds_a_batch_of_prompts_not_the_prompt_file(tmp_path, live_prompt_items):
    path = tmp_path / "long.txt"
    path.write_text("".join(f"scene number {k}\n" for k in range(LONG)))
    pipeline = write_tiny_pipeline(tmp_path / "tiny")
    cfg = GenerationConfig(
        model="tiny",
        pipeline=str(pipeline),
        prompts=str(path),
        num_candidates=1,
        batch_size=2,
        camera_motion=True,
        seed=5,
        device="cpu",
        num_frames=9,
        height=64,
        width=64,
        steps=2,
        max_sequence_length=48,
    )
    torch.set_num_threads(1)
    summary = generate.run(cfg, None, tmp_path / "gen", progress=False, shard="0/2000")
    made, peak = live_prompt_items["made"], live_prompt_items["peak"]
    assert made >= 3 * LONG  # the file was read through (checked, planned, generated)...
    assert peak <= 5 * cfg.batch_size  # ...holding a few batches of prompts at a time (running, forming)
    # batch k of the whole list is prompts 2k, 2k+1; shard 0 of 2000 takes batches 0, 2000, ... 8000
    ids = [f"p{k:05d}" for b in range(0, LONG // 2, 2000) for k in (2 * b, 2 * b + 1)]
    assert (summary.prompts, summary.candidates, summary.generated) == (LONG, len(ids), len(ids))
    rows = read_jsonl(tmp_path / "gen" / "manifest.shard-0-of-2000.jsonl")
    assert [r["prompt_id"] for r in rows] == ids
    listed = {it.prompt_id: it.prompt for it in with_camera_motion(load_prompts(path), seed=5)}
    assert [r["prompt"] for r in rows] == [listed[i] for i in ids]  # a stream rewrites as the list does
    resumed = generate.run(cfg, None, tmp_path / "gen", progress=False, shard="0/2000")
    assert (resumed.generated, resumed.skipped) == (0, len(ids))
    assert len(read_sharded(tmp_path / "gen" / "manifest.jsonl")) == len(ids)


def _no_pipeline(*args, **kwargs):
    raise AssertionError("the pipeline was loaded before the prompt file was checked")


def test_a_bad_last_line_of_a_long_file_is_an_error_before_the_pipeline_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "load_pipeline", _no_pipeline)
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": f"scene {k}"} for k in range(LONG)])
    with path.open("a") as f:
        f.write(json.dumps({"prompt": "again", "id": "p00007"}) + "\n")
    cfg = GenerationConfig(model="tiny", pipeline=str(tmp_path), prompts=str(path))
    with pytest.raises(
        ValueError, match=rf"p.jsonl:{LONG + 1}: duplicate id 'p00007' \(first used on line 8\)"
    ):
        generate.run(cfg, None, tmp_path / "gen", progress=False)
    rows = [{"prompt": f"scene {k}", "image": "first.png"} for k in range(LONG)] + [{"prompt": "no image"}]
    write_rows(path, rows)
    cfg = GenerationConfig(model="wan2.2-ti2v", pipeline=str(tmp_path), prompts=str(path))
    with pytest.raises(ValueError, match="some prompts have an 'image' and some do not"):
        generate.run(cfg, None, tmp_path / "gen", progress=False)
    assert not (tmp_path / "gen" / "videos").exists()


def test_a_one_shot_iterator_of_prompts_is_refused(tmp_path):
    items = PromptFile(write_rows(tmp_path / "p.jsonl", [{"prompt": "a red barn"}]))
    assert [it.prompt for it in items] == [it.prompt for it in items] == ["a red barn"]  # re-iterable
    with pytest.raises(TypeError, match="re-iterable"):
        generate.generate_candidates(
            None, get_adapter("tiny"), iter(items), tmp_path / "gen", seeds=[0], sampler=None, model="tiny"
        )
