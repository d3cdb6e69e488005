"""Prompt files (plain text / JSONL, I2V images) and the seeded camera-motion prompt builder."""

import json
import random

import pytest

from videogpa.engine.data.prompts import (
    CAMERA_MOTIONS,
    CAMERA_PREFIX,
    camera_motion_prompt,
    load_prompts,
    with_camera_motion,
)


def test_plain_text_skips_blank_and_comment_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n a red barn in a field \n\nan old stone bridge\n")
    items = load_prompts(path)
    assert [it.prompt for it in items] == ["a red barn in a field", "an old stone bridge"]
    assert [it.prompt_id for it in items] == ["p00000", "p00001"]
    assert all(it.image is None for it in items)


def test_jsonl_ids_and_images_relative_to_the_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"png")
    rows = [{"prompt": "a kitchen", "image": "imgs/a.png", "id": "kitchen"}, {"prompt": "a street"}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_prompts(path)
    assert items[0].prompt_id == "kitchen" and items[0].image == tmp_path / "imgs" / "a.png"
    assert items[1].prompt_id == "p00001" and items[1].image is None


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"text": "x"}', "field 'prompt'"),
        ('{"prompt": "  "}', "field 'prompt'"),
        ('{"prompt": "x", "id": "a/b"}', "field 'id'"),
        ('{"prompt": "x", "image": 3}', "field 'image'"),
    ],
)
def test_bad_jsonl_rows_name_file_line_and_field(tmp_path, line, needle):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=needle) as err:
        load_prompts(path)
    assert f"{path}:2" in str(err.value)


def test_duplicate_ids_empty_and_missing_files_are_errors(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n')
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate id 'x' \(first used on line 1\)"):
        load_prompts(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")


def test_image_to_video_requires_an_existing_image_per_prompt(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "image": "missing.png"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:1: field 'image': file .*missing.png does not exist"):
        load_prompts(path, require_images=True)
    assert load_prompts(path)[0].image.name == "missing.png"  # text-to-video ignores the image
    text = tmp_path / "p.txt"
    text.write_text("a prompt\n")
    with pytest.raises(ValueError, match="needs an 'image' field"):
        load_prompts(text, require_images=True)


def test_camera_motion_prompt_structure():
    for seed in range(20):
        prompt = camera_motion_prompt("a quiet library.", random.Random(seed))
        assert prompt.startswith(CAMERA_PREFIX + " a quiet library. ")
        used = [m for m in CAMERA_MOTIONS if m in prompt.lower()]
        assert 2 <= len(used) <= 3
    with pytest.raises(ValueError, match="camera motions"):
        camera_motion_prompt("x", random.Random(0), min_motions=3, max_motions=2)


def test_camera_motion_builder_is_seeded_per_prompt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join(f"scene number {i}" for i in range(12)) + "\n")
    items = load_prompts(path)
    a, b = with_camera_motion(items, seed=7), with_camera_motion(items, seed=7)
    assert a == b
    assert [it.prompt for it in with_camera_motion(items[3:], seed=7)] == [it.prompt for it in a[3:]]
    other = with_camera_motion(items, seed=8)
    assert [x.prompt for x in a] != [x.prompt for x in other]
    assert len({x.prompt.split(". ", 2)[-1] for x in a}) > 1  # different prompts draw different motions
