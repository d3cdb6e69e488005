"""scripts/gpu_check.py: its GPU plan runs the steps in order of value at full size under one 6-minute
deadline, results go under $OUT, a step past its cap is killed with its rows kept, a missing fixture or a
skipped GPU test is a failure. The dry run in a mirror of the GPU image is
tests/benchmarks/test_gpu_rehearsal.py."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.scripts import REPO, load_script

gpu_check = load_script("scripts/gpu_check.py")
BENCHMARKS = ("bench_dpo_loss.py", "bench_reproject.py", "bench_step.py", "bench_vggt.py")


def _order() -> list[str]:
    geometry = ["bench_geometry"] if (REPO / "benchmarks" / "bench_geometry.py").exists() else []
    return [
        "imports",
        "dpo_loss triton",
        "reproject",
        "gpu tests",
        "bench_step",
        "bench_vggt",
        *geometry,
        "zero3 smoke",
        "dpo_loss compile",
    ]


def test_gpu_plan_runs_in_order_of_value_at_full_size_within_six_minutes():
    plan = gpu_check.steps(dry_run=False)
    assert [s.name for s in plan] == _order()
    for step in plan:
        assert not {"--small", "--size", "--views", "--dry-run"} & set(step.argv), step.argv
        assert 0 < step.timeout_s <= gpu_check.BUDGET_S
    by_name = {s.name: s for s in plan}
    assert by_name["dpo_loss triton"].argv[-1] == "eager,triton"  # the compile baselines only at the end
    assert by_name["dpo_loss compile"].argv[-1] == "eager,compile"
    # the whole command, install included, within 6 minutes of the call's 15 (the machine's start-up aside)
    assert gpu_check.INSTALL_TIMEOUT_S < gpu_check.BUDGET_S <= 6 * 60 - 10
    for name in ("gpu tests", "zero3 smoke"):
        assert "--fail-on-skip" in by_name[name].argv  # on the GPU a skipped test is a failure
    tests = by_name["gpu tests"].argv
    assert tests[tests.index("--gpu-select") + 1] == "kernels-and-gpu"
    files = [a for a in tests if a.startswith("tests/")]
    assert files[:2] == ["tests/kernels/test_gpu_paths.py", "tests/geometry/test_scoring_gpu.py"]
    expected = {"tests/kernels/test_dpo_loss.py", "tests/kernels/test_reproject.py"}
    expected |= {"tests/kernels/test_dpo_loss_fixture.py", "tests/geometry/test_vggt_fixture.py"}
    expected |= {"tests/models/test_model_gpu.py"}
    assert expected <= set(files)
    assert "tests/kernels/test_aot_compile.py" not in files and len(set(files)) == len(files)
    assert by_name["zero3 smoke"].argv[-1] == "tests/trainer/test_zero3_gpu.py"


def test_dry_run_plan_is_the_same_steps_at_tiny_sizes():
    plan = gpu_check.steps(dry_run=True)
    assert [s.name for s in plan] == _order()
    assert all("--fail-on-skip" not in s.argv for s in plan)  # GPU tests skip on a CPU
    assert plan[0].env == {"DS_ACCELERATOR": "cuda"}  # deepspeed imported with its CUDA accelerator
    scripts = {Path(a).name for s in plan for a in s.argv if a.startswith("benchmarks/")}
    assert set(BENCHMARKS) <= scripts


def test_wheel_pins_name_every_wheel_at_the_installed_version():
    pins = gpu_check.wheel_pins()
    assert [p.split("==")[0] for p in pins] == list(gpu_check.WHEELS)
    assert all(p.split("==")[1] for p in pins)
    assert gpu_check.image_wheel_pins() == ["transformers==5.17.0", "huggingface-hub==1.33.0"]


def test_results_go_under_out_when_it_is_set(monkeypatch, tmp_path):
    args = argparse.Namespace(results=None)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.results_folder(args, dry_run=False) == tmp_path
    assert gpu_check.results_folder(args, dry_run=True) == tmp_path
    monkeypatch.delenv("OUT")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the dry run's fresh folder, made in tmp_path
    assert gpu_check.results_folder(args, dry_run=False) == REPO / "benchmarks" / "results"
    assert gpu_check.results_folder(args, dry_run=True).parent == tmp_path
    monkeypatch.setenv("OUT", str(tmp_path))
    assert (
        gpu_check.results_folder(argparse.Namespace(results=tmp_path / "x"), dry_run=False) == tmp_path / "x"
    )


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie, dead), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_a_step_past_its_cap_is_killed_with_its_children_and_keeps_its_rows(tmp_path):
    rows, pid_file = tmp_path / "rows.jsonl", tmp_path / "grandchild.pid"
    code = (
        "import json, subprocess, sys, time\n"
        f"open({str(rows)!r}, 'a').write(json.dumps({{'row': 1}}) + '\\n')\n"
        "print('measured row 1', flush=True)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    tee = gpu_check.Tee(tmp_path / "gpu_check.log")
    step = gpu_check.Step("slow", [sys.executable, "-c", code], timeout_s=3)
    start = time.monotonic()
    row = gpu_check.run_step(step, dict(os.environ), time.monotonic() + 100, tee, dry_run=False)
    assert row["status"] == "timed out" and row["timeout_s"] == 3 and time.monotonic() - start < 30
    assert [json.loads(line) for line in rows.read_text().splitlines()] == [{"row": 1}]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "measured row 1" in log and "=== slow: timed out" in log
    pid = int(pid_file.read_text())
    for _ in range(50):
        if _state(pid) in (None, "Z", "X"):
            break
        time.sleep(0.1)
    assert _state(pid) in (None, "Z", "X"), "the step's child outlived the step"


def test_the_calls_deadline_stops_the_steps_after_it(tmp_path):
    tee = gpu_check.Tee(tmp_path / "log")
    step = gpu_check.Step("late", [sys.executable, "-c", "print('ran')"], timeout_s=60)
    row = gpu_check.run_step(step, dict(os.environ), time.monotonic() - 1, tee, dry_run=False)
    assert row["status"] == "not run"
    ok = gpu_check.run_step(step, dict(os.environ), time.monotonic() + 60, tee, dry_run=False)
    assert ok["status"] == "ok" and "ran" in (tmp_path / "log").read_text()


def test_a_missing_fixture_fails_the_call(monkeypatch, tmp_path):
    fixtures = tmp_path / "fixtures"
    assert gpu_check.fixture_problems(fixtures)
    for name in gpu_check.FIXTURES:
        (fixtures / name).mkdir(parents=True)
    assert gpu_check.fixture_problems(fixtures) == []
    (fixtures / gpu_check.FIXTURES[-1]).rmdir()
    assert gpu_check.FIXTURES[-1] in " ".join(gpu_check.fixture_problems(fixtures))
    # the whole call: no step left, wheels none, the fixtures incomplete -> exit 1, with its rows and log
    monkeypatch.setenv("VIDEOGPA_FIXTURES", str(fixtures))
    monkeypatch.setattr(gpu_check, "steps", lambda dry_run: [])
    (tmp_path / "whl").mkdir()
    args = ["--dry-run", "--wheels", str(tmp_path / "whl"), "--site", str(tmp_path / "site")]
    assert gpu_check.main([*args, "--results", str(tmp_path / "out")]) == 1
    summary = [json.loads(line) for line in (tmp_path / "out" / "gpu_check.jsonl").read_text().splitlines()]
    assert [(r["step"], r["status"]) for r in summary] == [("install", "ok"), ("fixtures", "failed")]
    assert "FIXTURES: fixture" in (tmp_path / "out" / "gpu_check.log").read_text()
    assert (tmp_path / "site" / "videogpa" / "kernels").resolve() == REPO / "kernels"


def test_the_child_environment_is_the_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")  # left by an in-process trainer: a child must not join its group
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    env = gpu_check.child_env(tmp_path / "site", tmp_path / "rows", tmp_path / "fx", dry_run=False)
    assert "RANK" not in env and "TRITON_INTERPRET" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "site")
    assert env["VIDEOGPA_REQUIRE_FIXTURES"] == "1" and env["VIDEOGPA_FIXTURES"] == str(tmp_path / "fx")
    assert env["VIDEOGPA_BENCH_RESULTS"] == str(tmp_path / "rows")
    assert gpu_check.child_env(tmp_path, tmp_path, tmp_path, dry_run=True)["DS_ACCELERATOR"] == "cpu"


PLUGIN_TESTS = {
    "kernels/test_k.py": "import pytest\n\ndef test_plain():\n    pass\n\n"
    "@pytest.mark.skip(reason='no fixture')\ndef test_skipped():\n    pass\n",
    "other/test_o.py": "import pytest\n\ndef test_plain():\n    pass\n\n"
    "@pytest.mark.gpu\ndef test_gpu():\n    pass\n",
}


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "pytest", "-p", "tests.benchmarks.gpu_pytest", "-p", "no:cacheprovider"]
    argv += ["-o", "markers=gpu: on a GPU", "-rs", *args, "kernels", "other"]
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_the_test_steps_plugin_selects_and_fails_on_a_skip(tmp_path):
    for name, text in PLUGIN_TESTS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    both = _pytest(tmp_path, "--gpu-select", "kernels-and-gpu")
    assert both.returncode == 0, both.stdout
    assert "2 passed, 1 skipped, 1 deselected" in both.stdout
    strict = _pytest(tmp_path, "--gpu-select", "kernels-and-gpu", "--fail-on-skip")
    assert strict.returncode == 1, strict.stdout
    assert "--fail-on-skip: 1 tests skipped: kernels/test_k.py::test_skipped" in strict.stdout
    gpu_only = _pytest(tmp_path, "--gpu-select", "gpu", "--fail-on-skip")
    assert gpu_only.returncode == 0 and "1 passed, 3 deselected" in gpu_only.stdout, gpu_only.stdout


def test_more_files_under_out_than_come_back_is_said(monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(gpu_check.MAX_FILES_BACK):  # with gpu_check.log and .jsonl: two too many
        (out / f"rows{i}.jsonl").write_text("{}\n")
    monkeypatch.setenv("OUT", str(out))
    monkeypatch.setattr(gpu_check, "steps", lambda dry_run: [])
    (tmp_path / "whl").mkdir()
    gpu_check.main(["--dry-run", "--wheels", str(tmp_path / "whl"), "--site", str(tmp_path / "site")])
    log = (out / "gpu_check.log").read_text()
    assert f"WARNING: {gpu_check.MAX_FILES_BACK + 2} files under $OUT, only 8 come back" in log


def test_rows_carry_the_commit_where_the_copy_has_no_git(monkeypatch, tmp_path):
    """The device runs a copy of the working tree without .git: the commit comes from the stamp that
    `make gpu-fixtures` writes beside the fixtures, and reaches every benchmark row."""
    (tmp_path / "COMMIT").write_text("abc123\n")
    monkeypatch.setattr(gpu_check, "REPO", tmp_path / "copy")
    (tmp_path / "copy").mkdir()
    assert gpu_check.source_commit(tmp_path) == "abc123 (stamped by make gpu-fixtures)"
    assert gpu_check.source_commit(tmp_path / "nowhere") is None
    monkeypatch.setenv("VIDEOGPA_GIT_COMMIT", "abc123 (stamped by make gpu-fixtures)")
    assert load_script("benchmarks/_common.py")._git_commit() == "abc123 (stamped by make gpu-fixtures)"
