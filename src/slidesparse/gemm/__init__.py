"""GEMM backends: ``reference`` (torch, any device), ``cublaslt`` (dense), ``cusparselt`` (2:4)."""

from __future__ import annotations

import os

from .base import GemmBackend, GemmWeight
from .reference import ReferenceBackend

BACKENDS = ("cublaslt", "cusparselt", "reference")


def make_backend(name: str, *, sparse: bool | None = None, search: "str | os.PathLike | None" = None) -> GemmBackend:
    """Build a backend by name. ``reference`` takes ``sparse`` (default False); the GPU backends
    are imported lazily so that CPU-only machines never load CUDA libraries. ``search``: the tuning
    root (``<search>/<hwtag>/<library>_<DTYPE>.json``) the GPU backends take their tuned algorithms
    from (None: the library heuristics only); the reference backend has nothing to tune."""
    if name == "reference":
        return ReferenceBackend(sparse=bool(sparse))
    if name not in BACKENDS:
        raise ValueError(f"unknown GEMM backend {name!r}; choose one of {', '.join(BACKENDS)}")
    tuning = None
    if search is not None:
        from .tuning_db import TuningStore  # noqa: PLC0415

        tuning = TuningStore(search)
    if name == "cublaslt":
        from .cublaslt import CublasLtBackend  # noqa: PLC0415 - GPU-only import
        return CublasLtBackend(tuning=tuning)
    from .cusparselt import CusparseLtBackend  # noqa: PLC0415 - GPU-only import
    return CusparseLtBackend(tuning=tuning)


__all__ = ["BACKENDS", "GemmBackend", "GemmWeight", "ReferenceBackend", "make_backend"]
