"""Checked launches of the Triton kernels with an explicit launch config (a dict, see ``configs``).

These are the building blocks of ``TritonOps`` and of the tuner: they validate shapes, dtypes and
devices, allocate outputs unless given (``out=``, for CUDA-graph capture), and launch once.
"""

from __future__ import annotations

import math

import torch

from ..ops import gemm_k
from ..pattern import Pattern
from ..quant import ABSMAX_FLOOR, parse_qdtype, qmax, torch_qdtype
from . import triton_kernels as tk
from .reference import RMS_MAX_K

M_ALIGN = 16  # the GEMM's dense operand wants M padded to 16 rows
X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
OUT_DTYPES = (torch.bfloat16, torch.float16)
ACC_DTYPES = (torch.int32, torch.bfloat16, torch.float16, torch.float32)
_SOFT = tk.interpreted()
_QMAX = {"int8": qmax("int8"), "fp8": qmax("fp8")}
_QTYPE = {"int8": torch_qdtype("int8"), "fp8": torch_qdtype("fp8")}


def m_pad(M: int) -> int:
    return -(-M // M_ALIGN) * M_ALIGN


def out_k(K: int, pattern: Pattern | None) -> int:
    return gemm_k(K, pattern)


def check_x(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [M, K], got {getattr(x, 'shape', type(x))}")
    if x.dtype not in X_DTYPES:
        raise ValueError(f"{name} must be bfloat16, float16 or float32, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has K = 0 columns")
    if x.stride(1) != 1:
        raise ValueError(f"{name} must have unit column stride (rows may be strided), got strides {x.stride()}")


def _outputs(M: int, kout: int, qd: str, device, out) -> tuple[torch.Tensor, torch.Tensor]:
    Mp = m_pad(M)
    qt = _QTYPE[qd]
    if out is None:
        return (torch.empty(Mp, kout, dtype=qt, device=device),
                torch.empty(Mp, dtype=torch.float32, device=device))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError("out must be a (q, scale) pair of tensors")
    q, s = out
    if q.shape != (Mp, kout) or q.dtype != qt or q.stride(1) != 1:
        raise ValueError(f"out q must be [{Mp}, {kout}] {qt} with unit column stride, got "
                         f"{tuple(q.shape)} {q.dtype} strides {q.stride()}")
    if s.shape != (Mp,) or s.dtype != torch.float32 or not s.is_contiguous():
        raise ValueError(f"out scale must be a contiguous float32 [{Mp}], got {tuple(s.shape)} {s.dtype}")
    if q.device != device or s.device != device:
        raise ValueError(f"out tensors must be on {device}, got {q.device} / {s.device}")
    return q, s


def quant(x: torch.Tensor, qdtype: str, pattern, config: dict, *, producer: int = tk.PLAIN,
          weight: torch.Tensor | None = None, eps: float = 0.0, out=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One launch of ``quant_kernel``.

    producer PLAIN: x [M, K] is the activation. RMSNORM: x [M, K] and weight [K], eps > 0.
    SILU_MUL: x = gate_up [M, 2I]; the activation is silu(gate) * up of I columns.
    Returns (q [M_pad, gemm_k(K)], scale [M_pad]) with M_pad = ceil(M/16)*16.

    A config with PERSIST > 0 whose rows fit in registers (ONE_CHUNK) and are written densely or
    scattered launches ``quant_kernel_persist`` instead: min(row tiles, SMs * PERSIST) programs
    (``sm_count``), the grid a function of M and the config only (CUDA-graph capturable). Same bits.
    A lifted row whose config has BLOCK_G > 0 and whose windows fit its tiles (``pair_tiles``)
    launches ``quant_kernel_pairs`` (before any of that; with PERSIST > 0 as persistent programs,
    the grid as above). Same bits.
    """
    check_x(x, "gate_up" if producer == tk.SILU_MUL else "x")
    qd = qdtype if qdtype in _QMAX else parse_qdtype(qdtype)
    p = pattern if pattern is None or isinstance(pattern, Pattern) else Pattern.parse(pattern)
    M, cols = x.shape
    inter = 0
    if producer == tk.SILU_MUL:
        if cols % 2:
            raise ValueError(f"gate_up must have an even number of columns [gate | up], got {cols}")
        inter = cols // 2
        K = inter
    else:
        K = cols
    if producer == tk.RMSNORM:
        if weight is None or weight.dim() != 1 or weight.shape[0] != K or weight.dtype not in X_DTYPES:
            raise ValueError(f"RMSNorm weight must be a 1-D float tensor of {K} values, got "
                             f"{None if weight is None else (tuple(weight.shape), weight.dtype)}")
        if weight.device != x.device or not weight.is_contiguous():
            raise ValueError(f"RMSNorm weight must be contiguous and on {x.device}")
        if K > RMS_MAX_K:
            raise ValueError(f"RMSNorm supports K <= {RMS_MAX_K}, got {K}")
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"RMSNorm eps must be a positive finite number, got {eps!r}")
    kout = out_k(K, p)
    q, s = _outputs(M, kout, qd, x.device, out)
    Mp = q.shape[0]
    if Mp == 0:
        return q, s
    L = 0 if p is None or p.window == 4 else p.window  # 2:4 lifting is the identity
    rows = int(config["ROWS"])
    block_k, block_k2, kin, one_chunk, scatter = tiling(K, kout, L, config)
    tail = 1 << (2 * L + 27).bit_length() if scatter else 1
    persist = int(config.get("PERSIST", 0))
    w_arg = weight if weight is not None else x
    inter_arg = inter if producer == tk.SILU_MUL else K
    common = dict(QMAX=_QMAX[qd], FLOOR=ABSMAX_FLOOR, QFP8=(qd == "fp8"), L=L, PRODUCER=producer, SOFT=_SOFT,
                  **_compile_options(config))
    pairs = pair_constexprs(kout, L, producer, config)
    if pairs is not None:
        grid, n_iter = _grid(Mp, rows, persist, x.device)
        tk.quant_kernel_pairs[(grid,)](
            x, w_arg, q, s, M, Mp, K, kout, x.stride(0), q.stride(0), inter_arg, float(K), float(eps), 0,
            **pairs, N_ITER=n_iter, **common,
        )
        return q, s
    if persist and one_chunk and (L == 0 or scatter):
        bk2, bk3 = persist_tiles(kin, block_k, block_k2)
        grid, n_iter = _grid(Mp, rows, persist, x.device)
        tk.quant_kernel_persist[(grid,)](
            x, w_arg, q, s, M, Mp, K, kout, kin, x.stride(0), q.stride(0), inter_arg, float(K), float(eps),
            BLOCK_K=block_k, BLOCK_K2=bk2, BLOCK_K3=bk3, ROWS=rows, TAIL=tail,
            HOIST_W=bool(config.get("HOIST_W", 0)) and producer == tk.RMSNORM, N_ITER=n_iter, **common,
        )
        return q, s
    kernel = tk.quant_kernel_static if _SOFT else tk.quant_kernel
    kernel[(_grid(Mp, rows, 0, x.device)[0],)](
        x, w_arg, q, s, M, Mp, K, kout, kin, kout // 4, x.stride(0), q.stride(0), inter_arg, float(K), float(eps),
        ONE_CHUNK=one_chunk, SCATTER=scatter, BLOCK_K=block_k, BLOCK_K2=block_k2,
        BLOCK_W=int(config["BLOCK_W"]), ROWS=rows, TAIL=tail, **common,
    )
    return q, s


def _grid(m_pad: int, rows: int, persist: int, device) -> tuple[int, int]:
    """(programs, N_ITER) of a launch over the cdiv(m_pad, rows) row tiles: a program a tile, or with
    PERSIST > 0 min(tiles, SMs * PERSIST) programs looping over them; N_ITER is each program's loop
    count under the interpreter (whose ``range`` needs a constant), 0 on the GPU and when not
    persistent. A function of M and the config only, so a launch stays CUDA-graph capturable."""
    tiles = triton_cdiv(m_pad, rows)
    if not persist:
        return tiles, 0
    grid = min(tiles, sm_count(device) * persist)
    return grid, (triton_cdiv(tiles, grid) if _SOFT else 0)


def pair_constexprs(kout: int, L: int, producer: int, config: dict) -> dict | None:
    """The tile constexprs of a ``quant_kernel_pairs`` launch for ``config`` (BG, BG2, BG3, their units
    GQ, GQ2, GQ3, ROWS, PERSIST, HOIST_W), or None when the config does not take the pair kernel
    (``pair_tiles``). HOIST_W only for RMSNorm's persistent programs (the weight is loaded once a
    program)."""
    groups = pair_tiles(kout, L, config)
    if groups is None:
        return None
    units = tile_units(groups, L, config)
    persist = bool(config.get("PERSIST", 0))
    return dict(BG=groups[0], BG2=groups[1], BG3=groups[2], GQ=units[0], GQ2=units[1], GQ3=units[2],
                ROWS=int(config["ROWS"]), PERSIST=persist,
                HOIST_W=persist and bool(config.get("HOIST_W", 0)) and producer == tk.RMSNORM)


def _compile_options(config: dict) -> dict:
    """The compile options of a quant launch: warps, stages, the register cap (MAXNREG, 0 = the
    compiler's choice), and no FMA contraction (the exactness notes of ``triton_kernels``)."""
    return {"num_warps": int(config["num_warps"]), "num_stages": int(config.get("num_stages", 1)),
            "maxnreg": int(config.get("MAXNREG", 0)) or None, "enable_fp_fusion": False}


def dequant(acc: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, bias: torch.Tensor | None,
            out_dtype: torch.dtype, config: dict, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """One launch of ``dequant_kernel``: acc [M, N] (row stride may exceed N) -> out [M, N]."""
    if not isinstance(acc, torch.Tensor) or acc.dim() != 2:
        raise ValueError(f"acc must be a 2-D tensor [M, N], got {getattr(acc, 'shape', type(acc))}")
    if acc.dtype not in ACC_DTYPES:
        raise ValueError(f"acc must be int32, bfloat16, float16 or float32, got {acc.dtype}")
    if acc.stride(1) != 1:
        raise ValueError(f"acc must have unit column stride, got strides {acc.stride()}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"dequant out_dtype must be bfloat16 or float16, got {out_dtype}")
    M, N = acc.shape
    dev = acc.device
    for name, t, n in (("scale_a", scale_a, M), ("scale_b", scale_b, N)):
        if t.dim() != 1 or not t.dtype.is_floating_point or not t.is_contiguous() or t.device != dev:
            raise ValueError(f"{name} must be a contiguous 1-D float tensor on {dev}, got "
                             f"{tuple(t.shape)} {t.dtype} on {t.device}")
    if scale_a.shape[0] < M or scale_b.shape[0] != N:
        raise ValueError(f"scale shapes {tuple(scale_a.shape)}, {tuple(scale_b.shape)} do not fit acc {M}x{N}")
    if bias is not None and (bias.shape != (N,) or not bias.dtype.is_floating_point or not bias.is_contiguous()
                             or bias.device != dev):
        raise ValueError(f"bias must be a contiguous float [{N}] on {dev}, got {tuple(bias.shape)} {bias.dtype}")
    if out is None:
        out = torch.empty(M, N, dtype=out_dtype, device=dev)
    elif out.shape != (M, N) or out.dtype != out_dtype or out.stride(1) != 1 or out.device != dev:
        raise ValueError(f"out must be [{M}, {N}] {out_dtype} with unit column stride on {dev}, got "
                         f"{tuple(out.shape)} {out.dtype} strides {out.stride()}")
    if M == 0 or N == 0:
        return out
    bm, bn = int(config["BLOCK_M"]), int(config["BLOCK_N"])
    if triton_cdiv(N, bn) > 65535:  # CUDA's grid y limit
        raise ValueError(f"dequant config BLOCK_N={bn} needs {triton_cdiv(N, bn)} column blocks for N={N}; "
                         f"at most 65535: use a larger BLOCK_N")
    tk.dequant_kernel[(triton_cdiv(M, bm), triton_cdiv(N, bn))](
        acc, scale_a, scale_b, bias if bias is not None else scale_b, out, M, N, acc.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, SOFT=_SOFT, BLOCK_M=bm, BLOCK_N=bn,
        num_warps=int(config["num_warps"]), num_stages=int(config.get("num_stages", 1)),
        enable_fp_fusion=False,
    )
    return out


def tiling(K: int, kout: int, L: int, config: dict) -> tuple[int, int, int, bool, bool]:
    """How the quant kernel covers a row: (BLOCK_K, BLOCK_K2, KIN, ONE_CHUNK, SCATTER).

    KIN: the input columns pass 2 walks (KOUT for a plain row, with its zero padding; K for a
    lift). ONE_CHUNK when they fit BLOCK_K, or, with SPLIT and at most BLOCK_K more columns,
    BLOCK_K plus a second power-of-two tile of at least 32 (BLOCK_K2).
    """
    block_k = int(config["BLOCK_K"])
    scatter = L > 0 and bool(config.get("SCATTER", 0))
    kin = K if L > 0 else kout
    if kin <= block_k:
        return block_k, 0, kin, True, scatter
    rest = kin - block_k
    if config.get("SPLIT", 0) and rest <= block_k:
        return block_k, max(32, 1 << (rest - 1).bit_length()), kin, True, scatter
    return block_k, 0, kin, False, scatter


def pair_tiles(kout: int, L: int, config: dict) -> tuple[int, int, int] | None:
    """The group tiles (BG, BG2, BG3) of a pair-tile launch (``quant_kernel_pairs``), or None when
    the config does not ask for one (BLOCK_G 0), the row is not lifted, or its windows do not fit:
    the tiles must cover every group with a slid column below KOUT, BLOCK_G groups (at least a unit,
    ``group_unit``), and with SPLIT at most BLOCK_G more in at most two power-of-two tiles of at
    least a unit a thread (a smaller tile is replicated over the threads, and its layout conversions
    go through shared memory): 8:10 at 2368 groups = 2048 + 256 + 64 at 2 warps, 2048 + 512 at 16.
    With SHRINK the later tiles take smaller units (``tile_units``), so they need only a group a
    thread, and a split row's BLOCK_G must give every thread a unit: 6:8 at 2368 groups, UNIT 4, 16
    warps = 2048 (units of 4) + 512 (of 1), where without SHRINK the rest takes a whole 2048."""
    block_g = int(config.get("BLOCK_G", 0))
    if not block_g or L == 0:
        return None
    unit = group_unit(L, config)
    threads = 32 * int(config["num_warps"])
    shrink = bool(config.get("SHRINK", 0))
    need = window_groups(kout, L)
    if block_g < unit:
        return None
    if need <= block_g:
        return block_g, 0, 0
    if not config.get("SPLIT", 0) or need - block_g > block_g or (shrink and block_g < unit * threads):
        return None
    return (block_g, *_two_tiles(need - block_g, min(block_g, threads if shrink else unit * threads)))


def tile_units(tiles: tuple[int, int, int], L: int, config: dict) -> tuple[int, int, int]:
    """The unit (groups a thread holds together) of each pair tile: UNIT, or with SHRINK for the
    tiles after the first the largest power of two <= UNIT that still gives every thread a unit (at
    least 1): a unit a thread in narrower stores rather than threads on padding. The units a tile
    (``tile / unit``) then never grow from one tile to the next, as ``_g_rows``'s fold needs."""
    unit = group_unit(L, config)
    if not config.get("SHRINK", 0):
        return unit, unit, unit
    threads = 32 * int(config["num_warps"])
    return (unit, *(min(unit, max(1, t // threads)) if t else unit for t in tiles[1:]))


def pair_unit(L: int) -> int:
    """The fewest consecutive groups whose windows (L/2 - 1 of 4 bytes a group) fill whole 16-byte
    stores, 16-byte aligned: 1 at 8:10, 2 at 4:6 and 12:14, 4 at 6:8, 10:12 and 14:16."""
    nw = L // 2 - 1
    return 1 if nw % 4 == 0 else 2 if nw % 2 == 0 else 4


def group_unit(L: int, config: dict) -> int:
    """Groups a thread of the pair kernel holds together: config key UNIT (1 when absent). A unit's
    windows go out in the widest aligned stores that divide them (6:8: 4 bytes at UNIT 1, 16 at
    ``pair_unit(8)`` = 4); a larger unit means fewer threads a row."""
    return int(config.get("UNIT", 1))


def window_groups(kout: int, L: int) -> int:
    """Groups of window L with a slid column below ``kout`` (each group has 2L - 4 slid columns)."""
    return -(-kout // (2 * L - 4))


def _two_tiles(rest: int, smallest: int) -> tuple[int, int]:
    """``rest`` > 0 items in at most two power-of-two tiles of at least ``smallest``: the largest
    power of two <= rest, then the next power of two >= what is left (0 when nothing is)."""
    b2 = max(smallest, 1 << (rest.bit_length() - 1))
    rem = rest - b2
    return b2, (max(smallest, 1 << (rem - 1).bit_length()) if rem > 0 else 0)


def persist_tiles(kin: int, block_k: int, block_k2: int) -> tuple[int, int]:
    """(BLOCK_K2, BLOCK_K3) of a persistent (PERSIST) launch: the columns past BLOCK_K in at most
    two power-of-two tiles of at least 32 (13824 = 8192 + 4096 + 2048 rather than 8192 + 8192;
    5120 = 4096 + 1024), or none when ``tiling`` gave one tile (``block_k2`` 0)."""
    if block_k2 == 0:
        return 0, 0
    return _two_tiles(kin - block_k, 32)


SOFT_SMS = 4  # the "SM count" of a persistent grid under the interpreter / on the CPU: several rows a program
_SMS: dict = {}


def sm_count(device) -> int:
    """Streaming multiprocessors of ``device`` (cached per device: a host-side query, no GPU sync,
    so a launch stays CUDA-graph capturable); SOFT_SMS under the interpreter or on the CPU."""
    n = _SMS.get(device)
    if n is None:
        d = torch.device(device)
        if _SOFT or d.type != "cuda":
            n = SOFT_SMS
        else:
            idx = d.index if d.index is not None else torch.cuda.current_device()
            n = int(torch.cuda.get_device_properties(idx).multi_processor_count)
        _SMS[device] = n
    return n


def rope_cache(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor,
               v_cache: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """RoPE on q and k of ``qkv`` [B, T, (heads + 2*kv_heads)*D] and the KV-cache write, one launch.

    cos/sin: float32 [T, D/2] (the rows of the token positions); pos: int64 [T] cache slots (a slot
    outside [0, S) is not written, in the kernel: pos lives on the device, and a host check would
    synchronize and break graph capture); caches [B, kv_heads, S, D] with unit stride in D. Returns q as [B, heads, T, D] (a view of a
    [B, T, heads, D] buffer), equal bit for bit to ``slidesparse.ops.rope_cache_reference``.
    """
    if qkv.dim() != 3 or qkv.stride(2) != 1 or qkv.stride(0) != qkv.shape[1] * qkv.stride(1):
        raise ValueError(f"qkv must be [B, T, N] with contiguous rows, got {tuple(qkv.shape)} strides {qkv.stride()}")
    B, T, N = qkv.shape
    D = N // (heads + 2 * kv_heads)
    if D * (heads + 2 * kv_heads) != N or D < 2 or D & (D - 1):
        raise ValueError(f"qkv width {N} is not (heads {heads} + 2 x kv_heads {kv_heads}) x a power-of-two head_dim")
    if cos.shape != (T, D // 2) or sin.shape != (T, D // 2) or cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"cos/sin must be float32 [{T}, {D // 2}], got {tuple(cos.shape)} {cos.dtype}")
    if pos.shape != (T,) or pos.dtype != torch.int64:
        raise ValueError(f"pos must be int64 [{T}], got {tuple(pos.shape)} {pos.dtype}")
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if c.dim() != 4 or c.shape[0] != B or c.shape[1] != kv_heads or c.shape[3] != D or c.stride(3) != 1 \
                or c.dtype != qkv.dtype or c.device != qkv.device:
            raise ValueError(f"{name} must be [{B}, {kv_heads}, S, {D}] {qkv.dtype} on {qkv.device}, got "
                             f"{tuple(c.shape)} {c.dtype}")
    if k_cache.stride() != v_cache.stride() or k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache and v_cache must have the same shape and strides, got {tuple(k_cache.shape)} "
                         f"{k_cache.stride()} and {tuple(v_cache.shape)} {v_cache.stride()}")  # one S bounds both
    q = torch.empty(B, T, heads, D, dtype=qkv.dtype, device=qkv.device)
    if B * T == 0:
        return q.transpose(1, 2)
    tk.rope_cache_kernel[(B * T,)](
        qkv, cos.contiguous(), sin.contiguous(), pos.contiguous(), q, k_cache, v_cache,
        T, k_cache.shape[2], qkv.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        H=heads, HKV=kv_heads, D=D, BLOCK_H=1 << max(0, max(heads, kv_heads) - 1).bit_length(), SOFT=_SOFT,
        num_warps=4, enable_fp_fusion=False,
    )
    return q.transpose(1, 2)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["M_ALIGN", "m_pad", "out_k", "quant", "dequant", "rope_cache"]
