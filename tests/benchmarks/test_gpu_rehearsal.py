"""The rehearsal of the GPU call: it fails whenever the call would fail for a packaging reason.

- The carried wheels, by their metadata, against the image's CPython 3.12 (this machine runs 3.11): tags,
  Requires-Python, one version of each at the version the CPU tests use, every requirement met by another
  carried wheel or by the image. Read from .whl/ when `make gpu-wheels` filled it (and then the recorded
  listing scripts/gpu_wheels.json must be what it holds), else from that listing (CI has no .whl/).
- The dry run of scripts/gpu_check.py started with the python of a mirror of the image (scripts/gpu_image.py):
  a venv holding only the image's packages, with the image's own transformers and huggingface_hub when
  .gpu-image/ holds them. It installs the carried wheels exactly as the call will (told CPython 3.12), then
  imports every module of videogpa and every package the steps use, collects every GPU test file, and runs
  every benchmark at a tiny size, all without what the image lacks.

`make gpu-rehearsal` (before a GPU call) sets VIDEOGPA_GPU_REHEARSAL=strict: then .whl/ and .gpu-image/ must
be there, so the wheels that travel are the ones rehearsed. Without it (CI) the listing stands in for .whl/,
and this environment's transformers and huggingface_hub for the image's (the mirror prints what differs).
"""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.benchmarks.scripts import REPO, load_script

gpu_check = load_script("scripts/gpu_check.py")
gpu_image = gpu_check.gpu_image
STRICT = os.environ.get("VIDEOGPA_GPU_REHEARSAL") == "strict"
WHEELS = REPO / ".whl"
CARRIED = {gpu_image.canonical(n) for n in (*gpu_check.WHEELS, *gpu_check.BUILT_WHEELS)}


def _has_wheels(folder) -> bool:
    return folder.is_dir() and any(folder.glob("*.whl"))


def _carried_entries() -> list[dict]:
    if _has_wheels(WHEELS):
        return gpu_image.folder_entries(WHEELS)
    assert not STRICT, "no wheels in .whl/: run `make gpu-wheels` before a GPU call"
    return gpu_image.read_listing()


def _image_wheels() -> list:
    found = sorted(gpu_check.IMAGE_WHEELS_DIR.glob("*.whl")) if gpu_check.IMAGE_WHEELS_DIR.is_dir() else []
    assert found or not STRICT, "no wheels in .gpu-image/: run `make gpu-wheels` before a GPU call"
    return found


def test_the_carried_wheels_resolve_on_the_image():
    entries = _carried_entries()
    assert {gpu_image.canonical(e["name"]) for e in entries} == CARRIED
    assert gpu_image.check_wheels(entries, gpu_check.carried_pins()) == []
    assert gpu_image.check_project(entries) == []


def test_the_recorded_listing_is_current():
    """The listing holds every carried wheel at the lock's version, and is what .whl/ holds when it is
    there."""
    listing = gpu_image.read_listing()
    pins = {gpu_image.canonical(n): v for n, v in gpu_check.carried_pins().items()}
    assert {gpu_image.canonical(e["name"]): e["version"] for e in listing} == pins, "run `make gpu-wheels`"
    if _has_wheels(WHEELS):
        assert gpu_image.folder_entries(WHEELS) == listing, ".whl/ and scripts/gpu_wheels.json differ"


def _entry(name, version="1.0", tags=("py3-none-any",), requires=(), requires_python=None):
    return {
        "file": f"{name}-{version}-{tags[0]}.whl",
        "name": name,
        "version": version,
        "tags": list(tags),
        "pure": tags[0].startswith("py3"),
        "requires_python": requires_python,
        "requires_dist": list(requires),
    }


@pytest.mark.parametrize(
    "entries,pins,problem",
    [
        ([_entry("a", tags=("cp311-cp311-manylinux_2_17_x86_64",))], None, "no tag of it installs"),
        ([_entry("a", tags=("cp312-cp312-manylinux_2_34_x86_64",))], None, "no tag of it installs"),
        ([_entry("a", requires_python=">=3.13")], None, "excludes 3.12.3"),
        ([_entry("a"), _entry("a", "2.0")], None, "two wheels of a"),
        ([_entry("a")], {"a": "1.1"}, "the CPU tests run 1.1"),
        ([_entry("a", requires=["lazy-importer>=0.1"])], None, "the image has no lazy-importer"),
        ([_entry("a", requires=["zipp>=3.20"])], None, "unrecorded version"),
        ([_entry("a", requires=["transformers>=5.20"])], None, "the image has transformers 5.17.0"),
        ([_entry("a", requires=["b>=2"]), _entry("b", "1.5")], None, "the carried b is 1.5"),
    ],
)
def test_the_checks_catch_what_would_fail_on_the_device(entries, pins, problem):
    assert problem in " ".join(gpu_image.check_wheels(entries, pins))


