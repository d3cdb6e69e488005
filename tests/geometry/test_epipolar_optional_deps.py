"""The epipolar code imports without its optional packages: with kornia and transformers refused by an import
hook (a fresh interpreter), the geometry modules and the score stage's metric module import, and the metric
fails only when used, with an error naming the missing package (a missing kornia costs one feature, not a
test collection)."""

import subprocess
import sys

REFUSE = """
import sys


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"kornia", "transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)
        return None


sys.meta_path.insert(0, Refuse())
"""

CHECK = """
try:
    import kornia  # noqa: F401
    raise SystemExit("the import hook did not refuse kornia")
except ModuleNotFoundError:
    pass

import torch

import videogpa.engine.geometry.lightglue
import videogpa.engine.geometry.matching
import videogpa.engine.stages.score_metrics
from videogpa.engine.core.config import ScoreConfig
from videogpa.engine.geometry.epipolar import EpipolarScorer, score_matches
from videogpa.engine.geometry.matching import GeometryMatcher, PairMatches

loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"kornia", "transformers"})
assert not loaded, loaded
points = torch.rand(1, 30, 2)
matches = PairMatches(torch.tensor([[0, 1]]), points, points + 1, torch.ones(1, 30, dtype=bool))
try:
    score_matches(matches, 64, 64)
    raise SystemExit("scored without kornia")
except ModuleNotFoundError as err:
    print("score:", err)
ScoreConfig().check("loop.score")  # reprojection alone: kornia is not needed
try:
    ScoreConfig(metrics=["epipolar"]).check("loop.score")
    raise SystemExit("the config asked for the epipolar metric without kornia and passed")
except ValueError as err:
    print("config:", err)
assert EpipolarScorer(GeometryMatcher()).needs_geometry
print("imported without kornia")
"""


def test_epipolar_modules_import_without_kornia_and_name_it_when_used():
    done = subprocess.run([sys.executable, "-c", REFUSE + CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "imported without kornia"
    assert any(line.startswith("score:") and "pip install kornia" in line for line in lines), lines
    config = (
        "config: config key 'loop.score.metrics': 'epipolar' needs the kornia package (pip install kornia)"
    )
    assert any(line.startswith(config) for line in lines), lines
