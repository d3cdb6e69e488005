"""Preference shards: round trip, validation errors, collation."""

from __future__ import annotations

import json

import pytest
import torch

from videogpa.engine.data.preference import (
    INDEX_NAME,
    PreferenceDataset,
    PreferenceShardWriter,
    collate_pairs,
    file_sha256,
)


def _pairs(n: int, image: bool = False, dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        out.append(
            {
                "pair_id": f"prompt{i:03d}",
                "latents_w": torch.randn(3, 4, 4, 6, generator=gen).to(dtype),
                "latents_l": torch.randn(3, 4, 4, 6, generator=gen).to(dtype),
                "text_embeds": torch.randn(5, 8, generator=gen).to(dtype),
                "score_w": float(torch.rand(1, generator=gen)),
                "score_l": float(torch.rand(1, generator=gen)) + 1.0,
                "image_latents": torch.randn(1, 4, 4, 6, generator=gen).to(dtype) if image else None,
            }
        )
    return out


def _write(path, pairs, shard_size=3):
    with PreferenceShardWriter(path, shard_size=shard_size) as writer:
        for p in pairs:
            writer.add(**p)
    return path


def _edit_index(folder, edit):
    """Apply edit(record) to every index row."""
    index = folder / INDEX_NAME
    records = [json.loads(line) for line in index.read_text().splitlines()]
    for record in records:
        edit(record)
    index.write_text("".join(json.dumps(r) + "\n" for r in records))


def _resave(path, tensors):
    """Rewrite a shard with other tensors, as a faulty writer would have written it (checksums updated):
    the checks after the checksum's must catch it."""
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    digest = file_sha256(path)
    _edit_index(path.parent, lambda r: r.update(shard_sha256=digest) if r["shard"] == path.name else None)


@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip(tmp_path, image, dtype):
    pairs = _pairs(7, image=image, dtype=dtype)
    _write(tmp_path, pairs, shard_size=3)
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 3  # 3 + 3 + 1
    assert not list(tmp_path.glob("*.tmp"))
    ds = PreferenceDataset(tmp_path)
    assert len(ds) == 7
    for i, p in enumerate(pairs):
        rec = ds[i]
        assert rec.index == i and rec.pair_id == p["pair_id"]
        assert rec.score_w == p["score_w"] and rec.score_l == p["score_l"]
        for name in ("latents_w", "latents_l", "text_embeds", "image_latents"):
            if p[name] is None:
                assert getattr(rec, name) is None
            else:
                assert getattr(rec, name).dtype == dtype
                assert torch.equal(getattr(rec, name), p[name])
    with pytest.raises(IndexError):
        ds[7]


def test_collate(tmp_path):
    pairs = _pairs(4, image=True)
    ds = PreferenceDataset(_write(tmp_path, pairs))
    batch = collate_pairs([ds[2], ds[0]])
    assert batch.latents_w.shape == (2, 3, 4, 4, 6)
    assert torch.equal(batch.latents_l[0], pairs[2]["latents_l"])
    assert torch.equal(batch.cond.text_embeds[1], pairs[0]["text_embeds"])
    assert batch.cond.image_latents.shape == (2, 1, 4, 4, 6)
    assert batch.pair_index.dtype == torch.long and batch.pair_index.tolist() == [2, 0]
    assert batch.score_l.tolist() == pytest.approx([pairs[2]["score_l"], pairs[0]["score_l"]])
    assert batch.pair_ids == ["prompt002", "prompt000"]


def test_collate_rejects_mixed_shapes_and_image_presence(tmp_path):
    a = _pairs(1)[0]
    b = dict(_pairs(1, image=True)[0], pair_id="other")
    c = dict(a, pair_id="third", latents_w=torch.randn(2, 4, 4, 6), latents_l=torch.randn(2, 4, 4, 6))
    ds = PreferenceDataset(_write(tmp_path, [a, b, c]))
    with pytest.raises(ValueError, match="image_latents"):
        collate_pairs([ds[0], ds[1]])
    with pytest.raises(ValueError, match="latents_w"):
        collate_pairs([ds[0], ds[2]])
    with pytest.raises(ValueError, match="at least one"):
        collate_pairs([])


def test_writer_rejects_bad_pairs(tmp_path):
    p = _pairs(1)[0]
    writer = PreferenceShardWriter(tmp_path, shard_size=2)
    with pytest.raises(ValueError, match="same shape"):
        writer.add(**dict(p, latents_l=torch.randn(3, 4, 4, 5)))
    nan = p["latents_w"].clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'latents_w' contains NaN"):
        writer.add(**dict(p, latents_w=nan))
    with pytest.raises(ValueError, match="'text_embeds' must be 2-D"):
        writer.add(**dict(p, text_embeds=torch.randn(1, 5, 8)))
    with pytest.raises(ValueError, match="floating point"):
        writer.add(**dict(p, latents_w=torch.ones(3, 4, 4, 6, dtype=torch.long)))
    with pytest.raises(ValueError, match="score_w"):
        writer.add(**dict(p, score_w=float("nan")))
    writer.add(**p)
    with pytest.raises(ValueError, match="already added"):
        writer.add(**p)
    writer.close()
    with pytest.raises(ValueError, match="already exists"):
        PreferenceShardWriter(tmp_path)
    with pytest.raises(ValueError, match="shard_size"):
        PreferenceShardWriter(tmp_path / "new", shard_size=0)


def test_no_index_until_close(tmp_path):
    writer = PreferenceShardWriter(tmp_path, shard_size=1)
    for p in _pairs(2):
        writer.add(**p)
    assert not (tmp_path / INDEX_NAME).exists()
    with pytest.raises(ValueError, match=INDEX_NAME):
        PreferenceDataset(tmp_path)
    writer.close()
    assert len(PreferenceDataset(tmp_path)) == 2


def test_missing_shard(tmp_path):
    _write(tmp_path, _pairs(4), shard_size=2)
    (tmp_path / "shard-00001.safetensors").unlink()
    with pytest.raises(ValueError, match="shard-00001.safetensors.*does not exist"):
        PreferenceDataset(tmp_path)


def test_corrupt_shard(tmp_path):
    _write(tmp_path, _pairs(4), shard_size=2)
    path = tmp_path / "shard-00000.safetensors"
    path.write_bytes(b"\xff" * 64 + path.read_bytes()[64:])
    with pytest.raises(ValueError, match="shard-00000.safetensors.*SHA-256"):
        PreferenceDataset(tmp_path)
    _edit_index(tmp_path, lambda r: r.pop("shard_sha256"))  # an index from before checksums
    with pytest.raises(ValueError, match="shard-00000.safetensors.*not a readable safetensors"):
        PreferenceDataset(tmp_path)


def test_truncated_shard_fails_on_read(tmp_path):
    _write(tmp_path, _pairs(2), shard_size=2)
    path = tmp_path / "shard-00000.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="shard-00000.safetensors"):
        ds = PreferenceDataset(tmp_path, verify_checksums=False)
        ds[1]


def test_shape_mismatch_in_shard(tmp_path):
    from safetensors.torch import load_file

    _write(tmp_path, _pairs(2), shard_size=2)
    path = tmp_path / "shard-00000.safetensors"
    tensors = load_file(str(path))
    tensors["1/latents_l"] = torch.randn(3, 4, 4, 5)
    _resave(path, tensors)
    with pytest.raises(ValueError, match="1/latents_w has shape.*1/latents_l"):
        PreferenceDataset(tmp_path)


def test_nan_in_shard_named_on_read(tmp_path):
    from safetensors.torch import load_file

    _write(tmp_path, _pairs(2), shard_size=2)
    path = tmp_path / "shard-00000.safetensors"
    tensors = load_file(str(path))
    tensors["1/text_embeds"][0, 0] = float("nan")
    _resave(path, tensors)
    ds = PreferenceDataset(tmp_path)
    ds[0]
    with pytest.raises(ValueError, match=r"shard-00000.safetensors.*pair 1.*'text_embeds' contains NaN"):
        ds[1]


def test_missing_key_in_shard(tmp_path):
    from safetensors.torch import load_file

    _write(tmp_path, _pairs(2), shard_size=2)
    path = tmp_path / "shard-00000.safetensors"
    tensors = load_file(str(path))
    del tensors["0/text_embeds"]
    _resave(path, tensors)
    with pytest.raises(ValueError, match="missing key 0/text_embeds"):
        PreferenceDataset(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(index=5), "field 'index' is 5"),
        (lambda r: r.update(extra=1), "unknown keys"),
        (lambda r: r.pop("score_w"), "'score_w'"),
        (lambda r: r.update(pair_id="prompt001"), "duplicate pair_id"),
        (lambda r: r.update(shard="../x.safetensors"), "'shard'"),
    ],
)
def test_bad_index_lines(tmp_path, edit, message):
    _write(tmp_path, _pairs(2), shard_size=2)
    index = tmp_path / INDEX_NAME
    records = [json.loads(line) for line in index.read_text().splitlines()]
    edit(records[0])
    index.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match=message):
        PreferenceDataset(tmp_path)


def test_index_not_json(tmp_path):
    _write(tmp_path, _pairs(2), shard_size=2)
    index = tmp_path / INDEX_NAME
    index.write_text(index.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=f"{INDEX_NAME}:3: not a JSON object"):
        PreferenceDataset(tmp_path)


def test_shared_tensors_are_copied(tmp_path):
    """Pairs of one prompt may share a text tensor (or views of one buffer); each is stored on its own."""
    pairs = _pairs(3)
    text = torch.randn(5, 8)
    buffer = torch.randn(2, 3, 4, 4, 6)
    for p in pairs:
        p["text_embeds"] = text
    pairs[0]["latents_w"], pairs[0]["latents_l"] = buffer[0], buffer[1]
    ds = PreferenceDataset(_write(tmp_path, pairs))
    assert all(torch.equal(ds[i].text_embeds, text) for i in range(3))
    assert torch.equal(ds[0].latents_l, buffer[1])
