"""A kernel launch as data: what the launchers run, and what the ahead-of-time compile check compiles."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Launch:
    """kernel[grid](*args, **constexprs), built by a launcher from the tensors it is given (constexprs may
    hold launch options such as num_warps)."""

    kernel: object  # a @triton.jit function
    grid: tuple[int, ...]
    args: tuple
    constexprs: dict = field(default_factory=dict)

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.constexprs)


@dataclass(frozen=True)
class Variant:
    """One specialisation a launcher really launches, with the machine-code properties its design relies on.

    expect: "vector_loads" (16-byte global loads), "vector_stores" (16-byte global stores), "no_membar"
    (no memory barrier or L1 invalidation around atomics), "no_int64_div" (no 64-bit integer division),
    "one_instruction_round" (round-half-even as one FRND instruction). max_registers: a ceiling on the
    registers per thread that the variant's occupancy relies on (None: no ceiling).
    """

    name: str
    launch: Launch
    expect: tuple[str, ...] = ()
    max_registers: int | None = None
