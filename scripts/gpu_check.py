"""One command on a bare GPU machine: install the wheels carried in .whl/, run the GPU tests and every
benchmark at full size, and write their rows under benchmarks/results/, within 8 minutes.

    python3 scripts/gpu_check.py               # on the GPU machine (`make gpu-check`)
    python3 scripts/gpu_check.py --dry-run     # the same steps on a CPU at tiny sizes (tested in the suite)
    python3 scripts/gpu_check.py --wheel-pins  # NAME==VERSION of the wheels to carry (`make gpu-wheels`)

The machine is expected to have python3 with torch, triton and CUDA, and none of this project's other
needs that it lacks (diffusers, deepspeed and what they pull in: WHEELS below). `make gpu-wheels`, run on
a machine with the project's .venv, downloads those wheels (the versions installed in .venv) for
CPython 3.12 manylinux and builds a deepspeed wheel without its ops. Here they are installed with
`pip install --no-index --no-deps --target SITE` and put first on PYTHONPATH; the checkout itself is
made importable as `videogpa` by links in SITE (no pip install of the project needed). Each step runs in
its own process with a timeout; a failing step does not stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the GPU image lacks (pure-python or manylinux wheels; deepspeed is built by `make gpu-wheels`).
WHEELS = (
    "diffusers",
    "importlib-metadata",
    "hjson",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
)
BUILT_WHEELS = ("deepspeed",)
BUDGET_S = 480  # 8 minutes for everything


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    timeout_s: int


def wheel_pins() -> list[str]:
    """NAME==VERSION of WHEELS as installed here (the versions the test suite ran with)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]


def gpu_test_files() -> list[str]:
    """The test files holding GPU-marked tests (collecting only those needs no CPU-only dependency)."""
    files = (p for p in sorted((REPO / "tests").rglob("test_*.py")) if "pytest.mark.gpu" in p.read_text())
    return [str(p.relative_to(REPO)) for p in files]


def steps(dry_run: bool) -> list[Step]:
    """The GPU tests and every benchmark: full size, or (dry run) the tiny sizes a CPU runs in seconds."""
    py = sys.executable
    tiny = lambda *args: list(args) if dry_run else []
    full = lambda *args: [] if dry_run else list(args)
    return [
        Step(
            "gpu tests",
            [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()],
            100,
        ),
        Step(
            "bench_dpo_loss",
            [py, "benchmarks/bench_dpo_loss.py", *tiny("--size", "small", "--no-compile")],
            70,
        ),
        Step(
            "bench_reproject",
            [py, "benchmarks/bench_reproject.py", *tiny("--views", "2", "--height", "16", "--width", "20")],
            50,
        ),
        Step(
            "bench_vggt",
            [
                py,
                "benchmarks/bench_vggt.py",
                *full("--iters", "5"),
                *tiny("--small", "--frames", "2", "--batches", "1", "--iters", "1"),
            ],
            100,
        ),
        Step(
            "bench_step",
            [
                py,
                "benchmarks/bench_step.py",
                *tiny("--small", "--warmup", "0", "--iters", "1"),
                *full("--warmup", "1", "--iters", "3"),
            ],
            130,
        ),
    ]


def install(wheels: Path, site: Path, env: dict) -> None:
    """The carried wheels into `site`, and links making this checkout importable as videogpa from there."""
    found = sorted(wheels.glob("*.whl"))
    site.mkdir(parents=True, exist_ok=True)
    if found:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run(
            [*pip, "--upgrade", "--target", str(site), *map(str, found)], check=True, env=env, timeout=120
        )
    package = site / "videogpa"  # a namespace package: videogpa.engine and videogpa.kernels
    package.mkdir(exist_ok=True)
    for name, folder in (("engine", "engine"), ("kernels", "kernels")):
        link = package / name
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(REPO / folder, target_is_directory=True)
    print(f"installed {len(found)} wheels from {wheels} into {site}; videogpa -> {REPO}")


def child_env(site: Path, results: Path, dry_run: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["VIDEOGPA_BENCH_RESULTS"] = str(results)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DS_BUILD_OPS", "0")
    if dry_run:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def run_step(step: Step, env: dict, deadline: float) -> dict:
    timeout = max(1, min(step.timeout_s, int(deadline - time.monotonic())))
    print(f"\n=== {step.name} (timeout {timeout} s): {' '.join(step.argv[1:])}", flush=True)
    start = time.monotonic()
    try:
        rc = subprocess.run(step.argv, cwd=REPO, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = None
    seconds = time.monotonic() - start
    status = "ok" if rc == 0 else ("timed out" if rc is None else f"failed (exit {rc})")
    print(f"=== {step.name}: {status} in {seconds:.0f} s", flush=True)
    return {"step": step.name, "status": status, "seconds": round(seconds, 1), "timeout_s": timeout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the same steps at tiny sizes (CPU)")
    parser.add_argument(
        "--wheel-pins", action="store_true", help="print NAME==VERSION of the wheels to carry"
    )
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of wheels to install")
    parser.add_argument(
        "--site", type=Path, default=None, help="install target (default: a fresh temp folder)"
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="rows folder (default: benchmarks/results)"
    )
    args = parser.parse_args(argv)
    if args.wheel_pins:
        print(" ".join(wheel_pins()))
        return 0
    deadline = time.monotonic() + BUDGET_S
    site = args.site or Path(tempfile.mkdtemp(prefix="videogpa-site-"))
    results = args.results or (
        Path(tempfile.mkdtemp(prefix="videogpa-rows-")) if args.dry_run else REPO / "benchmarks" / "results"
    )
    env = child_env(site, results, args.dry_run)
    install(args.wheels, site, env)
    check = "import diffusers, deepspeed, videogpa.engine, videogpa.kernels, torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
    summary = [run_step(Step("imports", [sys.executable, "-c", check], 30), env, deadline)]
    for step in steps(args.dry_run):
        summary.append(run_step(step, env, deadline))
    results.mkdir(parents=True, exist_ok=True)
    with (results / "gpu_check.jsonl").open("a") as f:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for row in summary:
            f.write(json.dumps({"time": stamp, "dry_run": args.dry_run, **row}) + "\n")
    print("\nsummary:")
    for row in summary:
        print(f"  {row['step']:<16} {row['status']:<18} {row['seconds']:>6.0f} s")
    print(f"rows under {results}")
    return 0 if all(r["status"] == "ok" for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
