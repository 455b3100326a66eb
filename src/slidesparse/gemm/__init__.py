"""GEMM backends: ``reference`` (torch, any device), ``cublaslt`` (dense), ``cusparselt`` (2:4)."""

from __future__ import annotations

from .base import GemmBackend, GemmWeight
from .reference import ReferenceBackend

BACKENDS = ("cublaslt", "cusparselt", "reference")


def make_backend(name: str, *, sparse: bool | None = None) -> GemmBackend:
    """Build a backend by name. ``reference`` takes ``sparse`` (default False); the GPU backends
    are imported lazily so that CPU-only machines never load CUDA libraries."""
    if name == "reference":
        return ReferenceBackend(sparse=bool(sparse))
    if name == "cublaslt":
        from .cublaslt import CublasLtBackend  # noqa: PLC0415 - GPU-only import
        return CublasLtBackend()
    if name == "cusparselt":
        from .cusparselt import CusparseLtBackend  # noqa: PLC0415 - GPU-only import
        return CusparseLtBackend()
    raise ValueError(f"unknown GEMM backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "GemmBackend", "GemmWeight", "ReferenceBackend", "make_backend"]
