"""The GEMM backend interface shared by the reference, cuBLASLt and cuSPARSELt backends.

Contract (TN layout, what every backend computes):
    acc[M, N] = x_q[M, K] @ w_q[N, K]^T
with x_q, w_q int8 or float8_e4m3fn, row-major, K the GEMM's K (the slid K for sparse backends).
INT8 accumulates exactly in int32; FP8 accumulates in float32. ``out_dtype`` is the GEMM's output
dtype (int32 for INT8's exact path, bf16/fp32 for FP8, bf16 for cuSPARSELt's INT8 fast path).
A backend places a weight once (``prepare``: copy, compress, build plans) and then runs ``mm``
many times; ``mm`` must not allocate or sync on GPU backends when ``out`` is given, so it can be
captured in CUDA graphs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..quant import parse_qdtype, torch_qdtype


@dataclass
class GemmWeight:
    """A weight placed for one backend: logical [n, k], plus whatever the backend keeps."""

    n: int
    k: int
    qdtype: str
    data: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class GemmBackend(ABC):
    name: str = "?"
    sparse: bool = False  # True: the weight must be 2:4 along K and is run on sparse tensor cores
    # True: mm(..., alpha=[N] float32) scales output channel n by alpha[n] in the GEMM epilogue
    # (float outputs only; cuSPARSELt's alpha vector), so a linear layer can fold its weight scale in
    alpha_vector: bool = False

    @abstractmethod
    def prepare(self, w_q: torch.Tensor) -> GemmWeight:
        """Place a quantized [N, K] weight (validated, compressed where the backend does so)."""

    @abstractmethod
    def mm(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype,
           out: torch.Tensor | None = None) -> torch.Tensor:
        """acc [M, N] = x_q [M, K] @ w^T in ``out_dtype``."""

    def out_dtypes(self, qdtype: str) -> tuple[torch.dtype, ...]:
        """Legal GEMM output dtypes for this backend and input dtype, fastest-legal first."""
        return (torch.int32,) if parse_qdtype(qdtype) == "int8" else (torch.bfloat16, torch.float32)

    def describe(self) -> dict[str, Any]:
        """Library names and versions for result rows."""
        return {"backend": self.name}

    # shared validation -------------------------------------------------------------------
    def _check_weight(self, w_q: torch.Tensor) -> str:
        if w_q.dim() != 2:
            raise ValueError(f"{self.name}: weight must be 2-D [N, K], got {tuple(w_q.shape)}")
        for qd in ("int8", "fp8"):
            if w_q.dtype == torch_qdtype(qd):
                return qd
        raise ValueError(f"{self.name}: weight dtype must be int8 or float8_e4m3fn, got {w_q.dtype}")

    def _check_input(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype) -> None:
        if x_q.dim() != 2 or x_q.shape[1] != w.k:
            raise ValueError(f"{self.name}: activation {tuple(x_q.shape)} does not match weight K={w.k}")
        if x_q.dtype != torch_qdtype(w.qdtype):
            raise ValueError(f"{self.name}: activation dtype {x_q.dtype} differs from weight {w.qdtype}")
        if out_dtype not in self.out_dtypes(w.qdtype):
            legal = ", ".join(str(d).replace("torch.", "") for d in self.out_dtypes(w.qdtype))
            raise ValueError(f"{self.name}: output dtype {out_dtype} not supported for {w.qdtype}; legal: {legal}")
