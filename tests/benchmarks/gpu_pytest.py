"""pytest plugin of scripts/gpu_check.py's test steps: `python -m pytest -p tests.benchmarks.gpu_pytest ...`.

--gpu-select gpu              keep the GPU-marked tests only (the old `-m gpu`)
--gpu-select kernels-and-gpu  keep every test of tests/kernels/ (the kernel suite in full on CUDA; the AOT
                              compile aside: it needs no GPU and its rows are committed) and the GPU-marked
                              ones
--fail-on-skip                a skipped test fails the run (on the GPU nothing may skip: a missing fixture or
                              package there is a failure to see, not a pass)
"""

from __future__ import annotations

from pathlib import Path

import pytest

SELECTIONS = ("gpu", "kernels-and-gpu")
NOT_ON_GPU = ("test_aot_compile.py",)


def pytest_addoption(parser):
    group = parser.getgroup("gpu-check")
    group.addoption("--gpu-select", choices=SELECTIONS, default=None, help="which tests to keep")
    group.addoption("--fail-on-skip", action="store_true", help="a skipped test fails the run")


def _kept(item, selection: str) -> bool:
    if item.get_closest_marker("gpu") is not None:
        return True
    path = Path(str(item.fspath))
    return selection == "kernels-and-gpu" and path.parent.name == "kernels" and path.name not in NOT_ON_GPU


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    selection = config.getoption("--gpu-select")
    if selection is None:
        return
    kept = [item for item in items if _kept(item, selection)]
    dropped = [item for item in items if not _kept(item, selection)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class _Skips:
    def __init__(self) -> None:
        self.nodeids: list[str] = []

    def pytest_runtest_logreport(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            self.nodeids.append(report.nodeid)

    def pytest_sessionfinish(self, session):
        if self.nodeids:
            print(f"\n--fail-on-skip: {len(self.nodeids)} tests skipped: " + ", ".join(self.nodeids))
            if session.exitstatus == 0:
                session.exitstatus = 1


def pytest_configure(config):
    if config.getoption("--fail-on-skip"):
        config.pluginmanager.register(_Skips(), "gpu-check-skips")
