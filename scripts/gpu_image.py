"""What the lent GPU machine's image holds, the checks of the carried wheels against it, and a mirror of it.

The GPU call (`scripts/gpu_check.py` on the device) gets one try, so what can fail for a packaging reason is
rehearsed here, on a CPU with another Python (3.11):

- `check_wheels`: every carried wheel's tags and Requires-Python accept the image's CPython 3.12, one version
  of each, at the version the CPU tests ran with, and every requirement (markers evaluated for the image) is
  met by another carried wheel or by the image at a version that satisfies it. `check_project` does the same
  for this project's own requirements (pyproject.toml). They read the wheels in .whl/ when present, else the
  recorded listing scripts/gpu_wheels.json (what `make gpu-wheels` wrote from them; CI has no .whl/).
- `build_mirror`: a virtual environment of this interpreter whose site-packages holds only the image's
  packages (linked from this environment; the image's own transformers and huggingface_hub where their
  wheels were downloaded to .gpu-image/) and nothing of this project, so that gpu_check's dry run, started
  with its python, installs the carried wheels and imports exactly what the device will, and a module that
  the image lacks fails there as it would on the device.

    python scripts/gpu_image.py check [--wheels .whl | --listing scripts/gpu_wheels.json]
    python scripts/gpu_image.py mirror DIR [--image-wheels .gpu-image]   # prints DIR's python
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LISTING = REPO / "scripts" / "gpu_wheels.json"

# The image ('cuda'), as the device tool's KINDS.md describes it (pip list read on 2026-11-17; versions where
# a session's pip list gave them). Its python3 is /opt/torch/.venv/bin/python3.
IMAGE_PYTHON = (3, 12, 3)
# glibc of the image is not recorded: the wheels are limited to the platforms `make gpu-wheels` asks for.
IMAGE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
IMAGE_VERSIONS = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "pytorch-lightning": "2.6.6",
    "safetensors": "0.8.0",
    "sentencepiece": "0.2.2",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "torchaudio": "2.11.0",
    "torchmetrics": "1.9.0",
    "torchvision": "0.26.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
}
IMAGE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
    cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
    execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
    httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
    jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
    lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
    mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
    networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
    nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
    nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
    optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
    scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
    threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
    torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
    urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
)
# Requirement floors on image packages whose version there is not recorded, and why the image meets them.
ASSUMED = {
    "packaging": "huggingface_hub 1.33 (in the image) needs packaging >= 20.9, above every other floor",
    "pyyaml": "pyyaml 6.0 (2021) is older than every other package of the image",
    "tqdm": "tqdm 4.60 is from 2021; transformers 5.17 itself needs tqdm >= 4.60 (it imports there)",
    "regex": "transformers 5.17 (in the image) needs regex >= 2025.10.22, past every other floor",
    "pillow": "matplotlib in the image needs pillow >= 8; our floor, 10, is from 2023, the image from 2026",
    "matplotlib": "seaborn and scikit-image in the image; matplotlib 3.7 is from 2023",
    "tensorboard": "tensorboard 2.14 is from 2023; the image's pytorch-lightning 2.6.6 is from 2026",
    "imageio": "scikit-image in the image needs imageio >= 2.33",
    "click": "huggingface_hub 1.33 (in the image) needs click >= 8.4.2",
    "filelock": "huggingface_hub 1.33 (in the image) needs filelock >= 3.10",
    "fsspec": "huggingface_hub 1.33 (in the image) needs fsspec >= 2023.5",
    "psutil": "any: no floor asked",
    "typer": "any: no floor asked",
}
# Our own requirements that no GPU step needs: imported where they are used, never at module level.
GPU_OPTIONAL = frozenset({"av"})


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_version(name: str) -> str | None:
    return IMAGE_VERSIONS.get(canonical(name))


def marker_env() -> dict[str, str]:
    """PEP 508 marker values of the image's interpreter."""
    major, minor, micro = IMAGE_PYTHON
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": f"{major}.{minor}.{micro}",
        "implementation_name": "cpython",
        "implementation_version": f"{major}.{minor}.{micro}",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def supported_tags() -> set:
    from packaging import tags

    version, abi = IMAGE_PYTHON[:2], f"cp{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}"
    found = set(tags.cpython_tags(version, abis=[abi], platforms=IMAGE_PLATFORMS))
    return found | set(tags.compatible_tags(version, abi, platforms=IMAGE_PLATFORMS))


