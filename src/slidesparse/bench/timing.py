"""Timing one operation: warm-up, then many timed runs, reported as median and p10/p90.

On CUDA each run sits between two CUDA events (optionally as a CUDA-graph replay, which removes the
Python launch overhead the way a serving engine does); on the CPU ``time.perf_counter`` brackets each
run. Inputs rotate over a list of prepared argument tuples, so consecutive runs read different
(fresh, random) data instead of the same cache-hot buffers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_us: float
    p10_us: float
    p90_us: float
    runs: int
    method: str  # "cuda-events" | "cuda-graph" | "perf-counter"

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return (self.p90_us - self.p10_us) / self.median_us if self.median_us > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_us: Sequence[float], method: str) -> Timing:
    """Median and the 10th/90th percentiles (linear interpolation) of per-run times."""
    if not samples_us:
        raise ValueError("no timing samples")
    s = sorted(float(v) for v in samples_us)
    return Timing(median_us=statistics.median(s), p10_us=_percentile(s, 10), p90_us=_percentile(s, 90),
                  runs=len(s), method=method)


def _percentile(sorted_vals: list[float], q: float) -> float:
    pos = (len(sorted_vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def time_fn(fn: Callable[..., object], inputs: Sequence[tuple], *, warmup: int, repeat: int,
            device: torch.device | str, cuda_graph: bool = False) -> Timing:
    """Time ``fn(*inputs[i % len(inputs)])`` for i in 0..repeat-1 after ``warmup`` untimed calls.

    ``device`` says which clock to use (CUDA events or perf_counter). ``cuda_graph`` captures one
    graph per input tuple and times its replay; capture errors are raised, never papered over.
    """
    if warmup < 0 or repeat < 1:
        raise ValueError(f"need warmup >= 0 and repeat >= 1, got warmup={warmup}, repeat={repeat}")
    if not inputs:
        raise ValueError("time_fn needs at least one input tuple")
    dev = torch.device(device)
    n = len(inputs)
    if dev.type != "cuda":
        if cuda_graph:
            raise ValueError("cuda_graph timing needs a CUDA device")
        for i in range(warmup):
            fn(*inputs[i % n])
        samples = []
        for i in range(repeat):
            args = inputs[i % n]
            t0 = time.perf_counter()
            fn(*args)
            samples.append((time.perf_counter() - t0) * 1e6)
        return summarize(samples, "perf-counter")

    with torch.cuda.device(dev):
        calls: list[Callable[[], object]]
        if cuda_graph:
            calls = _capture_graphs(fn, inputs, warmup)
        else:
            calls = [(lambda a=a: fn(*a)) for a in inputs]
        for i in range(warmup):
            calls[i % n]()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        for i in range(repeat):
            starts[i].record()
            calls[i % n]()
            ends[i].record()
        torch.cuda.synchronize()
        samples = [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]
    return summarize(samples, "cuda-graph" if cuda_graph else "cuda-events")


def _capture_graphs(fn: Callable[..., object], inputs: Sequence[tuple], warmup: int) -> list[Callable[[], object]]:
    # warm up on a side stream before capture (lazy init, allocator, library handles), as torch advises
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(max(warmup, 1)):
            fn(*inputs[i % len(inputs)])
    torch.cuda.current_stream().wait_stream(side)
    graphs = []
    pool = None
    for args in inputs:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            fn(*args)
        pool = g.pool()  # one memory pool for all graphs of this op
        graphs.append(g.replay)
    return graphs
