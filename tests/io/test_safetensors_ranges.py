"""Reading ranges of tensors from a safetensors file with plain reads (engine/io/safetensors_ranges.py),
checked against safetensors' own loader."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from videogpa.engine.io.safetensors_ranges import read_header, read_range


@pytest.fixture()
def saved(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(7, 5, generator=gen),
        "b.bias": torch.randn(13, generator=gen).to(torch.bfloat16),
        "c.index": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path


def test_header_and_every_range_match_safetensors(saved):
    expected = load_file(str(saved))
    header = read_header(saved)
    assert set(header) == set(expected)
    for name, tensor in expected.items():
        entry = header[name]
        assert (entry.dtype, entry.shape) == (tensor.dtype, tuple(tensor.shape))
        flat = tensor.reshape(-1)
        n = flat.numel()
        for start, count in [(0, n), (1, n - 3), (n - 1, 1), (2, 0)]:
            got = read_range(entry, start, count)
            assert got.dtype == tensor.dtype and torch.equal(got, flat[start : start + count])


def test_bad_files_and_ranges_are_clear_errors(saved, tmp_path):
    entry = read_header(saved)["a.weight"]
    with pytest.raises(ValueError, match="outside a tensor of 35"):
        read_range(entry, 30, 6)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_header(junk)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(saved.read_bytes()[:-8])
    last = max(read_header(cut).values(), key=lambda e: e.begin)  # the tensor stored last
    with pytest.raises(ValueError, match="truncated"):
        read_range(last, 0, last.numel)
