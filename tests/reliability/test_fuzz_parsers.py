"""Every file a user or another process hands us, fuzzed (hypothesis): index.jsonl, the checkpoint manifest,
configs and --set values, prompt files, scores.jsonl and the safetensors shard headers. Each is read, or
refused with a one-line ValueError; never another exception (a traceback), never a hang. Derandomized and
small, so CI sees the same examples every run and the whole file takes seconds."""

from __future__ import annotations

import json
import os
import string
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videogpa.engine.core.config_loading import apply_override, config_from_dict, read_config_dict
from videogpa.engine.data.preference import PreferenceDataset, read_shard_header
from videogpa.engine.data.prompts import load_prompts
from videogpa.engine.stages.pairs import load_candidates
from videogpa.engine.stages.score import latest_rows
from videogpa.engine.train.checkpoint_files import VerifiedFiles

# VIDEOGPA_FUZZ_EXAMPLES=2000 (and VIDEOGPA_FUZZ_RANDOM=1 for new examples each run) fuzzes deeper by hand
EXAMPLES = int(os.environ.get("VIDEOGPA_FUZZ_EXAMPLES", "60"))
RANDOM = os.environ.get("VIDEOGPA_FUZZ_RANDOM") == "1"
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, suppress_health_check=list(HealthCheck)
)

# JSON-ish values: what a hand-edited or half-written line may hold
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
junk_lines = st.text(alphabet=string.printable + '{}[]":,éλ\x00', max_size=60)


def one_line_or_fine(call):
    """Run `call`: it succeeds or raises a ValueError with a one-line message."""
    try:
        call()
    except ValueError as err:
        assert "\n" not in str(err).strip(), f"multi-line error: {err!r}"
        assert str(err).strip(), "an empty message"


SCRATCH = tempfile.TemporaryDirectory(prefix="fuzz-")  # removed with everything in it when pytest exits


def folder() -> Path:
    """A fresh folder for one example (hypothesis runs many per test, so no function-scoped tmp_path)."""
    return Path(tempfile.mkdtemp(dir=SCRATCH.name))


def jsonl(rows: list) -> str:
    return "".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows)


def record(i: int):
    """A preference index row, some of whose fields may be replaced by junk."""
    base = {"index": i, "pair_id": f"p{i}", "shard": "shard-00000.safetensors", "score_w": 0.1}
    base.update(score_l=0.2, has_image=False)
    edits = st.dictionaries(st.sampled_from([*base, "shard_sha256", "extra"]), values, max_size=3)
    return edits.map(lambda edit: {**base, **edit})


@FUZZ
@given(rows=st.lists(st.one_of(record(0), record(1), junk_lines, values), max_size=4))
def test_index_jsonl(rows):
    root = folder()
    (root / "index.jsonl").write_text(jsonl(rows), encoding="utf-8")
    one_line_or_fine(lambda: PreferenceDataset(root))


@FUZZ
@given(manifest=st.one_of(values, st.fixed_dictionaries({"files": values, "world_size": values}), junk_lines))
def test_checkpoint_manifest(manifest):
    root = folder()
    (root / "trainer.json").write_text("{}")
    (root / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))

    def read():
        files = VerifiedFiles(root)
        files.json("trainer.json")

    one_line_or_fine(read)


@FUZZ
@given(text=junk_lines, overrides=st.lists(st.text(max_size=30), max_size=2))
def test_config_file_and_overrides(text, overrides):
    root = folder()
    (root / "c.yaml").write_text(text, encoding="utf-8")
    one_line_or_fine(lambda: config_from_dict(read_config_dict(root / "c.yaml", overrides)))


KEYS = "seed output_dir model.name lora.rank lora.alpha lora.targets dpo.beta dpo.reference train.max_steps"
KEYS += " train.precision train.micro_batch_size optim.lr optim.betas eval.draws logging.wandb data.synthetic"


@FUZZ
@given(key=st.sampled_from(KEYS.split()) | st.text(max_size=12), value=junk_lines | values.map(json.dumps))
def test_set_values(key, value):
    def apply():
        data = {"model": {"name": "tiny"}}
        apply_override(data, f"{key}={value}")
        config_from_dict(data)

    one_line_or_fine(apply)


@FUZZ
@given(
    lines=st.lists(junk_lines | values.map(json.dumps), max_size=5),
    suffix=st.sampled_from([".txt", ".jsonl"]),
)
def test_prompt_files(lines, suffix):
    path = folder() / f"prompts{suffix}"
    path.write_text("\n".join(lines), encoding="utf-8")
    one_line_or_fine(lambda: load_prompts(path))


score_row = st.fixed_dictionaries(
    {
        "video": st.sampled_from(["a.mp4", "b.mp4"]) | values,
        "status": st.sampled_from(["ok", "error"]) | values,
    },
    optional={
        "score": values,
        "prompt": values,
        "prompt_id": values,
        "video_key": values,
        "video_sha256": values,
    },
)


@FUZZ
@given(rows=st.lists(score_row | junk_lines | values, max_size=4))
def test_scores_jsonl(rows):
    root = folder()
    (root / "scores.jsonl").write_text(jsonl(rows), encoding="utf-8")
    one_line_or_fine(lambda: latest_rows(root / "scores.jsonl"))
    one_line_or_fine(lambda: load_candidates(root / "scores.jsonl"))


@FUZZ
@given(header=values | junk_lines, size=st.integers(-5, 300) | st.none(), tail=st.binary(max_size=40))
def test_shard_headers(header, size, tail):
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    length = len(text) if size is None else size
    path = folder() / "shard-00000.safetensors"
    path.write_bytes(struct.pack("<q", length) + text + tail)
    one_line_or_fine(lambda: read_shard_header(path))


@pytest.mark.parametrize("data", [b"", b"\x00" * 3, struct.pack("<Q", 2**62) + b"{}"])
def test_shard_headers_that_lie_about_their_size(tmp_path, data):
    path = tmp_path / "shard-00000.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        read_shard_header(path)
