"""Every kernel variant the launchers launch compiles for sm_80 and sm_90 without a GPU (ptxas and cuobjdump
from triton's wheel), without spills, and with the machine-code properties its design relies on.

The compiles run in a subprocess without TRITON_INTERPRET (the interpreter replaces the JIT functions). The
rows of both Tritons (3.6.0, the GPU image's, and 3.7.1, this environment's) are committed under
benchmarks/results/ by `make aot-rows`: every ceiling holds under both, and the 3.7.1 rows are what compiles
here today (a kernel changed without new rows fails).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videogpa.kernels.dpo_loss.launch import AOT_DTYPES
from videogpa.kernels.dpo_loss.launch import aot_variants as dpo_variants
from videogpa.kernels.reproject.launch import aot_variants as reproject_variants

ARCHS = (80, 90)
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TRITONS = {"3.6.0": "aot_triton36.jsonl", "3.7.1": "aot_triton37.jsonl"}


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compiled():
    proc = _python("-m", "videogpa.kernels.aot", "--arch", ",".join(map(str, ARCHS)))
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, rows


def test_every_launched_variant_compiles_with_its_properties(compiled):
    proc, rows = compiled
    assert proc.returncode == 0, proc.stderr[-4000:]
    failed = [(r["arch"], r["name"], r["failed"]) for r in rows if r["failed"]]
    assert not failed
    assert all(r["stack_bytes"] == 0 and r["local_bytes"] == 0 for r in rows)


def test_the_compiled_set_is_the_launchers_set(compiled):
    _, rows = compiled
    names = [v.name for v in dpo_variants() + reproject_variants()]
    assert len(set(names)) == len(names)
    for arch in ARCHS:
        assert [r["name"] for r in rows if r["arch"] == arch] == names
    for dtype in AOT_DTYPES:  # every input dtype, both reference sources, every mask kind, gradient
        for case in ("cogvideox", "wan_i2v", "odd"):
            assert {f"partial_sums/{case}/{dtype}/ref", f"partial_sums/{case}/{dtype}/ref_err"} <= set(names)
            assert f"grad/{case}/{dtype}" in names
    assert {"zbuffer", "resolve/render"} <= set(names)


def test_streaming_variants_expect_vector_access_and_no_int64_division():
    by_name = {v.name: v for v in dpo_variants() + reproject_variants()}
    for name, v in by_name.items():
        if name.startswith(("partial_sums/", "grad/")):
            assert {"vector_loads", "no_int64_div"} <= set(v.expect) and v.max_registers <= 72
        if name.startswith("grad/"):
            assert "vector_stores" in v.expect
    assert {"no_membar", "one_instruction_round"} <= set(by_name["zbuffer"].expect)


def test_the_checks_catch_a_kernel_without_the_properties():
    proc = _python(str(Path(__file__).with_name("aot_negative.py")), *map(str, ARCHS))
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(ARCHS)
    for line in lines:
        failed = json.loads(line)
        expected = {"vector_loads", "vector_stores", "no_membar", "no_int64_div", "one_instruction_round"}
        assert expected <= set(failed)
        assert any(f.startswith("registers") for f in failed)


@pytest.mark.parametrize("version", sorted(TRITONS))
def test_committed_rows_hold_every_ceiling_under_both_tritons(version):
    rows = [json.loads(line) for line in (RESULTS / TRITONS[version]).read_text().splitlines()]
    variants = {v.name: v for v in dpo_variants() + reproject_variants()}
    assert {r["triton"] for r in rows} == {version}
    assert sorted((r["arch"], r["name"]) for r in rows) == sorted((a, n) for a in ARCHS for n in variants), (
        "stale rows: run `make aot-rows`"
    )
    for r in rows:
        ceiling = variants[r["name"]].max_registers
        assert not r["failed"] and r["stack_bytes"] == r["local_bytes"] == 0, r
        assert ceiling is None or r["registers"] <= ceiling, r


def test_committed_rows_are_what_compiles_today(compiled):
    import triton

    proc, rows = compiled
    assert proc.returncode == 0
    if triton.__version__ != "3.7.1":
        pytest.skip(f"the committed rows are 3.7.1's; this is triton {triton.__version__}")
    committed = [json.loads(line) for line in (RESULTS / TRITONS["3.7.1"]).read_text().splitlines()]
    key = lambda r: (r["arch"], r["name"])
    today = {key(r): r["registers"] for r in rows}
    assert {key(r): r["registers"] for r in committed} == today, "kernels changed: run `make aot-rows`"
