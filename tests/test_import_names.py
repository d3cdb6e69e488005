"""Our folders never shadow an installed package of the same name. The repository root is on sys.path under
pytest, `python -m`, `python -c` and notebooks started in the checkout; engine/ and kernels/ are namespace
portions there (no __init__.py), so a regular package `kernels` or `engine` installed anywhere on sys.path
wins (transformers >= 5.25 imports Hugging Face's `kernels`). Our import names are videogpa.*."""

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_from_root(code: str, *paths: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(map(str, paths))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_installed_packages_named_kernels_and_engine_win_over_our_folders(tmp_path):
    for name in ("kernels", "engine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MARK = 'installed'\n")
    done = _run_from_root(
        "import sys, kernels, engine; assert sys.path[0] == '', sys.path; print(kernels.MARK, engine.MARK)",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["installed", "installed"]


def test_our_import_names_are_videogpa_engine_and_kernels():
    for name, folder in (("videogpa.kernels", "kernels"), ("videogpa.engine", "engine")):
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(next(iter(spec.submodule_search_locations))) == REPO / folder
    assert not (REPO / "kernels" / "__init__.py").exists() and not (REPO / "engine" / "__init__.py").exists()


def test_transformers_hub_kernels_and_diffusers_lora_import_from_the_root():
    done = _run_from_root(
        "import transformers.integrations.hub_kernels, diffusers.loaders.peft, videogpa.kernels.dpo_loss"
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_under_pytest_the_root_is_on_sys_path_and_kernels_is_not_ours():
    assert str(REPO) in sys.path or "" in sys.path or "." in sys.path
    spec = importlib.util.find_spec("kernels")
    assert spec is None or spec.origin is None or Path(spec.origin).parent != REPO / "kernels"