def test_the_checks_pass_what_the_image_meets():
    ok = [
        _entry("a", tags=("cp312-cp312-manylinux_2_17_x86_64",), requires=["b>=1", "torch>=2.4", "numpy"]),
        _entry("b", "1.5", requires=['pywin32; sys_platform == "win32"', 'x; extra == "dev"', "tqdm>=4.60"]),
    ]
    assert gpu_image.check_wheels(ok, {"a": "1.0", "b": "1.5"}) == []


def _mirror(tmp_path):
    python, notes = gpu_image.build_mirror(tmp_path / "mirror", CARRIED, _image_wheels())
    print("\n".join(notes))
    return python


def _run(python, code: str, cwd) -> subprocess.CompletedProcess:
    """python -c code, from `cwd` (not the checkout's root: its kernels/ folder would be found there)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    return subprocess.run(
        [str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_mirror_holds_the_image_packages_and_nothing_else(tmp_path):
    python = _mirror(tmp_path)
    absent = ["av", "wandb", "ftfy", "videogpa", *(["kernels"] if _image_wheels() else [])]
    code = (
        "import importlib.util, json, torch, triton, numpy, safetensors, transformers, huggingface_hub, "
        "pytest\n"
        f"absent = {absent!r}\n"
        "print(json.dumps({'found': [n for n in absent if importlib.util.find_spec(n)],"
        " 'transformers': transformers.__version__, 'hub': huggingface_hub.__version__}))"
    )
    done = _run(python, code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["found"] == []
    if _image_wheels():
        assert (seen["transformers"], seen["hub"]) == ("5.17.0", "1.33.0")
    # what the image lacks is absent to importlib.metadata too
    gone = _run(python, "import importlib.metadata as m; m.version('av')", tmp_path)
    assert gone.returncode != 0 and "PackageNotFoundError" in gone.stderr


def test_a_mirror_without_the_carried_packages_misses_them(tmp_path):
    """What a wheel left out of .whl/ costs shows in the mirror as on the device (kornia was left out
    once)."""
    python, _ = gpu_image.build_mirror(tmp_path / "bare", set(), [])
    for name in ("diffusers", "deepspeed", "kornia"):
        done = _run(python, f"import {name}", tmp_path)
        assert done.returncode != 0 and f"No module named '{name}'" in done.stderr


def _probe_wheel(folder):
    """A one-module wheel, so the install step is exercised without the carried wheels (CI has none)."""
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
    return folder


@pytest.mark.slow
def test_dry_run_in_a_mirror_of_the_image(tmp_path):
    python = _mirror(tmp_path)
    carried = _has_wheels(WHEELS)
    wheels = WHEELS if carried else _probe_wheel(tmp_path / "whl")
    site, rows = tmp_path / "site", tmp_path / "rows"
    argv = [str(python), "scripts/gpu_check.py", "--dry-run", "--wheels", str(wheels), "--site", str(site)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")  # the mirror's ops never the session's
    proc = subprocess.run(
        [*argv, "--results", str(rows)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1000
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = [json.loads(line) for line in (rows / "gpu_check.jsonl").read_text().splitlines()]
    names = ["install", "fixtures", *[s.name for s in gpu_check.steps(dry_run=True)]]
    assert [r["step"] for r in summary] == names
    assert all(r["status"] == "ok" and r["dry_run"] for r in summary), summary
    versions = next(r["versions"] for r in summary if r["step"] == "imports")
    assert versions["deepspeed_accelerator"] == "cuda" and versions["python"] == ".".join(
        map(str, sys.version_info[:3])
    )
    assert versions["peft"][0] == gpu_check.carried_pins()["peft"]
    if _image_wheels():
        assert versions["transformers"] == ["5.17.0"] and versions["huggingface-hub"] == ["1.33.0"]
    if carried:  # installed from the carried wheels as on the device; the compiled ones dropped here
        assert (site / "diffusers").is_dir() and (site / "deepspeed").is_dir()
        assert not (site / "pydantic_core").exists()
        assert versions["diffusers"][0] == gpu_check.carried_pins()["diffusers"]
    else:
        assert (site / "gpucheckprobe" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (site / "videogpa" / "kernels").resolve() == REPO / "kernels"
    for name in ("dpo_loss", "reproject", "bench_vggt", "bench_step"):
        first = json.loads((rows / f"{name}.jsonl").read_text().splitlines()[0])
        assert first["git_commit"] and first["device"].startswith("cpu")
    log = (rows / "gpu_check.log").read_text()
    assert "=== gpu tests" in log and "summary:" in log
