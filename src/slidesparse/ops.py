"""Activation-side operators around the GEMM: per-token quant (+ lift) and dequant (+ bias).

``ReferenceOps`` is the torch definition; the Triton kernels (``slidesparse.kernels``) provide the
same two calls on the GPU. A linear layer takes either, so CPU and GPU runs share one code path.
"""

from __future__ import annotations

import torch

from .pattern import K_ALIGN, Pattern
from .quant import dequant, quantize_per_token
from .sparsify import lift


def gemm_k(K: int, pattern: Pattern | None) -> int:
    """The K the GEMM sees: the slid K for a sparse pattern, else K rounded up to 32 (zero pad)."""
    return pattern.slid_k(K) if pattern is not None else -(-K // K_ALIGN) * K_ALIGN


class ReferenceOps:
    name = "torch"

    def quant(self, x: torch.Tensor, qdtype: str, pattern: Pattern | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, K] -> (q [M, gemm_k(K)], scale_a [M] float32)."""
        q, scale = quantize_per_token(x, qdtype)
        if pattern is not None:
            return lift(q, pattern), scale
        pad = gemm_k(x.shape[1], None) - x.shape[1]
        if pad:
            q = torch.cat([q.view(torch.uint8), q.new_zeros(q.shape[0], pad).view(torch.uint8)], 1).view(q.dtype)
        return q, scale

    def dequant(self, acc: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
        return dequant(acc, scale_a, scale_b, bias, out_dtype)
