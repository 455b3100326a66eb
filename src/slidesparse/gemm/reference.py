"""Plain-torch GEMM backend: runs everywhere (CPU CI included) and defines the exact results.

``ReferenceBackend(sparse=True)`` stands in for cuSPARSELt: it checks that the weight is 2:4 along K
(the hardware's rule) at ``prepare`` and then multiplies the same values, so every later command
(linear, engine, pipeline, report) can run on a machine without a GPU.
"""

from __future__ import annotations

import torch

from ..sparsify import is_2to4
from .base import GemmBackend, GemmWeight


class ReferenceBackend(GemmBackend):
    def __init__(self, sparse: bool = False):
        self.sparse = sparse
        self.alpha_vector = sparse  # mirrors the libraries: cuSPARSELt has the alpha vector, cuBLASLt's INT8 not
        self.name = "reference-sparse" if sparse else "reference-dense"

    def prepare(self, w_q: torch.Tensor) -> GemmWeight:
        qd = self._check_weight(w_q)
        if self.sparse and not is_2to4(w_q):
            raise ValueError(f"{self.name}: weight {tuple(w_q.shape)} is not 2:4 along K; slide it first")
        return GemmWeight(n=w_q.shape[0], k=w_q.shape[1], qdtype=qd, data=w_q.contiguous())

    def out_dtypes(self, qdtype: str) -> tuple[torch.dtype, ...]:
        if qdtype == "int8":
            # the sparse library can also emit bf16 directly from INT8; mirror that here
            return (torch.int32, torch.bfloat16) if self.sparse else (torch.int32,)
        return (torch.bfloat16, torch.float32)

    def mm(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype,
           out: torch.Tensor | None = None, *, alpha: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x_q, w, out_dtype)
        if w.qdtype == "int8":
            acc = x_q.to(torch.int32) @ w.data.to(torch.int32).T  # exact int32 accumulation
        else:
            acc = x_q.float() @ w.data.float().T
        if alpha is not None:
            if not self.alpha_vector:
                raise ValueError(f"{self.name}: no alpha vector on a dense backend (as cuBLASLt here: "
                                 "the dequant applies the weight scale)")
            if not out_dtype.is_floating_point:
                raise ValueError(f"{self.name}: alpha (per-channel scale) needs a float output, got {out_dtype}")
            if alpha.dtype != torch.float32 or alpha.dim() != 1 or alpha.numel() != w.n:
                raise ValueError(f"{self.name}: alpha must be a float32 vector of N={w.n} values, got "
                                 f"{alpha.dtype} {tuple(alpha.shape)}")
            acc = acc.float() * alpha  # D = alpha[n] * acc, rounded once to out_dtype (as the epilogue)
        res = acc.to(out_dtype)
        if out is not None:
            out.copy_(res)
            return out
        return res

    def describe(self) -> dict:
        return {"backend": self.name, "library": "torch", "torch": torch.__version__}
