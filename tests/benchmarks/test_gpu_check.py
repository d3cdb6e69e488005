"""scripts/gpu_check.py: its GPU plan runs every benchmark at full size within the budget, and its dry run
(the same steps at tiny sizes on this CPU) installs a carried wheel, runs every step and writes the rows."""

import json
import subprocess
import sys
import zipfile

import pytest

from tests.benchmarks.scripts import REPO, load_script

gpu_check = load_script("scripts/gpu_check.py")
BENCHMARKS = ("bench_dpo_loss", "bench_reproject", "bench_vggt", "bench_step")


def test_gpu_plan_is_full_size_and_fits_the_budget():
    plan = gpu_check.steps(dry_run=False)
    assert [s.name for s in plan] == ["gpu tests", *BENCHMARKS]
    for step in plan[1:]:
        assert not {"--small", "--size", "--views"} & set(step.argv), step.argv
    assert sum(s.timeout_s for s in plan) <= gpu_check.BUDGET_S <= 8 * 60
    files = plan[0].argv[plan[0].argv.index("gpu") + 3 :]
    assert "tests/kernels/test_dpo_loss.py" in files and "tests/kernels/test_reproject.py" in files


def test_wheel_pins_name_every_wheel_at_the_installed_version():
    pins = gpu_check.wheel_pins()
    assert [p.split("==")[0] for p in pins] == list(gpu_check.WHEELS)
    assert all(p.split("==")[1] for p in pins)


def _tiny_wheel(folder):
    """A one-module wheel, so the install step is exercised without downloading anything."""
    folder.mkdir()
    path = folder / "gpucheckprobe-1.0-py3-none-any.whl"
    info = "gpucheckprobe-1.0.dist-info"
    files = {
        "gpucheckprobe/__init__.py": "VALUE = 7\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


@pytest.mark.slow
def test_dry_run_installs_runs_every_step_and_writes_rows(tmp_path):
    _tiny_wheel(tmp_path / "whl")
    site, rows = tmp_path / "site", tmp_path / "rows"
    cmd = [sys.executable, "scripts/gpu_check.py", "--dry-run", "--wheels", str(tmp_path / "whl")]
    proc = subprocess.run(
        [*cmd, "--site", str(site), "--results", str(rows)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (site / "gpucheckprobe" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (site / "videogpa" / "kernels").resolve() == REPO / "kernels"
    summary = [json.loads(line) for line in (rows / "gpu_check.jsonl").read_text().splitlines()]
    assert [r["step"] for r in summary] == ["imports", "gpu tests", *BENCHMARKS]
    assert all(r["status"] == "ok" and r["dry_run"] for r in summary)
    for name in ("dpo_loss", "reproject", "bench_vggt", "bench_step"):
        first = json.loads((rows / f"{name}.jsonl").read_text().splitlines()[0])
        assert first["git_commit"] and first["device"].startswith("cpu")
