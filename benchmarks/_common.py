"""Shared benchmark plumbing: timing, memory, environment description, result rows.

Two times per variant, each the median of several runs with its 10th-90th percentile spread:
- call: wall time of one call as a trainer sees it (host launch overhead included, synchronised after);
- device: GPU time of the work alone: a CUDA-graph replay timed with events, or, for a callable that cannot
  be captured (the caller says so: host synchronisation such as boolean indexing, an optimizer step), the
  profiler's sum of its kernels' times.
With `flush_l2`, a buffer twice the L2's size is overwritten before every timed run (memory-bound kernels
would otherwise read their inputs from a warm L2). On a CPU only the call time exists.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(os.environ.get("VIDEOGPA_BENCH_RESULTS", REPO_ROOT / "benchmarks" / "results"))

# Dense bf16 tensor-core peaks (vendor datasheets), matched against torch.cuda.get_device_name in order.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)


def peak_bf16_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name`, None when it is not in the table."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


@dataclass(frozen=True)
class Timing:
    """Seconds: median and 10th / 90th percentiles of n runs; `method` says how they were taken."""

    median: float
    p10: float
    p90: float
    n: int
    method: str

    @classmethod
    def of(cls, samples: Sequence[float], method: str) -> Timing:
        ordered = sorted(samples)
        pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), pick(0.1), pick(0.9), len(ordered), method)

    def fields(self, prefix: str) -> dict:
        """Row fields in microseconds: prefix_us, prefix_us_p10, prefix_us_p90, prefix_method."""
        return {
            f"{prefix}_us": self.median * 1e6,
            f"{prefix}_us_p10": self.p10 * 1e6,
            f"{prefix}_us_p90": self.p90 * 1e6,
            f"{prefix}_method": self.method,
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=4)
def _flush_buffer(device: torch.device) -> torch.Tensor:
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 * 2**20)
    return torch.empty(2 * l2, dtype=torch.uint8, device=device)


def flush_l2(device: torch.device) -> None:
    if device.type == "cuda":
        _flush_buffer(device).fill_(0x5A)


def time_call(
    fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10, flush: bool = False
) -> Timing:
    """Wall time of one synchronised call of fn() (launch overhead included)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if flush:
            flush_l2(device)
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - t0)
    return Timing.of(samples, "wall clock, synchronised")


def time_device(
    fn: Callable[[], object],
    device: torch.device,
    iters: int = 20,
    flush: bool = False,
    capturable: bool = True,
) -> Timing | None:
    """GPU time of fn()'s work (see the module doc); None on a CPU. fn must have been warmed up."""
    if device.type != "cuda":
        return None
    if capturable:
        return _graph_time(fn, device, iters, flush)
    return _profiler_time(fn, device, iters, flush)


def _graph_time(fn, device, iters: int, flush: bool) -> Timing:
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    samples = []
    for _ in range(iters):
        if flush:
            flush_l2(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return Timing.of(samples, "cuda graph replay")


def _kernel_times(run: Callable[[], object]) -> list[tuple[str, float]]:
    """(name, seconds) of every GPU kernel run() launches, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return [
        (e.name, e.device_time / 1e6)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
    ]


def _profiler_time(fn, device, iters: int, flush: bool) -> Timing:
    flush_names = {name for name, _ in _kernel_times(lambda: flush_l2(device))} if flush else set()
    samples = []
    for _ in range(iters):
        if flush:
            flush_l2(device)
        kernels = _kernel_times(fn)
        samples.append(sum(t for name, t in kernels if name not in flush_names))
    return Timing.of(samples, "profiler kernel sum")


def extra_memory_bytes(
    fn: Callable[[], object], device: torch.device, reset: Callable[[], None] | None = None
) -> int | None:
    """Peak memory fn() allocates beyond what was live before it, outputs kept (e.g. a gradient) included.
    `reset` runs first, to free what an earlier call left (set a .grad to None). GPU only; None on a CPU."""
    if device.type != "cuda":
        return None
    if reset is not None:
        reset()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    synchronize(device)
    del out
    return torch.cuda.max_memory_allocated(device) - base


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    iters: int,
    warmup: int = 2,
    flush: bool = False,
    reset: Callable[[], None] | None = None,
    capturable: bool = True,
) -> tuple[dict, float]:
    """Row fields (call and device times, extra memory) of fn, and the seconds a floor ratio uses (the
    device time on a GPU, the call time on a CPU)."""
    call = time_call(fn, device, warmup, iters, flush)
    dev = time_device(fn, device, iters, flush, capturable)
    extra = extra_memory_bytes(fn, device, reset)
    fields = {**call.fields("call"), **(dev.fields("device") if dev else {})}
    fields["extra_MB"] = None if extra is None else extra / 1e6
    return fields, (dev or call).median


def _git_commit() -> str | None:
    """HEAD (with -dirty), or VIDEOGPA_GIT_COMMIT where the checkout is a copy without .git (the GPU
    call's)."""
    if os.environ.get("VIDEOGPA_GIT_COMMIT"):
        return os.environ["VIDEOGPA_GIT_COMMIT"]
    try:
        run = lambda *a: subprocess.run(
            ["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _nvidia_smi(device: torch.device) -> dict:
    """Driver version and clocks (current and maximum SM / memory MHz) when nvidia-smi can read them."""
    fields = ["driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem"]
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                f"--id={index}",
                f"--query-gpu={','.join(fields)}",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"driver": None}
    values = [v.strip() for v in out.split(",")]
    if len(values) != len(fields):
        return {"driver": None}
    keys = ["driver", "sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz", "max_mem_clock_mhz"]
    return dict(zip(keys, values))


def environment(device: torch.device) -> dict:
    """What a reader needs to reproduce a number: device, memory, driver, clocks, versions, commit."""
    env = {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gb"] = props.total_memory / 1e9
        env["sm_count"] = props.multi_processor_count
        env.update(_nvidia_smi(device))
    return env


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def copy_bandwidth(device: torch.device) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted), from the device time."""
    x = torch.empty(1024 * 2**20 if device.type == "cuda" else 16 * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    copy = lambda: y.copy_(x)
    timing = time_device(copy, device) if device.type == "cuda" else time_call(copy, device, 2, 5)
    return 2 * x.numel() / timing.median


def append_results(name: str, rows: Sequence[dict], device: torch.device) -> Path:
    """Append rows (plus environment and timestamp) to the results folder's <name>.jsonl."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.jsonl"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    env = environment(device)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({"time": stamp, **env, **row}) + "\n")
    return path


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
