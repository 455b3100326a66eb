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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D]; cos/sin [T, D/2] (rotate-half convention, as HF Llama/Qwen2), in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[None, None], sin[None, None]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def rope_cache_reference(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
                         k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """Split qkv [B, T, (heads + 2*kv_heads)*D], apply RoPE to q and k (cos/sin [T, D/2] float32 at
    the tokens' positions), write k and v into the caches [B, kv_heads, S, D] at slots ``pos`` [T];
    return q [B, heads, T, D]. Each float32 product and sum is rounded on its own (no FMA), the
    result rounded once to qkv's dtype: what the fused GPU kernel reproduces bit for bit."""
    B, T, N = qkv.shape
    D = N // (heads + 2 * kv_heads)
    nq, nkv = heads * D, kv_heads * D
    q = qkv[..., :nq].view(B, T, heads, D).transpose(1, 2)
    k = qkv[..., nq:nq + nkv].view(B, T, kv_heads, D).transpose(1, 2)
    v = qkv[..., nq + nkv:].view(B, T, kv_heads, D).transpose(1, 2)
    k_cache.index_copy_(2, pos, _rotate(k, cos, sin))
    v_cache.index_copy_(2, pos, v)
    return _rotate(q, cos, sin)


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
