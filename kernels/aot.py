"""Ahead-of-time compile of every kernel variant the launchers launch, for a GPU, on a machine without one.

    # a JSON line per variant and arch; exit 1 on a failure
    python -m videogpa.kernels.aot [--arch 80,90] [--jobs N]

`make aot-rows` runs it under triton 3.6.0 (the GPU image's, in .venv-triton36) and 3.7.1 (.venv's) and writes
benchmarks/results/aot_triton36.jsonl and aot_triton37.jsonl: every ceiling must hold under both.

Each op's `launch.aot_variants()` builds the launches its launchers make on a GPU (from meta tensors of the
trainer's shapes); their arguments are specialised by Triton's own JIT binder (dtypes, 16-divisibility,
ints equal to 1), compiled with `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`
(ptxas ships with triton), and checked: no spills (cuobjdump's resource usage: no stack or local memory)
and each property the variant's design relies on, read from the SASS or the PTX (see Variant.expect).
Needs TRITON_INTERPRET unset: the interpreter replaces the JIT functions. The binder and `_pack_args` are
Triton's JIT internals (as of triton 3.6 and 3.7): a Triton upgrade that changes them fails this check
visibly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from videogpa.kernels._launch import Launch, Variant

_CHECKS = {  # property -> (which listing, test on it)
    "vector_loads": ("sass", lambda s: re.search(r"\bLDG\.E(\.\w+)*\.128\b", s) is not None),
    "vector_stores": ("sass", lambda s: re.search(r"\bSTG\.E(\.\w+)*\.128\b", s) is not None),
    "no_membar": ("sass", lambda s: re.search(r"\bMEMBAR\b|\bCCTL\b", s) is None),
    "no_int64_div": ("ptx", lambda s: re.search(r"\b(div|rem)\.(s|u)64\b", s) is None),
    "one_instruction_round": ("sass", lambda s: re.search(r"\bFRND\s", s) is not None),
}


@dataclass
class Report:
    name: str
    arch: int
    registers: int
    stack_bytes: int
    local_bytes: int
    failed: list[str]  # the properties (or "spills") that do not hold

    @property
    def ok(self) -> bool:
        return not self.failed


def nvidia_tool(name: str) -> Path:
    """ptxas / cuobjdump as shipped inside triton's wheel."""
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} not found at {path} (triton's NVIDIA backend binaries)")
    return path


def compile_launch(launch: Launch, arch: int):
    """The CompiledKernel Triton's JIT would build for this launch on a GPU of compute capability `arch`."""
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.constexprs)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, dict(launch.constexprs), bound, specialization, options
    )
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def _disassemble(cubin: bytes, sass: bool) -> tuple[str, dict[str, int]]:
    """(cuobjdump's listing: the SASS if asked for and the resource usage; {"REG", "STACK", "LOCAL"})."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        listing = subprocess.run(
            [str(nvidia_tool("cuobjdump")), *(["-sass"] if sass else []), "-res-usage", f.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return listing, {k: int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", listing)}


def check_variant(variant: Variant, arch: int) -> Report:
    compiled = compile_launch(variant.launch, arch)
    wants_sass = any(_CHECKS[p][0] == "sass" for p in variant.expect)  # disassembly is the slow part
    sass, usage = _disassemble(compiled.asm["cubin"], wants_sass)
    listings = {"sass": sass, "ptx": compiled.asm["ptx"]}
    failed = [p for p in variant.expect if not _CHECKS[p][1](listings[_CHECKS[p][0]])]
    if usage.get("STACK", 0) or usage.get("LOCAL", 0):
        failed.append("spills")
    if variant.max_registers is not None and usage["REG"] > variant.max_registers:
        failed.append(f"registers {usage['REG']} > {variant.max_registers}")
    return Report(variant.name, arch, usage["REG"], usage.get("STACK", 0), usage.get("LOCAL", 0), failed)


def all_variants() -> list[Variant]:
    from videogpa.kernels.dpo_loss.launch import aot_variants as dpo_variants
    from videogpa.kernels.reproject.launch import aot_variants as reproject_variants

    return dpo_variants() + reproject_variants()


def _check_nth(job: tuple[int, int]) -> Report:
    arch, index = job
    return check_variant(all_variants()[index], arch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter replaces the JIT functions this compiles")
    jobs = [(int(a), i) for a in args.arch.split(",") for i in range(len(all_variants()))]
    with ProcessPoolExecutor(max(1, min(args.jobs, len(jobs)))) as pool:
        reports = list(pool.map(_check_nth, jobs))
    for r in reports:
        print(json.dumps({**asdict(r), "triton": triton.__version__}))
    bad = [r for r in reports if not r.ok]
    for r in bad:
        print(f"FAILED sm_{r.arch} {r.name}: {', '.join(r.failed)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
