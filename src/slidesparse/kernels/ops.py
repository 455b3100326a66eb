"""``TritonOps``: the activation-side operators on the GPU, call-compatible with ``ReferenceOps``.

quant(x, qdtype, pattern)          -> (q [M_pad, gemm_k(K)], scale_a [M_pad] float32)
dequant(acc, sa, sb, bias, dtype)  -> [M, N]
rmsnorm_quant(x, w, eps, qdtype, pattern)  -> like quant, of RMSNorm(x) (kernels/reference.py)
silu_mul_quant(gate_up, qdtype, pattern)   -> like quant, of silu(gate) * up, K = I
rope_cache(qkv, cos, sin, pos, k_cache, v_cache, heads, kv_heads) -> q [B, H, T, D]; k, v written
    into the caches at ``pos`` (RoPE and cache write in one launch; ops.rope_cache_reference).
    The engine uses it when ``fused_rope`` is True (the default; False falls back to the torch ops,
    e.g. to bisect a wrong result): bit-exact against the reference, float32 without FMA.

M_pad = ceil(M/16)*16: the padding rows are quantized zero rows (q = 0, scale = ABSMAX_FLOOR/QMAX),
so the GEMM can consume q as is; slice ``[:M]`` where only real rows matter. Every method takes
``out=`` (preallocated outputs) so a caller can capture it in a CUDA graph without allocation.
Launch configs come from ``<search_dir>/<hwtag>/kernels.json`` when tuned, else the defaults.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import launch
from . import triton_kernels as tk
from .configs import DEFAULT_SEARCH_DIR, KernelConfigs


class TritonOps:
    name = "triton"

    def __init__(self, search_dir: Path | str | None = DEFAULT_SEARCH_DIR, hwtag: str | None = None,
                 fused_rope: bool = True):
        """``search_dir`` None: always the built-in default configs (no file is read).
        ``fused_rope``: let the engine call ``rope_cache`` (see the module docstring)."""
        self.configs = None if search_dir is None else KernelConfigs(search_dir, hwtag)
        self.fused_rope = bool(fused_rope)
        self._defaults: dict[tuple, dict] = {}

    def config(self, kernel: str, K: int, M: int, dtype, pattern) -> dict:
        """The launch config this object uses for one call (tuned bucket, else the default)."""
        if self.configs is not None:
            return self.configs.lookup(kernel, K, M, dtype, pattern)
        key = (kernel, K, dtype, pattern)
        cfg = self._defaults.get(key)
        if cfg is None:
            from .configs import default_config  # noqa: PLC0415

            cfg = self._defaults[key] = default_config(kernel, K, dtype, pattern)
        return cfg

    def quant(self, x: torch.Tensor, qdtype: str, pattern, *, out=None) -> tuple[torch.Tensor, torch.Tensor]:
        launch.check_x(x, "x")
        cfg = self.config("quant", x.shape[-1], x.shape[0], qdtype, pattern)
        return launch.quant(x, qdtype, pattern, cfg, out=out)

    def rmsnorm_quant(self, x: torch.Tensor, weight: torch.Tensor, eps: float, qdtype: str, pattern, *,
                      out=None) -> tuple[torch.Tensor, torch.Tensor]:
        launch.check_x(x, "x")
        cfg = self.config("rmsnorm_quant", x.shape[-1], x.shape[0], qdtype, pattern)
        return launch.quant(x, qdtype, pattern, cfg, producer=tk.RMSNORM, weight=weight, eps=eps, out=out)

    def silu_mul_quant(self, gate_up: torch.Tensor, qdtype: str, pattern, *,
                       out=None) -> tuple[torch.Tensor, torch.Tensor]:
        launch.check_x(gate_up, "gate_up")
        cfg = self.config("silu_mul_quant", max(1, gate_up.shape[-1] // 2), gate_up.shape[0], qdtype, pattern)
        return launch.quant(gate_up, qdtype, pattern, cfg, producer=tk.SILU_MUL, out=out)

    def rope_cache(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
        return launch.rope_cache(qkv, cos, sin, pos, k_cache, v_cache, heads, kv_heads)

    def dequant(self, acc: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                bias: torch.Tensor | None, out_dtype: torch.dtype, *, out: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(acc, torch.Tensor) and acc.dim() == 2 and acc.dtype in launch.ACC_DTYPES:
            cfg = self.config("dequant", max(1, acc.shape[1]), acc.shape[0], acc.dtype, None)
        else:  # launch.dequant names what is wrong
            cfg = {"BLOCK_M": 1, "BLOCK_N": 16, "num_warps": 1}
        return launch.dequant(acc, scale_a, scale_b, bias, out_dtype, cfg, out=out)
