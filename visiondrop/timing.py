"""Section timers for benchmarks: CUDA events on a GPU, perf_counter on the CPU, nothing when detached.

Pruning-aware modules wrap their selection calls in `timed(timer, name)`; with no timer attached that is a
no-op context. A benchmark attaches a `SectionTimer`, runs one forward, and reads the totals after a single
device synchronisation (events are never read inside the timed region).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch


class SectionTimer:
    """Elapsed milliseconds per named section (summed over calls) and points marked along one run."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self._spans: dict[str, list[tuple]] = defaultdict(list)
        self._marks: list[tuple] = []  # (device point, host perf_counter)

    def _point(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the enclosed work under `name` (nested sections are each timed in full)."""
        start = self._point()
        try:
            yield
        finally:
            self._spans[name].append((start, self._point()))

    def mark(self) -> None:
        """Record a point on the device timeline (and the host clock) for `marks_ms`."""
        self._marks.append((self._point(), time.perf_counter()))

    def reset(self) -> None:
        """Forget all sections and marks (call before each measured run)."""
        self._spans.clear()
        self._marks.clear()

    def _elapsed(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sections_ms(self) -> dict[str, float]:
        """Total milliseconds per section name."""
        if self.cuda:
            torch.cuda.synchronize()
        return {name: sum(self._elapsed(a, b) for a, b in spans) for name, spans in self._spans.items()}

    def marks_ms(self) -> tuple[list[float], list[float]]:
        """Device and host milliseconds from the first mark to every later mark."""
        if self.cuda:
            torch.cuda.synchronize()
        if not self._marks:
            return [], []
        (first, first_host), rest = self._marks[0], self._marks[1:]
        return [self._elapsed(first, p) for p, _ in rest], [(h - first_host) * 1e3 for _, h in rest]


def timed(timer: SectionTimer | None, name: str) -> AbstractContextManager:
    """`timer.section(name)`, or a no-op context when no timer is attached."""
    return nullcontext() if timer is None else timer.section(name)


def timed_reduce(reduce: Callable, timer: SectionTimer) -> Callable:
    """A stage reducer that times every call of `reduce` as "select_llm"."""
    def call(*args):
        with timed(timer, "select_llm"):
            return reduce(*args)

    return call
