"""One command on a bare GPU machine: install the carried wheels, run the GPU tests and every benchmark at
full size, and bring every row back, within 6 minutes (docs/gpu.md gives the call and what it carries).

    python3 scripts/gpu_check.py               # on the GPU machine (`make gpu-check`); rows under $OUT
    python3 scripts/gpu_check.py --dry-run     # the same steps on a CPU at tiny sizes (the rehearsal runs it
                                               # with the python of a mirror of the GPU image: docs/gpu.md)
    python3 scripts/gpu_check.py --wheel-pins  # NAME==VERSION of the wheels to carry (`make gpu-wheels`)

The machine is expected to have python3 with torch, triton and CUDA (the image: scripts/gpu_image.py), and
none of this project's other needs that it lacks: those travel as wheels in .whl/ (WHEELS, at the versions
the CPU tests use, for CPython 3.12 manylinux; deepspeed built without its ops), installed with
`pip install --no-index --no-deps --target SITE` and put first on PYTHONPATH; the checkout is made importable
as `videogpa` by links in SITE. The reference fixtures travel in .gpu-fixtures/ (`make gpu-fixtures`); one
that is missing fails the call, and no GPU test may skip there.

Results go to --results, else $OUT when it is set (what the device tool brings back: 8 files at most), else
benchmarks/results/; the whole output is teed to gpu_check.log beside them. Each benchmark appends a row as
soon as it has measured it, and gpu_check.jsonl gets a row per step as each ends. The steps run in order of
value, each in its own process group with a time cap, under one deadline for the whole call: a step that runs
out is killed and keeps the rows it wrote; a failing step does not stop the others; the exit status is 1 if
any step did not end ok.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_image  # noqa: E402

# What the GPU image lacks or holds at an unknown version (pure-Python or manylinux wheels; deepspeed is built
# by `make gpu-wheels`), at the versions installed in .venv (the lock's). Every requirement of theirs is met
# by the image or by another of them (gpu_image.check_wheels, tested from the recorded listing
# gpu_wheels.json).
WHEELS = (
    "diffusers",
    "peft",  # the image has a peft of unrecorded version: carry the one the CPU tests use
    "kornia",
    "kornia-rs",
    "importlib-metadata",  # diffusers needs it; it needs zipp >= 3.20 and lazy-importer
    "lazy-importer",
    "zipp",
    "hjson",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
)
BUILT_WHEELS = ("deepspeed",)
# The image's own versions of the packages whose version matters most to ours (diffusers and peft sit on
# them): downloaded by `make gpu-wheels` into .gpu-image/ for the rehearsal's mirror, never carried.
IMAGE_WHEELS = ("transformers", "huggingface-hub")
IMAGE_WHEELS_DIR = REPO / ".gpu-image"
FIXTURES_DIR = REPO / ".gpu-fixtures"  # `make gpu-fixtures`: a copy of ../shared/fixtures, carried
# The fixture folders the GPU steps' tests read (a missing one is a failure, never a skip).
FIXTURES = ("dpo_loss_a", "reproj_a", "vggt_tiny_a")
BUDGET_S = 345  # the whole command, install included: ≤ 6 minutes of the call's 15 with the machine's start
DRY_BUDGET_S = 900  # on a shared CPU the dry run checks the plumbing, not the time
INSTALL_TIMEOUT_S = 45
MAX_FILES_BACK = 8  # the device tool brings back at most 8 files from $OUT
# Packages whose versions the imports step records (every version on sys.path, first = the one imported).
RECORDED = (
    "torch",
    "triton",
    "transformers",
    "huggingface-hub",
    "tokenizers",
    "numpy",
    "safetensors",
    "accelerate",
    "peft",
    "diffusers",
    "deepspeed",
    "kornia",
    "pydantic",
    "importlib-metadata",
)


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    timeout_s: int  # the cap on the GPU
    dry_timeout_s: int = 300  # the cap in a dry run (a loaded CPU)
    env: dict = field(default_factory=dict)


def wheel_pins() -> list[str]:
    """NAME==VERSION of WHEELS as installed here (the versions the test suite ran with)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]


