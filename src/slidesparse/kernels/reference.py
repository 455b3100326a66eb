"""Torch definitions of the fused producers (RMSNorm -> quant, SiLU*up -> quant) that the Triton
kernels reproduce bit for bit. Pure torch, runs on any device.

The float32 value fed to the quantizer (``h``) is defined operation by operation, so a kernel can
match it exactly (every step is one IEEE float32 operation with round-to-nearest-even, no fused
multiply-add):

RMSNorm (row x of K <= 2**19 values, weight w, eps > 0):
    a     = max_k |x_k|;  Eb = max(biased float32 exponent of a, 1);  t = clamp(148 - Eb, -126, 126)
    v_k   = trunc((x_k * 2**t) * (x_k * 2**t))      (|x_k * 2**t| < 2**22, so v_k < 2**44: an int64)
    S     = (float32(sum_k v_k) * 2**-t) * 2**-t   (exact int64 sum, one rounding to float32)
    ms    = S / K
    rstd  = 1 / sqrt(ms + eps)                      (IEEE sqrt, IEEE division)
    h_k   = (x_k * rstd) * w_k
SiLU-and-mul (row = [gate (I values) | up (I values)]):
    h_k   = (g_k / (1 + exp(-g_k))) * u_k
  ``exp`` is the platform's float32 exp (CUDA's expf on the GPU, which the kernel calls through
  libdevice); it is the only operation that is not correctly rounded, so the reference takes it as
  an argument (the CPU interpreter's kernel uses numpy's exp).
Then ``h`` is quantized exactly as ``slidesparse.quant.quantize_per_token`` (and lifted by
``slidesparse.sparsify.lift`` for a sparse pattern).

Why the fixed-point sum of squares: a float32 sum depends on its order, and neither torch nor
Triton promises one. Integer addition is associative, so the int64 sum of the squares, scaled to
the row's largest exponent (44 bits of headroom below it; parts below 2**-44 of the largest square
are truncated), gives the same bits in any order, on any device.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..ops import ReferenceOps

RMS_MAX_K = 2 ** 19  # K * 2**44 must stay below 2**63


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2.0**e as float32 for int32 e in [-126, 127] (built from the exponent bits, exact)."""
    return ((e + 127) << 23).to(torch.int32).view(torch.float32)


def sum_squares(xf: torch.Tensor) -> torch.Tensor:
    """Row-wise sum of squares of a float32 [M, K] tensor, as defined above (order-free) -> [M]."""
    if xf.shape[1] > RMS_MAX_K:
        raise ValueError(f"RMSNorm supports K <= {RMS_MAX_K}, got {xf.shape[1]}")
    a = xf.abs().amax(dim=1)
    eb = (a.view(torch.int32) >> 23).clamp_min(1)
    t = (148 - eb).clamp(-126, 126)
    xs = xf * _pow2(t)[:, None]
    total = (xs * xs).to(torch.int64).sum(dim=1).to(torch.float32)
    back = _pow2(-t)
    return (total * back) * back


def rmsnorm_f32(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in float32 as defined in the module docstring -> float32 [M, K]."""
    _check_2d(x, "x")
    if weight.dim() != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"RMSNorm weight must be [{x.shape[1]}], got shape {tuple(weight.shape)}")
    xf = x.float()
    ss = sum_squares(xf)
    ms = ss / torch.full_like(ss, float(x.shape[1]))  # tensor / tensor: IEEE division on every device
    # sqrt in float64, rounded once to float32: correctly rounded (double rounding is innocuous for
    # sqrt since 53 >= 2*24 + 2); torch's float32 sqrt on the CPU is not always correctly rounded.
    s = torch.sqrt((ms + torch.tensor(eps, dtype=torch.float32, device=x.device)).double()).float()
    rstd = torch.div(torch.ones_like(s), s)
    return (xf * rstd[:, None]) * weight.float()[None, :]


def silu_mul_f32(gate_up: torch.Tensor, exp: Callable[[torch.Tensor], torch.Tensor] = torch.exp) -> torch.Tensor:
    """silu(gate) * up in float32 for gate_up = [gate | up] of shape [M, 2I] -> float32 [M, I]."""
    _check_2d(gate_up, "gate_up")
    if gate_up.shape[1] % 2:
        raise ValueError(f"gate_up must have an even number of columns [gate | up], got {gate_up.shape[1]}")
    inter = gate_up.shape[1] // 2
    g = gate_up[:, :inter].float()
    u = gate_up[:, inter:].float()
    return (g / (1.0 + exp(-g))) * u


def quant_lift(h: torch.Tensor, qdtype: str, pattern) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_per_token then lift (sparse pattern) or zero-pad K to 32 (pattern None)."""
    return ReferenceOps().quant(h, qdtype, pattern)


def rmsnorm_quant_ref(x, weight, eps, qdtype, pattern=None):
    return quant_lift(rmsnorm_f32(x, weight, eps), qdtype, pattern)


def silu_mul_quant_ref(gate_up, qdtype, pattern=None, exp=torch.exp):
    return quant_lift(silu_mul_f32(gate_up, exp), qdtype, pattern)


def _check_2d(t: torch.Tensor, name: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {t.dtype}")


__all__ = ["RMS_MAX_K", "sum_squares", "rmsnorm_f32", "silu_mul_f32", "quant_lift", "rmsnorm_quant_ref",
           "silu_mul_quant_ref"]
