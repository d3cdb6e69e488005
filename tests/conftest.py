"""Test-wide set-up: Triton's interpreter on machines without a GPU, fixture paths, seeding."""

import os

import torch

# Must happen before any @triton.jit function is defined (i.e. before videogpa.kernels is imported):
# without a GPU every Triton kernel then runs on the CPU through the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import atexit  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# One synthetic-pair cache for the session (engine.scenes.pair_cache), inherited by every subprocess: a set
# is made once, not in every trainer test, and nothing is written to the user's ~/.cache.
if "VIDEOGPA_CACHE_DIR" not in os.environ:
    os.environ["VIDEOGPA_CACHE_DIR"] = tempfile.mkdtemp(prefix="videogpa-test-cache-")
    atexit.register(shutil.rmtree, os.environ["VIDEOGPA_CACHE_DIR"], True)


# DeepSpeed's JIT-built CPU ops in this environment's own folder, for every test and subprocess (make setup
# builds them there): torch's default folder is shared by every environment (the GPU rehearsal's mirror,
# .venv-latest), whose builds name their own paths, so alternating environments rebuild each other's ops.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


def _fixtures_dir() -> Path:
    return Path(os.environ.get("VIDEOGPA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures (the authors' reference numbers); CI requires it, elsewhere it may be absent."""
    path = _fixtures_dir()
    if not path.is_dir():
        if os.environ.get("VIDEOGPA_REQUIRE_FIXTURES") == "1":
            pytest.fail(f"reference fixtures not found at {path} (set VIDEOGPA_FIXTURES)")
        pytest.skip(f"reference fixtures not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Each test starts from seed 0, and a test that sets torch's thread count sets it for itself alone."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Small tensor ops are much faster single-threaded on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