def wheel_entry(path: Path) -> dict:
    """A wheel's listing entry: file, name, version, tags, whether pure Python, Requires-Python/-Dist."""
    from packaging.utils import parse_wheel_filename

    name, version, _, wheel_tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        text = z.read(meta).decode()
        wheel = z.read(meta.replace("METADATA", "WHEEL")).decode()
    fields = [line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines() if ":" in line]
    return {
        "file": path.name,
        "name": str(name),
        "version": str(version),
        "tags": sorted(str(t) for t in wheel_tags),
        "pure": "Root-Is-Purelib: true" in wheel,
        "requires_python": next((v.strip() for k, v in fields if k == "Requires-Python"), None),
        "requires_dist": [v.strip() for k, v in fields if k == "Requires-Dist"],
    }


def _meets(requirement, version: str) -> bool:
    return requirement.specifier.contains(version, prereleases=True)


def _problems_of_requirement(who: str, requirement, carried: dict[str, str]) -> list[str]:
    """Why `requirement` of `who` is not met on the image with `carried` (name -> version), if it is not."""
    name = canonical(requirement.name)
    spec = str(requirement.specifier)
    if name in carried:
        if not _meets(requirement, carried[name]):
            return [f"{who} needs {requirement}, but the carried {name} is {carried[name]}"]
        return []
    if name not in IMAGE_PACKAGES:
        return [f"{who} needs {requirement}: the image has no {name} and no wheel carries it"]
    known = image_version(name)
    if known is not None:
        if not _meets(requirement, known):
            return [f"{who} needs {requirement}, but the image has {name} {known}: carry a wheel of it"]
        return []
    if spec and name not in ASSUMED:
        return [
            f"{who} needs {requirement}: the image's {name} is at an unrecorded version; carry it, or "
            "record in gpu_image.ASSUMED why the image's meets it"
        ]
    return []


