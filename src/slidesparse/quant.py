"""Reference symmetric quantization (torch). The Triton kernels must reproduce these bit for bit.

Per row r of x (a token for activations, an output channel for weights), in float32:
    absmax = max(max_k |x[r, k]|, ABSMAX_FLOOR)
    inv    = QMAX / absmax            (IEEE round-to-nearest division)
    scale  = absmax / QMAX            (IEEE round-to-nearest division; dequant multiplies by it)
    INT8:  q = clamp(rint(x * inv), -127, 127)       rint = round half to even
    FP8:   q = e4m3fn(clamp(x * inv, -448, 448))      round to nearest even by the cast
Both the multiplier and the stored scale come from the same floored absmax, so dequant stays right
for tiny rows (the reference clamped only the stored scale, which broke rows with absmax < 1/512).
The floor 2**-100 only affects rows that are zero to working precision; an all-zero row gives q = 0
and a finite scale.
"""

from __future__ import annotations

import torch

ABSMAX_FLOOR = 2.0 ** -100  # 448 / floor and 127 / floor stay finite in float32

QDTYPES = {
    "int8": (torch.int8, 127.0),
    "fp8": (torch.float8_e4m3fn, 448.0),
}


def parse_qdtype(name: str) -> str:
    """Normalize a quantized-dtype name: int8 | fp8 (fp8e4m3 / e4m3 accepted)."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    aliases = {"int8": "int8", "i8": "int8", "fp8": "fp8", "fp8e4m3": "fp8", "e4m3": "fp8",
               "float8e4m3fn": "fp8", "fp8e4m3fn": "fp8"}
    if key not in aliases:
        raise ValueError(f"unknown quantized dtype {name!r}; accepted: int8, fp8 (e4m3)")
    return aliases[key]


def qmax(qdtype: str) -> float:
    return QDTYPES[parse_qdtype(qdtype)][1]


def torch_qdtype(qdtype: str) -> torch.dtype:
    return QDTYPES[parse_qdtype(qdtype)][0]


def quantize_rows(x: torch.Tensor, qdtype: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization of a 2-D float tensor -> (q [R, C], scale float32 [R])."""
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"expected a floating-point tensor to quantize, got {x.dtype}")
    qd = parse_qdtype(qdtype)
    tdtype, QMAX = QDTYPES[qd]
    xf = x.float()
    absmax = xf.abs().amax(dim=1, keepdim=True).clamp_min(ABSMAX_FLOOR)
    qmax_t = torch.full_like(absmax, QMAX)
    # tensor/tensor division: IEEE round-to-nearest. (`QMAX / absmax` would run as
    # reciprocal(absmax) * QMAX in torch, and `absmax / QMAX` as a multiply on CUDA: not exact.)
    inv = qmax_t / absmax
    scale = (absmax / qmax_t).squeeze(1)
    y = xf * inv
    if qd == "int8":
        q = torch.round(y).clamp_(-QMAX, QMAX).to(tdtype)
    else:
        q = y.clamp_(-QMAX, QMAX).to(tdtype)
    return q, scale


def quantize_per_token(x: torch.Tensor, qdtype: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Activations [M, K] -> (q [M, K], scale_a [M]); one scale per token."""
    return quantize_rows(x, qdtype)


def quantize_weight(w: torch.Tensor, qdtype: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [N, K] -> (q [N, K], scale_b [N]); one scale per output channel."""
    return quantize_rows(w, qdtype)


def dequant(acc: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
            bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """acc [M, N] (int32 / float) -> (acc * scale_a[m]) * scale_b[n] (+ bias[n]) in float32, cast once."""
    if acc.dim() != 2:
        raise ValueError(f"expected a 2-D accumulator, got shape {tuple(acc.shape)}")
    M, N = acc.shape
    if scale_a.numel() < M or scale_b.numel() != N:
        raise ValueError(f"scale shapes {tuple(scale_a.shape)}, {tuple(scale_b.shape)} do not fit acc {M}x{N}")
    y = acc.float() * scale_a.reshape(-1)[:M, None].float() * scale_b.reshape(1, N).float()
    if bias is not None:
        y = y + bias.reshape(1, N).float()
    return y.to(out_dtype)


def dequant_weight(q: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Quantized [R, C] with per-row scale -> float (for checks and the reference path)."""
    return (q.float() * scale.reshape(-1, 1).float()).to(out_dtype)
