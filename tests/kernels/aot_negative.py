"""A kernel with none of the machine-code properties the AOT checks look for (run as a script, without
TRITON_INTERPRET): prints the properties kernels.aot reports as failed, one JSON list per arch."""

import json
import sys

import torch
import triton
import triton.language as tl

from videogpa.kernels import aot
from videogpa.kernels._launch import Launch, Variant


@triton.jit
def bad_kernel(x_ptr, out_ptr, keys_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    x = tl.load(x_ptr + 2 * i, mask=ok, other=0.0)  # strided: scalar loads
    r = tl.floor(x + 0.5)  # rounding without rint
    q = i.to(tl.int64) // n  # 64-bit division
    tl.store(out_ptr + 2 * i, r + q.to(tl.float32), mask=ok)  # strided: scalar stores
    tl.atomic_min(keys_ptr + i, q, mask=ok)  # default (acq_rel) semantics: fenced


if __name__ == "__main__":
    meta = torch.device("meta")
    x = torch.empty(4096, device=meta)
    launch = Launch(
        bad_kernel, (4,), (x, x, torch.empty(2048, dtype=torch.int64, device=meta), 2048), {"BLOCK": 512}
    )
    variant = Variant("bad", launch, tuple(aot._CHECKS), max_registers=1)
    for arch in map(int, sys.argv[1:]):
        print(json.dumps(aot.check_variant(variant, arch).failed))
