"""GPU timing of one callable: per-call CUDA events, median, with the launch overhead kept out.

A library GEMM call costs ~10-30 us of host time; a decode-size GEMM runs in ~5-20 us on the GPU.
Timed naively, the GPU idles between calls and the events measure the host. So the queue is
filled first behind a spin kernel (``torch.cuda._sleep``) long enough to cover the host enqueue
time of all timed calls; the calls then run back to back and each event pair brackets one GEMM.
Optionally a buffer twice the L2 size is zeroed before every call (outside the event pair), so
each call reads its weight from memory, as it does inside a model whose weights exceed L2.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

_CYCLES_PER_US: dict[int, float] = {}
_FLUSH: dict[int, torch.Tensor] = {}
MAX_SLEEP_US = 2_000_000.0


def cycles_per_us(device: int) -> float:
    """Spin-kernel clock rate of this device (measured once)."""
    if device not in _CYCLES_PER_US:
        with torch.cuda.device(device):
            torch.cuda._sleep(1000)  # load the kernel
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            cycles = 20_000_000
            s.record()
            torch.cuda._sleep(cycles)
            e.record()
            e.synchronize()
            _CYCLES_PER_US[device] = cycles / (s.elapsed_time(e) * 1000.0)
    return _CYCLES_PER_US[device]


def _flush_buffer(device: int) -> torch.Tensor:
    if device not in _FLUSH:
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20
        # a normal tensor even when first made under torch.inference_mode (the benchmarks run there):
        # an inference tensor cached here made every later zero_() outside that mode raise
        with torch.inference_mode(False):
            _FLUSH[device] = torch.empty(2 * l2, dtype=torch.uint8, device=f"cuda:{device}")
    return _FLUSH[device]


def time_calls(fn: Callable[[], object], *, warmup: int = 5, repeat: int = 30, flush_l2: bool = True,
               device: int | None = None) -> list[float]:
    """GPU microseconds of each of ``repeat`` calls of ``fn`` (after ``warmup`` calls)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    dev = torch.cuda.current_device() if device is None else device
    buf = _flush_buffer(dev) if flush_l2 else None
    for _ in range(max(warmup, 1)):
        fn()
    torch.cuda.synchronize(dev)
    # host enqueue cost of one timed iteration, to size the spin kernel
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    t0 = time.perf_counter()
    for _ in range(min(3, repeat)):
        if buf is not None:
            buf.zero_()
        starts[0].record()
        fn()
        ends[0].record()
    host_us = (time.perf_counter() - t0) / min(3, repeat) * 1e6
    torch.cuda.synchronize(dev)
    sleep_us = min(MAX_SLEEP_US, 1.5 * repeat * host_us + 200.0)
    torch.cuda._sleep(int(sleep_us * cycles_per_us(dev)))
    for i in range(repeat):
        if buf is not None:
            buf.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    ends[-1].synchronize()
    return [s.elapsed_time(e) * 1000.0 for s, e in zip(starts, ends, strict=True)]


def median_us(fn: Callable[[], object], **kw) -> float:
    return statistics.median(time_calls(fn, **kw))


def host_us_per_call(fn: Callable[[], object], calls: int = 200, warmup: int = 50,
                     device: int | None = None) -> float:
    """Host microseconds per call of ``fn`` called back to back without synchronizing: the Python +
    library launch cost. The GPU is held behind a spin kernel meanwhile, so the kernels' own time
    never stalls the host (``calls`` stays well under the launch queue's depth)."""
    dev = torch.cuda.current_device() if device is None else device
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(dev)
    torch.cuda._sleep(int((calls * 200.0 + 1000.0) * cycles_per_us(dev)))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t = time.perf_counter() - t0
    torch.cuda.synchronize(dev)
    return t / calls * 1e6
