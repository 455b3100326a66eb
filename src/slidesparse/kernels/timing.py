"""GPU timing helpers shared by the kernel tuner and the quant benchmark.

Memory-bound kernels are timed on inputs rotated across enough sets that a set is evicted from L2
before it comes back (about 3x the L2 size in total), with CUDA events around each run (queued
behind a spin kernel, so the host's launch time stays out) and the median taken. The reference
point is a device-to-device copy moving the same bytes (a copy of B/2 bytes reads B/2 and writes
B/2), timed the same way in the same process.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise RuntimeError("this needs a CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda", torch.cuda.current_device())


def l2_bytes(device=None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)


def rotation_sets(bytes_per_set: int, device=None, max_sets: int = 64, max_total: int = 16 * 2**30) -> int:
    """How many input/output sets to rotate so the working set is >= 3x L2 (at least 2 sets)."""
    want = -(-3 * l2_bytes(device) // max(1, bytes_per_set))
    cap = max(1, max_total // max(1, bytes_per_set))
    return int(max(1, min(max(2, want), max_sets, cap)))


_CYCLES_PER_US: dict[int, float] = {}
MAX_SLEEP_US = 2_000_000.0


def _cycles_per_us() -> float:
    """Clock rate of ``torch.cuda._sleep``'s spin kernel on the current device (measured once)."""
    dev = torch.cuda.current_device()
    if dev not in _CYCLES_PER_US:
        torch.cuda._sleep(1000)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(20_000_000)
        end.record()
        end.synchronize()
        _CYCLES_PER_US[dev] = 20_000_000 / (start.elapsed_time(end) * 1000.0)
    return _CYCLES_PER_US[dev]


def time_gpu_host(fn: Callable[[int], object], n_sets: int, warmup: int = 5, reps: int = 30,
                  warmup_ms: float = 25.0) -> tuple[float, float]:
    """(median GPU time, median host time) of ``fn(i)`` in microseconds; call i uses set i % n_sets.

    Warm-up runs at least ``warmup`` calls and ``warmup_ms`` of GPU time (clocks ramp up after an
    idle gap). The timed calls are queued behind a spin kernel long enough to cover their host
    (Python + launch) time, so they run back to back on the GPU and each CUDA-event pair brackets
    one call's GPU time, not the host's launch overhead; the host time is reported separately.
    """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(0)
    end.record()
    torch.cuda.synchronize()
    one_ms = max(start.elapsed_time(end), 1e-3)
    for i in range(1, max(warmup, min(2000, int(warmup_ms / one_ms) + 1))):
        fn(i % n_sets)
    torch.cuda.synchronize()
    host = []
    for i in range(5):  # host time per call, measured while the GPU is busy behind a spin kernel
        torch.cuda._sleep(int(1000 * _cycles_per_us()))
        t0 = time.perf_counter()
        fn(i % n_sets)
        host.append((time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize()
    host_us = statistics.median(host)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    torch.cuda._sleep(int(min(MAX_SLEEP_US, 1.5 * reps * max(host) + 200.0) * _cycles_per_us()))
    for i, (start, end) in enumerate(events):
        start.record()
        fn(i % n_sets)
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events) * 1000.0, host_us


def time_us(fn: Callable[[int], object], n_sets: int, warmup: int = 5, reps: int = 30,
            warmup_ms: float = 25.0) -> float:
    """Median GPU time of ``fn(i)`` in microseconds (see ``time_gpu_host``)."""
    return time_gpu_host(fn, n_sets, warmup, reps, warmup_ms)[0]


def copy_time_us(nbytes: int, warmup: int = 5, reps: int = 30, device=None) -> float:
    """Median time of a device-to-device copy that reads and writes ``nbytes`` in total."""
    half = max(16, int(nbytes) // 2)
    n = rotation_sets(2 * half, device)
    src = [torch.empty(half, dtype=torch.uint8, device=device or "cuda").random_(0, 255) for _ in range(n)]
    dst = [torch.empty(half, dtype=torch.uint8, device=device or "cuda") for _ in range(n)]
    t = time_us(lambda i: dst[i].copy_(src[i]), n, warmup, reps)
    del src, dst
    return t
