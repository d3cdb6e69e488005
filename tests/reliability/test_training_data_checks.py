"""Training data checked up front: every pair's shapes and dtypes against the others and the model's, from
the shard headers; a shard changed since it was written (bit rot) is named on open; NaN is named on load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from videogpa.engine.data.preference import (
    INDEX_NAME,
    PreferenceDataset,
    PreferenceShardWriter,
    check_preference_set,
    file_sha256,
)

LATENTS, TEXT = (3, 4, 4, 6), (5, 8)


def pair(i: int, latents=LATENTS, text=TEXT, dtype=torch.float32, image=None) -> dict:
    gen = torch.Generator().manual_seed(i)
    return {
        "pair_id": f"p{i}",
        "latents_w": torch.randn(latents, generator=gen).to(dtype),
        "latents_l": torch.randn(latents, generator=gen).to(dtype),
        "text_embeds": torch.randn(text, generator=gen).to(dtype),
        "score_w": 0.1,
        "score_l": 0.9,
        "image_latents": image,
    }


def write_set(folder, pairs: list[dict], shard_size: int = 2):
    with PreferenceShardWriter(folder, shard_size=shard_size) as writer:
        for p in pairs:
            writer.add(**p)
    return folder


def index_rows(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / INDEX_NAME).read_text().splitlines()]


def write_index(folder, rows: list[dict]) -> None:
    (folder / INDEX_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows))


def rewrite_shard(folder, shard: str, edit) -> None:
    """edit(tensors) on a shard, saved with its index checksum updated (a shard written wrong, not rotted)."""
    path = folder / shard
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    digest = file_sha256(path)
    write_index(
        folder, [{**r, "shard_sha256": digest} if r["shard"] == shard else r for r in index_rows(folder)]
    )


def test_a_consistent_set_passes_and_gives_its_layout(tmp_path):
    image = torch.randn(1, 4, 4, 6)
    folder = write_set(tmp_path, [pair(i, image=image) for i in range(5)])
    layout = check_preference_set(PreferenceDataset(folder), latent_shape=LATENTS, text_dim=8, text_length=5)
    assert (layout.latent_shape, layout.latent_dtype, layout.text_shape) == (LATENTS, "F32", TEXT)
    assert layout.image_shape == (1, 4, 4, 6) and layout.num_pairs == 5
    assert check_preference_set(folder) == layout  # a folder is opened first


@pytest.mark.parametrize(
    "odd, message",
    [
        (
            dict(latents=(3, 4, 4, 8)),
            r"'latents_w' is \[3, 4, 4, 8\] F32, but in pair 0 \(pair_id 'p0', shard-00000.safetensors\) "
            r"it is \[3, 4, 4, 6\] F32",
        ),
        (dict(dtype=torch.bfloat16), r"'latents_w' is \[3, 4, 4, 6\] BF16, but .* it is \[3, 4, 4, 6\] F32"),
        (dict(text=(7, 8)), r"'text_embeds' is \[7, 8\] F32, but .* it is \[5, 8\] F32"),
        (dict(text=(5, 16)), r"'text_embeds' is \[5, 16\] F32"),
        (dict(image=torch.randn(1, 4, 4, 6)), r"'image_latents' is \[1, 4, 4, 6\] F32, but .* it is absent"),
    ],
    ids=["latent-shape", "dtype", "text-length", "text-dim", "image-on-one-pair"],
)
def test_a_pair_unlike_the_others_is_named_with_its_shard(tmp_path, odd, message):
    folder = write_set(tmp_path, [pair(0), pair(1), pair(2), pair(3, **odd), pair(4)])
    with pytest.raises(ValueError, match=message) as err:
        check_preference_set(folder, where="data.train")
    text = str(err.value)
    assert text.startswith("data.train: preference shard ") and "\n" not in text
    assert "shard-00001.safetensors', pair 3 (pair_id 'p3')" in text


@pytest.mark.parametrize(
    "model, message",
    [
        (
            dict(latent_shape=(3, 4, 8, 6)),
            r"latents have shape \[3, 4, 4, 6\], but the model expects \[3, 4, 8, 6\]",
        ),
        (dict(text_dim=4096), r"text_embeds have dimension 8, but the model expects 4096"),
        (dict(text_length=226), r"text_embeds have 5 tokens, but the model expects 226"),
    ],
)
def test_a_set_unlike_the_model_is_an_error(tmp_path, model, message):
    folder = write_set(tmp_path, [pair(i) for i in range(3)])
    with pytest.raises(ValueError, match=message) as err:
        check_preference_set(folder, **model)
    assert "shard-00000.safetensors', pair 0 (pair_id 'p0')" in str(err.value)


def test_non_float_and_wrong_rank_tensors_are_errors(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(4)])
    rewrite_shard(
        folder,
        "shard-00001.safetensors",
        lambda t: t.update({"2/text_embeds": torch.ones(5, 8, dtype=torch.int16)}),
    )
    with pytest.raises(
        ValueError, match=r"pair 2 \(pair_id 'p2'\): 'text_embeds' has dtype I16; expected one of"
    ):
        check_preference_set(folder)
    rewrite_shard(
        folder, "shard-00001.safetensors", lambda t: t.update({"2/text_embeds": torch.ones(5, 8, 1)})
    )
    with pytest.raises(
        ValueError, match=r"pair 2 \(pair_id 'p2'\): 'text_embeds' has shape \[5, 8, 1\]; expected 2-D"
    ):
        check_preference_set(folder)


def test_the_check_reads_headers_only_and_nan_is_named_on_load(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(3)])
    rewrite_shard(
        folder, "shard-00001.safetensors", lambda t: t["2/latents_l"].view(-1).__setitem__(7, float("nan"))
    )
    dataset = PreferenceDataset(folder)
    check_preference_set(dataset)  # values are not read: the NaN is found when the pair is
    dataset[1]
    with pytest.raises(
        ValueError, match=r"shard-00001.safetensors', pair 2 \(pair_id 'p2'\).*'latents_l' contains NaN"
    ):
        dataset[2]


def test_every_shard_checksum_is_in_the_index(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(5)])
    rows = index_rows(folder)
    assert {r["shard"] for r in rows} == {
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    }
    assert all(r["shard_sha256"] == file_sha256(folder / r["shard"]) for r in rows)


@pytest.mark.parametrize("offset", [-1, -40, 200])  # the last byte, inside the data, inside the header
def test_a_rotted_shard_is_named_on_open(tmp_path, offset):
    folder = write_set(tmp_path, [pair(i) for i in range(4)])
    path = folder / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        PreferenceDataset(folder)
    text = str(err.value)
    assert "shard-00001.safetensors' (pairs 'p2', 'p3') has SHA-256" in text and "\n" not in text
    assert f"{INDEX_NAME} recorded {file_sha256(folder / 'shard-00000.safetensors')}" not in text
    if offset < 0:  # the header is intact: the opt-out skips the hashing and opens it
        assert len(PreferenceDataset(folder, verify_checksums=False)) == 4


def test_an_index_without_checksums_still_loads(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(3)])
    write_index(folder, [{k: v for k, v in r.items() if k != "shard_sha256"} for r in index_rows(folder)])
    dataset = PreferenceDataset(folder)
    assert len(dataset) == 3 and torch.equal(dataset[2].latents_w, pair(2)["latents_w"])


def test_checksums_that_disagree_within_a_shard_are_an_error(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(2)])
    rows = index_rows(folder)
    rows[1]["shard_sha256"] = "0" * 64
    write_index(folder, rows)
    with pytest.raises(ValueError, match=r"shard-00000.safetensors' \(pair_id 'p0'.*different shard_sha256"):
        PreferenceDataset(folder)


def test_a_missing_key_names_the_pair_id(tmp_path):
    folder = write_set(tmp_path, [pair(i) for i in range(2)])
    rewrite_shard(folder, "shard-00000.safetensors", lambda t: t.pop("1/text_embeds"))
    with pytest.raises(
        ValueError, match=r"shard-00000.safetensors', pair 1 \(pair_id 'p1'\): missing key 1/text_embeds"
    ):
        PreferenceDataset(folder)


def test_the_trainer_checks_its_sets_before_it_builds_anything(tmp_path):
    """A held-out set whose latents differ from the training set's is refused with the pair named, before
    the output folder holds anything of a run."""
    import torch

    from tests.trainer.trainer_helpers import tiny_config
    from videogpa.engine.data.preference import PreferenceShardWriter
    from videogpa.engine.train.trainer import Trainer

    for name, frames in (("train", 4), ("heldout", 3)):
        with PreferenceShardWriter(tmp_path / name) as writer:
            for i in range(2):
                lat = torch.zeros(frames, 4, 8, 8)
                writer.add(f"{name}{i}", lat, lat + 1, torch.zeros(8, 32), 0.1, 0.2)
    data = {"synthetic": None, "train": str(tmp_path / "train"), "heldout": str(tmp_path / "heldout")}
    with pytest.raises(
        ValueError, match=r"data.heldout: .*heldout0.*latents .*but the training set \(data.train"
    ):
        Trainer(tiny_config(tmp_path / "run", data=data))
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_training_latents_with_the_wrong_channels_blame_the_training_set(tmp_path):
    """Audit: training latents with 5 channels (the tiny model takes 4) blamed the correct held-out set."""
    from tests.trainer.trainer_helpers import tiny_config
    from videogpa.engine.train.trainer import Trainer

    for name, channels in (("train", 5), ("heldout", 4)):
        with PreferenceShardWriter(tmp_path / name) as writer:
            for i in range(2):
                lat = torch.zeros(4, channels, 8, 8)
                writer.add(f"{name}{i}", lat, lat + 1, torch.zeros(8, 32), 0.1, 0.2)
    data = {"synthetic": None, "train": str(tmp_path / "train"), "heldout": str(tmp_path / "heldout")}
    named = (
        r"^data.train: preference shard .*train0'\) \(like every pair of the set\): latents have 5 channels"
    )
    with pytest.raises(ValueError, match=named + r" \(shape \[4, 5, 8, 8\]\), but model 'tiny' takes 4$"):
        Trainer(tiny_config(tmp_path / "run", data=data))