def image_wheel_pins() -> list[str]:
    return [f"{name}=={gpu_image.IMAGE_VERSIONS[gpu_image.canonical(name)]}" for name in IMAGE_WHEELS]


def carried_pins() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in (*WHEELS, *BUILT_WHEELS)}


ZERO3_TEST = REPO / "tests" / "trainer" / "test_zero3_gpu.py"


def gpu_test_files() -> list[str]:
    """The test files the GPU tests step runs, the paths never run on a GPU first: the GPU-path tests, every
    kernel test file (run in full on CUDA; the AOT compile needs no GPU and is committed as rows), then every
    other file holding GPU-marked tests. The ZeRO-3 smoke run is a step of its own."""
    tests = REPO / "tests"
    first = [tests / "kernels" / "test_gpu_paths.py", tests / "geometry" / "test_scoring_gpu.py"]
    kernels = [p for p in sorted((tests / "kernels").glob("test_*.py")) if p.name != "test_aot_compile.py"]
    gpu_mark = re.compile(r"^(\s*@pytest\.mark\.gpu\b|pytestmark = .*pytest\.mark\.gpu\b)", re.MULTILINE)
    marked = [p for p in sorted(tests.rglob("test_*.py")) if gpu_mark.search(p.read_text())]
    files = []
    for p in [*first, *kernels, *marked]:
        if p not in files and p != ZERO3_TEST:
            files.append(p)
    return [str(p.relative_to(REPO)) for p in files]


def steps(dry_run: bool) -> list[Step]:
    """The call's steps in order of value: the loss kernel's rows, the reprojection's, the kernels' and the
    other GPU tests, the DPO step, VGGT (and DA3), the ZeRO-3 smoke run, the compile baselines. Full size, or
    (dry run) the tiny sizes a CPU runs in seconds."""
    py = sys.executable
    tiny = lambda *args: list(args) if dry_run else []
    full = lambda *args: [] if dry_run else list(args)
    tiny_env = {"DS_ACCELERATOR": "cuda"} if dry_run else {}
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.benchmarks.gpu_pytest", "-rfEs"]
    # On the GPU every selected test must run: a skip fails the step. On a CPU they skip.
    strict = full("--fail-on-skip", "-v")
    plan = [
        # On the CPU too, deepspeed is imported with its CUDA accelerator, as on the GPU.
        Step("imports", [py, "scripts/gpu_check.py", "--import-all"], 40, 300, env=tiny_env),
        Step(
            "dpo_loss triton",
            [py, "benchmarks/bench_dpo_loss.py", "--variants", "eager,triton", *tiny("--size", "small")],
            45,
        ),
        Step(
            "reproject",
            [py, "benchmarks/bench_reproject.py", *tiny("--views", "2", "--height", "16", "--width", "20")],
            30,
        ),
        Step(
            "gpu tests",
            [*pytest, "--gpu-select", "gpu" if dry_run else "kernels-and-gpu", *strict, *gpu_test_files()],
            110,
            400,
        ),
        Step(
            "bench_step",
            [
                py,
                "benchmarks/bench_step.py",
                *tiny("--small", "--warmup", "0", "--iters", "1"),
                *full("--warmup", "1", "--iters", "2", "--device-iters", "0"),
            ],
            60,
        ),
        Step(
            "bench_vggt",
            [
                py,
                "benchmarks/bench_vggt.py",
                *tiny("--small", "--frames", "2", "--batches", "1", "--iters", "1"),
                *full("--iters", "2", "--warmup", "1"),
            ],
            50,
        ),
    ]
    if (REPO / "benchmarks" / "bench_geometry.py").exists():  # DA3 and the other geometry backends
        plan.append(Step("bench_geometry", [py, "benchmarks/bench_geometry.py", *tiny("--small")], 45))
    # Two trainer runs side by side, the CPU one building DeepSpeed's shared-memory op first (~30 s).
    zero3 = [*pytest, "--gpu-select", "gpu", *strict, str(ZERO3_TEST.relative_to(REPO))]
    plan.append(Step("zero3 smoke", zero3, 80))
    plan.append(  # slowest to compile, least wanted: last, and cut by the deadline first
        Step(
            "dpo_loss compile",
            [
                py,
                "benchmarks/bench_dpo_loss.py",
                "--variants",
                "eager" if dry_run else "eager,compile",
                *tiny("--size", "small"),
            ],
            60,
        )
    )
    return plan


