"""The README's memory plan (scripts/memory_plan.py): counted from the real model classes, calibrated against
the one measured step, and shaped as memory should be (less with more sequence parallelism, LoRA below
full)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "memory_plan.py"


@pytest.fixture(scope="module")
def plan_module():
    spec = importlib.util.spec_from_file_location("memory_plan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_model_matches_the_measured_step(plan_module):
    """DESIGN's anchor: the CogVideoX-2B-config LoRA step (17,776 tokens, one pair, full checkpointing) peaked
    at 11.1 GB on one H100."""
    sizes = plan_module.count("CogVideoX-2B")
    terms = plan_module.per_gpu_gb(sizes, plan_module.tokens("CogVideoX-2B"), 226, s=1, lora=True, gpus=1)
    assert plan_module.tokens("CogVideoX-2B") + 226 == 17_776
    assert 0.8 * 11.1 <= terms["allocated"] <= 1.2 * 11.1 and terms["total"] > terms["allocated"]


def test_the_plan_is_shaped_as_memory_is(plan_module):
    rows = plan_module.plan()
    assert {r["model"] for r in rows} == set(plan_module.TABLE) and len(rows) == 2 * len(plan_module.TABLE)
    for r in rows:
        totals = [r["totals"][s] for s in plan_module.SEQUENCE_PARALLEL]
        assert totals == sorted(totals, reverse=True)  # more ranks per sample, less memory each
        full = next(x for x in rows if x["model"] == r["model"] and not x["lora"])
        assert all(r["totals"][s] <= full["totals"][s] for s in plan_module.SEQUENCE_PARALLEL)
        for memory, smallest in r["smallest"].items():
            assert smallest is None or r["totals"][smallest] <= memory
    wan14 = {r["lora"]: r for r in rows if r["model"].startswith("Wan 14B")}
    assert wan14[True]["tokens"] == 75_600 and 13e9 < wan14[True]["params"] < 15e9
    table = plan_module.markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "smallest S, 8×141 GB" in table
