"""SlideSparseLinear: quant(+lift) -> GEMM (any backend) -> dequant(+bias)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .gemm import GemmBackend
from .ops import ReferenceOps, gemm_k
from .pattern import Pattern
from .quant import parse_qdtype, quantize_weight
from .sparsify import prune, slide


@dataclass(frozen=True)
class Epilogue:
    """What a linear layer's GEMM writes: ``out_dtype``, and whether the per-channel weight scale is
    applied by the GEMM itself (``alpha``: the library's alpha vector) instead of by the dequant."""

    out_dtype: torch.dtype
    alpha: bool = False

    @property
    def label(self) -> str:
        """For result rows: 'int32', 'bfloat16', 'bfloat16+alpha'."""
        return str(self.out_dtype).replace("torch.", "") + ("+alpha" if self.alpha else "")


def gemm_epilogue(backend: GemmBackend, qdtype: str) -> Epilogue:
    """The fastest legal GEMM output of a linear layer on ``backend``.

    Sparse INT8 writes bf16 straight from cuSPARSELt with the weight scale as the alpha vector: half
    the bytes of int32 to write and read back, and the dequant applies only the per-token scale (and
    bias). Cost: one more bf16 rounding (of alpha[n] * acc) before the dequant's, the same the FP8
    path always has; measured 2.9e-3 max relative error against the int32 path (docs/PERF.md).
    cuBLASLt's INT8 GEMM can only write int32 (or int8), so dense INT8 keeps int32 + the full
    dequant; everything else: the backend's first output dtype, full dequant after."""
    qd = parse_qdtype(qdtype)
    outs = backend.out_dtypes(qd)
    if qd == "int8" and backend.sparse and torch.bfloat16 in outs:
        return Epilogue(torch.bfloat16, bool(getattr(backend, "alpha_vector", False)))
    return Epilogue(outs[0], False)


class SlideSparseLinear(nn.Module):
    """A W8A8 linear layer whose GEMM runs on ``backend``.

    ``weight_q`` is the GEMM-ready quantized weight: [N, pattern.slid_k(K)] (slid) for a sparse
    pattern, [N, K] (or K padded to 32) for dense. ``weight_scale`` is per output channel [N].
    The GEMM output is ``gemm_epilogue(backend, qdtype)`` unless ``acc_dtype`` forces one (e.g.
    int32 for the exact INT8 path; a forced dtype always leaves the weight scale to the dequant).
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
        if acc_dtype is None:
            self.epilogue = gemm_epilogue(backend, self.qdtype)
        elif acc_dtype in backend.out_dtypes(self.qdtype):
            self.epilogue = Epilogue(acc_dtype, False)
        else:
            raise ValueError(f"backend {backend.name} cannot write {str(acc_dtype).replace('torch.', '')} from "
                             f"{self.qdtype}; legal: "
                             f"{', '.join(str(d).replace('torch.', '') for d in backend.out_dtypes(self.qdtype))}")
        self.gemm_weight = backend.prepare(weight_q)
        self.register_buffer("weight_scale", weight_scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        # the dequant's per-channel factor when the GEMM already applied the weight scale (alpha path)
        self.register_buffer("_ones", torch.ones_like(self.weight_scale) if self.epilogue.alpha else None,
                             persistent=False)

    @property
    def acc_dtype(self) -> torch.dtype:
        return self.epilogue.out_dtype

    @property
    def dequant_scale(self) -> torch.Tensor:
        """What the dequant multiplies channel n by: 1 on the alpha path, else the weight scale (a
        property, not a second buffer, so it can never go stale after .to() or load_state_dict)."""
        return self._ones if self.epilogue.alpha else self.weight_scale

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
        if self.epilogue.alpha:  # the library takes a float32 vector (the module may have been cast)
            alpha = self.weight_scale if self.weight_scale.dtype == torch.float32 else self.weight_scale.float()
            acc = self.backend.mm(q, self.gemm_weight, self.acc_dtype, alpha=alpha)
        else:
            acc = self.backend.mm(q, self.gemm_weight, self.acc_dtype)
        return self.ops.dequant(acc[:M], scale_a[:M], self.dequant_scale, self.bias, self.out_dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, qdtype={self.qdtype}, "
                f"pattern={self.pattern}, backend={self.backend.name}, gemm_out={self.epilogue.label}")