def fixtures_folder() -> Path:
    """VIDEOGPA_FIXTURES, else the carried .gpu-fixtures/, else ../shared/fixtures (a developer's
    checkout)."""
    if os.environ.get("VIDEOGPA_FIXTURES"):
        return Path(os.environ["VIDEOGPA_FIXTURES"])
    return FIXTURES_DIR if FIXTURES_DIR.is_dir() else REPO.parent / "shared" / "fixtures"


def fixture_problems(folder: Path) -> list[str]:
    if not folder.is_dir():
        return [f"no fixtures at {folder}: run `make gpu-fixtures` and carry .gpu-fixtures"]
    return [f"fixture {name} missing under {folder}" for name in FIXTURES if not (folder / name).is_dir()]


class Tee:
    """Print to stdout and append to the log file (each line flushed: a killed call keeps its log)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)

    def __call__(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.file.write(text + "\n")


def run_command(argv, env: dict, timeout: float, tee: Tee, cwd: Path = REPO) -> tuple[int | None, list[str]]:
    """Run argv in its own process group, its output teed line by line; on timeout kill the whole group.
    Returns (exit code or None when timed out, output lines)."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    lines: list[str] = []

    def pump():
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            tee(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        rc = None
    try:  # the step's children too (a launcher, pytest's subprocesses): nothing outlives the step
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    reader.join(timeout=10)
    return rc, lines


def run_step(step: Step, env: dict, deadline: float, tee: Tee, dry_run: bool) -> dict:
    cap = step.dry_timeout_s if dry_run else step.timeout_s
    timeout = min(cap, deadline - time.monotonic())
    if timeout < 1:
        tee(f"\n=== {step.name}: not run (the call's deadline has passed)")
        return {"step": step.name, "status": "not run", "seconds": 0.0, "timeout_s": 0}
    tee(f"\n=== {step.name} (cap {timeout:.0f} s): {' '.join(step.argv[1:])}")
    start = time.monotonic()
    rc, lines = run_command(step.argv, {**env, **step.env}, timeout, tee)
    seconds = time.monotonic() - start
    status = "ok" if rc == 0 else ("timed out" if rc is None else f"failed (exit {rc})")
    tee(f"=== {step.name}: {status} in {seconds:.0f} s")
    row = {"step": step.name, "status": status, "seconds": round(seconds, 1), "timeout_s": round(timeout)}
    for line in lines:
        if line.startswith("VERSIONS "):
            row["versions"] = json.loads(line.removeprefix("VERSIONS "))
    return row


def install(wheels: Path, site: Path, env: dict, tee: Tee, timeout: float = INSTALL_TIMEOUT_S) -> int:
    """The carried wheels into `site` (exactly the device's command), and links making this checkout
    importable as videogpa from there. On another Python than the image's (a rehearsal on this CPU), pip is
    told the image's (it checks the tags), then the compiled packages are dropped from `site`: they cannot
    load here, and the mirror holds this environment's build of the same version. Returns the wheel count."""
    found = sorted(wheels.glob("*.whl"))
    site.mkdir(parents=True, exist_ok=True)
    if found:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        pip += ["--no-cache-dir", "--upgrade", "--target", str(site)]
        foreign = sys.version_info[:3] != gpu_image.IMAGE_PYTHON[:3]
        if foreign:
            major, minor = gpu_image.IMAGE_PYTHON[:2]
            pip += ["--python-version", f"{major}.{minor}", "--implementation", "cp", "--only-binary=:all:"]
            pip += [f"--platform={p}" for p in gpu_image.IMAGE_PLATFORMS]
        rc, _ = run_command([*pip, *map(str, found)], env, timeout, tee)
        if rc != 0:
            raise RuntimeError(f"installing the {len(found)} wheels of {wheels} failed (exit {rc})")
        if foreign:
            _drop_compiled(site, found, tee)
    package = site / "videogpa"  # a namespace package: videogpa.engine and videogpa.kernels
    package.mkdir(exist_ok=True)
    for name, folder in (("engine", "engine"), ("kernels", "kernels")):
        link = package / name
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(REPO / folder, target_is_directory=True)
    tee(f"installed {len(found)} wheels from {wheels} into {site}; videogpa -> {REPO}")
    return len(found)


def _drop_compiled(site: Path, wheels: list[Path], tee: Tee) -> None:
    for wheel in wheels:
        entry = gpu_image.wheel_entry(wheel)
        if entry["pure"]:
            continue
        record = next(site.glob(f"{entry['name'].replace('-', '_')}-{entry['version']}.dist-info/RECORD"))
        tops = {Path(line.split(",")[0]).parts[0] for line in record.read_text().splitlines() if line}
        for top in tops:
            path = site / top
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        tee(
            f"(rehearsal) {wheel.name}: installed for CPython 3.12, then dropped "
            "(imported from this environment)"
        )


def source_commit(fixtures: Path) -> str | None:
    """The checkout's commit: from git, else (the device's copy has no .git) the stamp `make gpu-fixtures`
    wrote beside the fixtures it copied."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    stamp = fixtures / "COMMIT"
    return stamp.read_text().strip() + " (stamped by make gpu-fixtures)" if stamp.is_file() else None


def child_env(site: Path, results: Path, fixtures: Path, dry_run: bool) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["VIDEOGPA_BENCH_RESULTS"] = str(results)
    env["VIDEOGPA_FIXTURES"] = str(fixtures)
    env["VIDEOGPA_REQUIRE_FIXTURES"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DS_BUILD_OPS", "0")
    if dry_run:
        env["DS_ACCELERATOR"] = "cpu"
    else:
        env.pop("TRITON_INTERPRET", None)  # compiled kernels on the GPU
    return env


def results_folder(args, dry_run: bool) -> Path:
    if args.results is not None:
        return args.results
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return Path(tempfile.mkdtemp(prefix="videogpa-rows-")) if dry_run else REPO / "benchmarks" / "results"


def import_all() -> int:
    """The imports step (its own process, the call's environment): every package the GPU steps use and every
    module of videogpa.engine and videogpa.kernels, with the versions found printed as one VERSIONS line."""
    import importlib
    import pkgutil
    import traceback

    failed = []
    for name in (
        "torch",
        "triton",
        "transformers",
        "diffusers",
        "peft",
        "deepspeed",
        "kornia",
        "safetensors",
    ):
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
            traceback.print_exc()
    for root in ("videogpa.kernels", "videogpa.engine"):
        try:
            package = importlib.import_module(root)
            names = [m.name for m in pkgutil.walk_packages(package.__path__, root + ".")]
        except Exception:
            failed.append(root)
            traceback.print_exc()
            continue
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
                traceback.print_exc()
    versions = {
        name: [d.version for d in importlib.metadata.distributions(name=name)] or None for name in RECORDED
    }
    versions["python"] = sys.version.split()[0]
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        from deepspeed.accelerator import get_accelerator

        versions["deepspeed_accelerator"] = get_accelerator().device_name()
    except Exception:
        traceback.print_exc()
        failed.append("deepspeed.accelerator")
    print("VERSIONS " + json.dumps(versions), flush=True)
    print(f"imported {len(failed) and 'all but ' + ', '.join(failed) or 'everything'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="the same steps at tiny sizes (CPU)")
    parser.add_argument(
        "--wheel-pins", action="store_true", help="print NAME==VERSION of the wheels to carry"
    )
    parser.add_argument(
        "--image-wheel-pins", action="store_true", help="print NAME==VERSION of the image's own (rehearsal)"
    )
    parser.add_argument(
        "--record-wheels",
        action="store_true",
        help="write scripts/gpu_wheels.json from the wheels in --wheels",
    )
    parser.add_argument("--import-all", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of wheels to install")
    parser.add_argument(
        "--site", type=Path, default=None, help="install target (default: a fresh temp folder)"
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="rows folder (default: $OUT, else benchmarks/results)"
    )
    args = parser.parse_args(argv)
    if args.wheel_pins:
        print(" ".join(wheel_pins()))
        return 0
    if args.image_wheel_pins:
        print(" ".join(image_wheel_pins()))
        return 0
    if args.import_all:
        return import_all()
    if args.record_wheels:
        entries = gpu_image.folder_entries(args.wheels)
        gpu_image.write_listing(entries)
        problems = gpu_image.check_wheels(entries, carried_pins()) + gpu_image.check_project(entries)
        print(f"recorded {len(entries)} wheels in {gpu_image.LISTING}; {len(problems)} problems")
        for p in problems:
            print("problem:", p)
        return 1 if problems else 0

    start = time.monotonic()
    deadline = start + (DRY_BUDGET_S if args.dry_run else BUDGET_S)
    results = results_folder(args, args.dry_run)
    results.mkdir(parents=True, exist_ok=True)
    tee = Tee(results / "gpu_check.log")
    summary_path = results / "gpu_check.jsonl"

    def record(row: dict) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with summary_path.open("a") as f:
            f.write(json.dumps({"time": stamp, "dry_run": args.dry_run, **row}) + "\n")
        summary.append(row)

    summary: list[dict] = []
    tee(
        f"gpu_check {'dry run' if args.dry_run else ''} at {REPO}: python {sys.version.split()[0]}; "
        f"rows -> {results}"
    )
    site = args.site or Path(tempfile.mkdtemp(prefix="videogpa-site-"))
    fixtures = fixtures_folder()
    env = child_env(site, results, fixtures, args.dry_run)
    commit = source_commit(fixtures)
    if commit:
        env["VIDEOGPA_GIT_COMMIT"] = commit
    tee(f"commit {commit}; fixtures {fixtures}")
    t0 = time.monotonic()
    try:
        count = install(args.wheels, site, env, tee, min(INSTALL_TIMEOUT_S, deadline - t0))
        seconds = round(time.monotonic() - t0, 1)
        record({"step": "install", "status": "ok", "seconds": seconds, "wheels": count, "git_commit": commit})
    except Exception as err:  # the steps still run: their failures say what the missing wheels cost
        tee(f"install failed: {err}")
        record({"step": "install", "status": f"failed ({err})", "seconds": round(time.monotonic() - t0, 1)})
    problems = fixture_problems(fixtures)
    for p in problems:
        tee(f"FIXTURES: {p}")
    record(
        {
            "step": "fixtures",
            "status": "ok" if not problems else "failed",
            "seconds": 0.0,
            "folder": str(fixtures),
        }
    )
    for step in steps(args.dry_run):
        record(run_step(step, env, deadline, tee, args.dry_run))
    files = sorted(p.name for p in results.iterdir() if p.is_file())
    tee("\nsummary:")
    for row in summary:
        tee(f"  {row['step']:<18} {row['status']:<22} {row['seconds']:>6.0f} s")
    tee(f"total {time.monotonic() - start:.0f} s; {len(files)} files under {results}: {', '.join(files)}")
    if os.environ.get("OUT") and results == Path(os.environ["OUT"]) and len(files) > MAX_FILES_BACK:
        tee(f"WARNING: {len(files)} files under $OUT, only {MAX_FILES_BACK} come back")
    return 0 if all(r["status"] == "ok" for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
