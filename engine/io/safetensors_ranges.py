"""Reading part of a tensor from a safetensors file: its header (names, dtypes, shapes, byte offsets) and a
range of a tensor's flattened elements read with plain file reads (no memory map), so a process that loads
only its share of each tensor never holds, or maps, the rest of the file.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data; offsets
count from the end of the header, tensors are stored row-major, little-endian.
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER_BYTES = 100_000_000  # the format's own limit on the JSON header


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in its file."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offset of its first element

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """Every tensor of a safetensors file by name; a ValueError naming the file if it is not one."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size <= MAX_HEADER_BYTES:
            raise ValueError(f"{str(path)!r} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(path)!r} is not a safetensors file (header: {err})") from None
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in DTYPES:
            raise ValueError(f"{str(path)!r}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        begin, end = info["data_offsets"]
        entry = TensorEntry(path, DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + begin)
        if end - begin != entry.numel * entry.dtype.itemsize:
            raise ValueError(
                f"{str(path)!r}: tensor {name!r} has {end - begin} bytes, expected "
                f"{entry.numel * entry.dtype.itemsize} for shape {list(entry.shape)}"
            )
        entries[name] = entry
    return entries


def read_range(entry: TensorEntry, start: int, count: int) -> torch.Tensor:
    """Elements [start, start + count) of the flattened tensor, as a 1-D CPU tensor in the file's dtype."""
    if sys.byteorder != "little":
        raise ValueError("safetensors files are little-endian; this machine is not")
    if not 0 <= start <= start + count <= entry.numel:
        raise ValueError(
            f"elements [{start}, {start + count}) outside a tensor of {entry.numel} in {entry.path}"
        )
    out = torch.empty(count, dtype=entry.dtype)
    if count:
        buffer = out.view(torch.uint8).numpy()
        with open(entry.path, "rb") as f:
            f.seek(entry.begin + start * entry.dtype.itemsize)
            if f.readinto(buffer) != buffer.nbytes:
                raise ValueError(
                    f"{str(entry.path)!r} is truncated (a tensor's data ends past the file's end)"
                )
    return out
