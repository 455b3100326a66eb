"""SlideSparseLinear: quant(+lift) -> GEMM (any backend) -> dequant(+bias)."""

from __future__ import annotations

import torch
from torch import nn

from .gemm import GemmBackend
from .ops import ReferenceOps, gemm_k
from .pattern import Pattern
from .quant import parse_qdtype, quantize_weight
from .sparsify import prune, slide


class SlideSparseLinear(nn.Module):
    """A W8A8 linear layer whose GEMM runs on ``backend``.

    ``weight_q`` is the GEMM-ready quantized weight: [N, pattern.slid_k(K)] (slid) for a sparse
    pattern, [N, K] (or K padded to 32) for dense. ``weight_scale`` is per output channel [N].
    """

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, in_features: int, *,
                 qdtype: str, backend: GemmBackend, pattern: Pattern | str | None = None,
                 bias: torch.Tensor | None = None, ops=None, out_dtype: torch.dtype = torch.bfloat16,
                 acc_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(weight_q.shape[0])
        self.qdtype = parse_qdtype(qdtype)
        self.pattern = Pattern.parse(pattern) if pattern is not None else None
        if self.pattern is not None and not backend.sparse:
            raise ValueError(f"pattern {self.pattern} needs a sparse backend, got {backend.name}")
        if self.pattern is None and backend.sparse:
            raise ValueError(f"backend {backend.name} is sparse but no pattern was given")
        k = gemm_k(self.in_features, self.pattern)
        if weight_q.shape[1] not in (k, self.in_features):
            raise ValueError(f"weight has {weight_q.shape[1]} columns; in_features={self.in_features} "
                             f"with pattern {self.pattern} needs {k}")
        if weight_q.shape[1] != k:  # dense weight with K not a multiple of 32: zero-pad once
            pad = weight_q.new_zeros(self.out_features, k - weight_q.shape[1])
            weight_q = torch.cat([weight_q.view(torch.uint8), pad.view(torch.uint8)], 1).view(weight_q.dtype)
        self.backend = backend
        self.ops = ops or ReferenceOps()
        self.out_dtype = out_dtype
        self.acc_dtype = acc_dtype or backend.out_dtypes(self.qdtype)[0]
        self.gemm_weight = backend.prepare(weight_q)
        self.register_buffer("weight_scale", weight_scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, qdtype: str, backend: GemmBackend,
                    pattern: Pattern | str | None = None, prune_mode: str = "magnitude", seed: int = 0,
                    **kw) -> "SlideSparseLinear":
        """Quantize per channel, prune to ``pattern``, slide, and place on ``backend``."""
        w = linear.weight.detach()
        q, s = quantize_weight(w, qdtype)
        p = Pattern.parse(pattern) if pattern is not None else None
        if p is not None:
            q = slide(prune(q, p, mode=prune_mode, seed=seed), p)
        return cls(q, s, linear.in_features, qdtype=qdtype, backend=backend, pattern=p,
                   bias=linear.bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        q, scale_a = self.ops.quant(x2, self.qdtype, self.pattern)
        return self.forward_quantized(q, scale_a, x2.shape[0]).reshape(*lead, self.out_features)

    def forward_quantized(self, q: torch.Tensor, scale_a: torch.Tensor, M: int) -> torch.Tensor:
        """GEMM + dequant on an activation already quantized (and lifted) by a fused producer:
        q [M_pad >= M, gemm K], scale_a [M_pad] -> [M, N]."""
        acc = self.backend.mm(q, self.gemm_weight, self.acc_dtype)
        return self.ops.dequant(acc[:M], scale_a[:M], self.weight_scale, self.bias, self.out_dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, qdtype={self.qdtype}, "
                f"pattern={self.pattern}, backend={self.backend.name}")
