"""Pieces shared by the cuBLASLt and cuSPARSELt backends: per-thread contexts, the workspace, checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

MIB = 1 << 20
ALIGN_BYTES = 16  # both libraries are told 16-byte aligned operands


class Workspace:
    """A grow-only device buffer. Growing never frees the old buffer: a CUDA graph captured earlier
    may still point at it, so it is kept (``retired``) for the backend's lifetime."""

    def __init__(self, device: torch.device, nbytes: int):
        self.device = device
        self.retired: list[torch.Tensor] = []
        self.buf = torch.empty(max(int(nbytes), 256), dtype=torch.uint8, device=device)
        self.ptr = self.buf.data_ptr()
        self.size = self.buf.numel()

    def ensure(self, nbytes: int, what: str) -> None:
        if nbytes <= self.size:
            return
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{what} needs {nbytes} bytes of workspace, the backend holds {self.size}; it cannot grow "
                "during CUDA-graph capture: call the backend's warmup() for these shapes before capturing")
        self.retired.append(self.buf)
        self.buf = torch.empty(int(nbytes), dtype=torch.uint8, device=self.device)
        self.ptr = self.buf.data_ptr()
        self.size = self.buf.numel()


class ThreadContexts:
    """One library context (handle, plans, workspace) per (thread, device): handles are not shared
    between threads (cuSPARSELt's are not thread-safe), plans belong to the handle that built them."""

    def __init__(self, factory: Callable[[int], Any]):
        self._factory = factory
        self._tls = threading.local()
        self._lock = threading.Lock()
        self._all: list[Any] = []

    def get(self, device_index: int) -> Any:
        d = self._tls.__dict__.get("ctx")
        if d is None:
            d = self._tls.ctx = {}
        ctx = d.get(device_index)
        if ctx is None:
            with torch.cuda.device(device_index):
                ctx = self._factory(device_index)
            d[device_index] = ctx
            with self._lock:
                self._all.append(ctx)
        return ctx

    def all(self) -> list[Any]:
        with self._lock:
            return list(self._all)

    def clear(self) -> None:
        with self._lock:
            ctxs, self._all = self._all, []
        self._tls = threading.local()
        for c in ctxs:
            c.close()


def raw_stream_getter() -> Callable[[int], int]:
    """device index -> the current stream's cudaStream_t as an int. torch's private raw getter costs
    ~0.2 us; ``torch.cuda.current_stream(dev).cuda_stream`` (the fallback) builds a Stream object."""
    f = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if f is not None:
        return f
    return lambda dev: torch.cuda.current_stream(dev).cuda_stream


def fast_path_ok(x: torch.Tensor, w, out_dtype: torch.dtype) -> bool:
    """All of the activation checks in one expression, against what ``prepare`` recorded in w.extra
    (x dtype, legal output dtypes, device). False sends the caller to the slow checks that raise."""
    ex = w.extra
    return (x.dtype is ex.get("x_dtype") and out_dtype in ex.get("outs", ()) and x.dim() == 2
            and x.shape[1] == w.k and x.is_cuda and x.get_device() == ex.get("device")
            and x.is_contiguous() and not x.data_ptr() % ALIGN_BYTES)


def out_ok(out: torch.Tensor, m: int, n: int, dtype: torch.dtype, device: int) -> bool:
    return (out.dtype is dtype and out.shape == (m, n) and out.is_cuda and out.get_device() == device
            and out.is_contiguous() and not out.data_ptr() % ALIGN_BYTES)


def weight_extra(w_data: torch.Tensor, x_dtype: torch.dtype, outs) -> dict:
    return {"x_dtype": x_dtype, "outs": frozenset(outs), "device": w_data.get_device()}


def host_scalar(value, dtype) -> np.ndarray:
    """A 1-element host array; pass ``.ctypes.data`` where a library wants a host scalar pointer."""
    return np.array([value], dtype=dtype)


def check_operand(t: torch.Tensor, name: str, backend: str) -> None:
    if not t.is_cuda:
        raise ValueError(f"{backend}: {name} must be on a CUDA device, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{backend}: {name} must be contiguous (row-major), got strides {tuple(t.stride())}")
    if t.data_ptr() % ALIGN_BYTES:
        raise ValueError(f"{backend}: {name} must start at a {ALIGN_BYTES}-byte aligned address")


def check_out(out: torch.Tensor, m: int, n: int, dtype: torch.dtype, device: torch.device, backend: str) -> None:
    if out.shape != (m, n) or out.dtype != dtype:
        raise ValueError(f"{backend}: out must be [{m}, {n}] {dtype}, got {list(out.shape)} {out.dtype}")
    if out.device != device:
        raise ValueError(f"{backend}: out is on {out.device}, the operands on {device}")
    check_operand(out, "out", backend)
