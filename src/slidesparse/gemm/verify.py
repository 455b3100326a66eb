"""Random GEMM operands and the reference they are checked against (any device; fast on GPU).

INT8: the exact int32 product, via ``torch._int_mm`` on CUDA (cuBLAS, exact integer accumulation)
or int64 matmul in chunks on the CPU. FP8: a float32 product of the upcast operands with TF32 off.
"""

from __future__ import annotations

import torch

from ..quant import torch_qdtype

# the 6 ways to keep 2 of 4 lanes
_PAIRS = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]],
                      dtype=torch.bool)


def random_q(rows: int, cols: int, qdtype: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random quantized values, never all-zero: INT8 in [-127, 127], FP8 from N(0, 1) * 8 (clamped to e4m3)."""
    if torch_qdtype(qdtype) == torch.int8:
        return torch.randint(-127, 128, (rows, cols), dtype=torch.int8, device=device, generator=generator)
    x = torch.randn(rows, cols, device=device, generator=generator) * 8
    return x.clamp_(-448, 448).to(torch.float8_e4m3fn)


def random_2to4(rows: int, cols: int, qdtype: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random weight with exactly 2 kept values in every group of 4 along the columns."""
    if cols % 4:
        raise ValueError(f"cols must be a multiple of 4, got {cols}")
    w = random_q(rows, cols, qdtype, device, generator)
    pick = torch.randint(0, 6, (rows, cols // 4), device=device, generator=generator)
    keep = _PAIRS.to(device)[pick].reshape(rows, cols)
    return w.view(torch.uint8).masked_fill(~keep, 0).view(w.dtype)


def reference_mm(x: torch.Tensor, w: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """x [M, K] @ w [N, K]^T: int32 (exact) for int8 inputs, float32 for fp8 inputs."""
    M, K = x.shape
    if x.dtype == torch.int8:
        out = torch.empty(M, w.shape[0], dtype=torch.int32, device=x.device)
        if x.is_cuda:
            wt = w.t()  # column-major [K, N]: the fast layout for _int_mm
            for s in range(0, M, chunk):
                xs = x[s:s + chunk]
                rows = xs.shape[0]
                if rows <= 16 or rows % 8:  # _int_mm wants M > 16 (and aligned); pad with zero rows
                    pad = max(32, -(-rows // 8) * 8)
                    xp = torch.zeros(pad, K, dtype=torch.int8, device=x.device)
                    xp[:rows] = xs
                    out[s:s + rows] = torch._int_mm(xp, wt)[:rows]
                else:
                    out[s:s + rows] = torch._int_mm(xs, wt)
        else:
            wl = w.to(torch.int64)
            for s in range(0, M, chunk):
                out[s:s + chunk] = (x[s:s + chunk].to(torch.int64) @ wl.T).to(torch.int32)
        return out
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        wf = w.float()
        out = torch.empty(M, w.shape[0], dtype=torch.float32, device=x.device)
        for s in range(0, M, chunk):
            out[s:s + chunk] = x[s:s + chunk].float() @ wf.T
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def rel_error(out: torch.Tensor, ref: torch.Tensor, chunk: int = 4096) -> float:
    """||out - ref|| / ||ref|| in float64, row chunk by row chunk (inf if out has NaN/inf)."""
    num = den = 0.0
    for s in range(0, out.shape[0], chunk):
        o, r = out[s:s + chunk].double(), ref[s:s + chunk].double()
        if not bool(torch.isfinite(o).all()):
            return float("inf")
        num += float(((o - r) ** 2).sum())
        den += float((r ** 2).sum())
    return (num ** 0.5) / (den ** 0.5 if den > 0 else 1.0)


def matches(out: torch.Tensor, ref: torch.Tensor, tol: float = 1e-2) -> tuple[bool, str]:
    """Whether a GEMM output agrees with the reference: int32 exactly; float outputs within ``tol``
    (normwise relative error). Returns (ok, description)."""
    if out.dtype == torch.int32 and ref.dtype == torch.int32:
        if torch.equal(out, ref):
            return True, "exact"
        bad = int((out != ref).sum())
        return False, f"{bad} of {out.numel()} int32 values differ"
    err = rel_error(out, ref)
    return err <= tol, f"rel err {err:.2e}"