def check_wheels(entries: list[dict], pins: dict[str, str] | None = None) -> list[str]:
    """Problems of a set of carried wheels against the image: tags, Requires-Python, duplicates, versions
    other than `pins` (name -> the version the CPU tests use), and unmet requirements."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.tags import Tag

    problems = []
    tags = supported_tags()
    python = ".".join(map(str, IMAGE_PYTHON))
    carried: dict[str, str] = {}
    for e in entries:
        name = canonical(e["name"])
        if name in carried:
            problems.append(f"two wheels of {name}: {carried[name]} and {e['version']} (pip stops on that)")
        carried[name] = e["version"]
        if not {Tag(*t.split("-")) for t in e["tags"]} & tags:
            problems.append(f"{e['file']}: no tag of it installs on CPython {python} {IMAGE_PLATFORMS[0]}")
        if e["requires_python"] and not SpecifierSet(e["requires_python"]).contains(python):
            problems.append(f"{e['file']}: Requires-Python {e['requires_python']} excludes {python}")
    for name, version in (pins or {}).items():
        got = carried.get(canonical(name))
        if got is None:
            problems.append(f"no wheel of {name} is carried")
        elif got != version:
            problems.append(
                f"the carried {name} is {got}, the CPU tests run {version}: run `make gpu-wheels`"
            )
    env = marker_env()
    for e in entries:
        for text in e["requires_dist"]:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            problems += _problems_of_requirement(f"{e['name']} {e['version']}", requirement, carried)
    return problems


def project_requirements() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def check_project(entries: list[dict]) -> list[str]:
    """Problems of this project's own requirements on the image with the carried wheels (GPU_OPTIONAL
    aside)."""
    from packaging.requirements import Requirement

    carried = {canonical(e["name"]): e["version"] for e in entries}
    problems, env = [], marker_env()
    for text in project_requirements():
        requirement = Requirement(text)
        if canonical(requirement.name) in GPU_OPTIONAL:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        problems += _problems_of_requirement("videogpa", requirement, carried)
    return problems


def read_listing(path: Path = LISTING) -> list[dict]:
    return json.loads(path.read_text())["wheels"]


def write_listing(entries: list[dict], path: Path = LISTING) -> None:
    text = json.dumps({"image_python": ".".join(map(str, IMAGE_PYTHON)), "wheels": entries}, indent=1)
    path.write_text(text + "\n")


def folder_entries(folder: Path) -> list[dict]:
    return [wheel_entry(p) for p in sorted(folder.glob("*.whl"))]


# ---------------------------------------------------------------------------------------------------------
# The mirror: a venv of this interpreter holding the image's packages only.


def _top_level(dist) -> set[str]:
    """The top-level entries of site-packages that a distribution installed (packages, modules, .pth,
    its .dist-info)."""
    found = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".data"):
            continue
        found.add(parts[0])
    return found


def _requirements_of(dist) -> list:
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in dist.requires or ():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            out.append(requirement)
    return out


def mirror_plan(carried: set[str], overridden: set[str]) -> tuple[dict, list[str]]:
    """(canonical name -> distribution of this environment to link into the mirror, notes). The image's
    packages and the carried ones; where this environment's version of an image package differs from the
    image's (and no wheel of the image's version overrides it), its own requirements come along, each
    noted."""
    installed = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in installed:
            installed[canonical(name)] = dist
    chosen = {
        n: d for n, d in installed.items() if (n in IMAGE_PACKAGES or n in carried) and n not in overridden
    }
    notes = []
    pending = [n for n in chosen if n in IMAGE_PACKAGES and image_version(n) != chosen[n].version]
    while pending:
        name = pending.pop()
        for requirement in _requirements_of(chosen[name]):
            dep = canonical(requirement.name)
            if dep in chosen or dep in overridden or dep not in installed:
                continue
            chosen[dep] = installed[dep]
            notes.append(
                f"{dep} {installed[dep].version} (not in the image): needed by this environment's {name} "
                f"{chosen[name].version}"
                + (f" (the image has {image_version(name)})" if image_version(name) else "")
            )
            pending.append(dep)
    return chosen, notes


def build_mirror(folder: Path, carried: set[str], image_wheels: list[Path] = ()) -> tuple[Path, list[str]]:
    """A venv at `folder` whose site-packages links the image's (and the carried) packages of this
    environment, with `image_wheels` (the image's own versions, pure Python) installed over them. Returns its
    python and notes on where it differs from the image."""
    folder = Path(folder)
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(folder)
    python = folder / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    from packaging.utils import parse_wheel_filename

    overridden = {canonical(str(parse_wheel_filename(p.name)[0])) for p in image_wheels}
    chosen, notes = mirror_plan({canonical(n) for n in carried}, overridden)
    for dist in chosen.values():
        root = Path(str(dist.locate_file("")))
        for entry in _top_level(dist):
            source, target = root / entry, site / entry
            if source.exists() and not target.exists():
                target.symlink_to(source)
    if image_wheels:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*pip, "--target", str(site), *map(str, image_wheels)], check=True, timeout=300)
    for name, version in sorted(IMAGE_VERSIONS.items()):
        if name in chosen and name not in overridden and chosen[name].version != version:
            notes.append(f"{name} {chosen[name].version} here, {version} on the image")
    return python, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check the carried wheels and the project against the image")
    check.add_argument("--wheels", type=Path, help="a folder of wheels (default: .whl/ if it holds any)")
    check.add_argument("--listing", type=Path, default=LISTING)
    mirror = sub.add_parser("mirror", help="build a mirror of the image's packages")
    mirror.add_argument("folder", type=Path)
    mirror.add_argument("--image-wheels", type=Path, default=REPO / ".gpu-image")
    args = parser.parse_args(argv)
    if args.command == "check":
        folder = args.wheels or REPO / ".whl"
        entries = folder_entries(folder) if any(folder.glob("*.whl")) else read_listing(args.listing)
        problems = check_wheels(entries) + check_project(entries)
        for p in problems:
            print("problem:", p)
        print(f"{len(entries)} wheels, {len(problems)} problems")
        return 1 if problems else 0
    wheels = sorted(args.image_wheels.glob("*.whl")) if args.image_wheels.is_dir() else []
    carried = {e["name"] for e in read_listing()}
    python, notes = build_mirror(args.folder, carried, wheels)
    for note in notes:
        print("note:", note, file=sys.stderr)
    print(python)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
