#!/usr/bin/env python3
"""Experimental schedules of the fused producer -> per-token quant kernels (silu_mul_quant, rmsnorm_quant).

The production kernel (``slidesparse.kernels.triton_kernels.quant_kernel``) gives each program one row,
held in registers as one or two power-of-two tiles; at I = 13824 / 18944 (32 warps, 64 registers a
thread) one program fills an SM, so an SM has one row of loads in flight and none during the row's
reduction, quantization and stores. The variants here keep the production arithmetic (they call its
@triton.jit helpers ``_f32``, ``_rms_h``, ``_quantize``, ``_emit``, ``_slid_source`` and repeat the
few lines of ``_produce`` / the rstd code that cannot be called on values already loaded, op for op)
and only change the scheduling:

  pf   persistent programs (P per SM), rows r = pid, pid + G, ...; each iteration first issues the
       loads of its NEXT row into registers (loop-carried bf16 tiles: register double buffering),
       then reduces / quantizes / stores the current row, so loads stay in flight meanwhile.
  pfp  pf for SiLU with the waiting row held as int32 words (bf16 pairs: two values a register,
       where loop-carried bf16 scalars may take one register each); h of the even and odd columns
       is computed apart and the quantized halves re-interleaved (tl.interleave) for ``_emit``.
  stg  the same persistent loop without the manual prefetch, as ``tl.range(..., num_stages=NS)``.
       Triton 3.6 does pipeline these non-dot loads: the 128-bit-vectorizable tiles become
       cp.async copies into NS-1 shared-memory buffers (TTGIR ttg.async_copy_global_to_local;
       18944: 76 KB of dynamic shared memory at NS=2, 152 KB at NS=3); tiles narrower than 4 bytes
       a thread (e.g. the 512-column tile at 32 warps) stay plain loads.
  row  one row per program (like production) but with up to three power-of-two tiles that cover
       the row nearly exactly (13824 = 8192 + 4096 + 2048, 18944 = 16384 + 2048 + 512,
       5120 = 4096 + 1024) and a free choice of warps.
  Tiles: 'exact' = the <= 3-tile cover above; 'prod' = production's BLOCK_K (+ BLOCK_K2 if SPLIT).
  Persistent grids: P='auto' = as many programs per SM as registers / shared memory allow (from
  the compiled kernel), times the SM count. rmsnorm_quant variants may also hoist the weight out
  of the row loop (HOIST_W).

Register pressure (sm_90, --compile-cpu): SiLU 13824 pf/pfp/stg at 32 warps fit 64 registers with no
spill; at 18944 every double-buffered variant spills 40-200 bytes a thread (cuobjdump STACK), like
nothing in production (which has 64 registers, no spill). A row of 18944 is 76 KB of bf16 loads
plus 76 KB of float32 h, i.e. 60 % of the 256 KB register file before any double buffering, so
two rows per SM cannot both sit in registers; stg keeps the next row in shared memory instead.

Only whole-row-in-registers (ONE_CHUNK) rows, dense output (L == 0) or a lift by SCATTER (the default
for both fused producers) are covered.

Modes:
    TRITON_INTERPRET=1 python tools/kernel_variants.py --check-cpu
        bit-identity vs ``launch.quant`` (default config) on tiny shapes, under the interpreter.
    python tools/kernel_variants.py --compile-cpu [--sizes silu:13824,rms:5120]
        (no GPU, no interpreter) compiles the bench's variant configs for sm_90 with Triton's ptxas
        and prints registers, spills and whether the row loop got pipelined (async copies in TTGIR).
    PYTHONPATH=src python3 tools/kernel_variants.py --bench OUT_DIR [--budget 200] [--quick] [--threads 8]
        on a GPU: per case checks every variant bit-identical to production, times production, each
        variant config and a device-to-device copy of the same bytes; prints a table; writes
        OUT_DIR/variants.csv. A failing variant (compile error, mismatch) is recorded and skipped.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.language.extra import libdevice  # noqa: E402

from slidesparse.kernels import launch  # noqa: E402
from slidesparse.kernels import triton_kernels as tk  # noqa: E402
from slidesparse.kernels.configs import default_config  # noqa: E402
from slidesparse.kernels.triton_kernels import _emit, _f32, _quantize, _rms_h, _slid_source  # noqa: E402
from slidesparse.pattern import Pattern  # noqa: E402
from slidesparse.quant import ABSMAX_FLOOR, qmax, torch_qdtype  # noqa: E402

SOFT = tk.interpreted()
KERNEL_NAME = {tk.SILU_MUL: "silu_mul_quant", tk.RMSNORM: "rmsnorm_quant"}


# ------------------------------------------------------------------------------------------------
# Triton: shared row pieces
# ------------------------------------------------------------------------------------------------

@triton.jit
def _load_tiles(x_ptr, r, M, stride_xm, inter, K, UP: tl.constexpr,
                BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr):
    """Raw (bf16) loads of row r, columns [0, BK), [BK, BK+BK2), [BK+BK2, BK+BK2+BK3), masked at K
    and r < M (a row >= M reads zeros, as production). UP: also the `up` half at +inter (SiLU).
    Returns (a, a_up, b, b_up, c, c_up); absent tiles / halves are [1, 1] zero placeholders."""
    rows = r + tl.arange(0, 1)
    live = (rows < M)[:, None]
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    dummy = tl.zeros([1, 1], dtype=x_ptr.dtype.element_ty)
    oa = tl.arange(0, BK)[None, :]
    ma = live & (oa < K)
    a = tl.load(x_rows + oa, mask=ma, other=0.0)
    if UP:
        au = tl.load(x_rows + inter + oa, mask=ma, other=0.0)
    else:
        au = dummy
    if BK2 > 0:
        ob = BK + tl.arange(0, BK2)[None, :]
        mb = live & (ob < K)
        b = tl.load(x_rows + ob, mask=mb, other=0.0)
        if UP:
            bu = tl.load(x_rows + inter + ob, mask=mb, other=0.0)
        else:
            bu = dummy
    else:
        b = dummy
        bu = dummy
    if BK3 > 0:
        oc = BK + BK2 + tl.arange(0, BK3)[None, :]
        mc = live & (oc < K)
        c = tl.load(x_rows + oc, mask=mc, other=0.0)
        if UP:
            cu = tl.load(x_rows + inter + oc, mask=mc, other=0.0)
        else:
            cu = dummy
    else:
        c = dummy
        cu = dummy
    return a, au, b, bu, c, cu


@triton.jit
def _silu_h(graw, uraw, SOFT: tl.constexpr):
    """SiLU(gate) * up from raw loaded values: the SILU_MUL branch of ``_produce``, op for op."""
    g = _f32(graw, SOFT)
    u = _f32(uraw, SOFT)
    if SOFT:
        e = tl.exp(-g)
    else:
        e = libdevice.exp(-g)
    return tl.math.div_rn(g, 1.0 + e) * u


@triton.jit
def _finish_row(ha, hb, hc, amax, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
                SOFT: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr):
    """Scale and quantized (lifted) row r from its h tiles and absmax: production's pass 2, ROWS = 1."""
    rows = r + tl.arange(0, 1)
    amax = tl.maximum(amax, FLOOR)
    inv = tl.math.div_rn(tl.full([1], QMAX, tl.float32), amax)
    tl.store(s_ptr + rows, tl.math.div_rn(amax, tl.full([1], QMAX, tl.float32)), mask=rows < M_PAD)
    keep = (rows < M_PAD)[:, None]
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    _emit(q_rows, 0, _quantize(ha * inv[:, None], QFP8, SOFT), keep, KIN, L, 1, BK)
    if BK2 > 0:
        _emit(q_rows, BK, _quantize(hb * inv[:, None], QFP8, SOFT), keep, KIN, L, 1, BK2)
    if BK3 > 0:
        _emit(q_rows, BK + BK2, _quantize(hc * inv[:, None], QFP8, SOFT), keep, KIN, L, 1, BK3)
    if L > 0:  # zeros where a slid column's source is >= K (production's tail, SCATTER)
        p = (K // L) * (2 * L - 4) + tl.arange(0, TAIL)[None, :]
        src = _slid_source(p // 4, p % 4, L)
        tl.store(q_rows + p, tl.zeros([1, TAIL], dtype=q_ptr.dtype.element_ty),
                 mask=keep & (p < KOUT) & (src >= K))


@triton.jit
def _silu_row(ga, ua, gb, ub, gc, uc, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
              QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
              SOFT: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr):
    ha = _silu_h(ga, ua, SOFT)
    amax = tl.max(tl.abs(ha), axis=1)
    hb = ha
    hc = ha
    if BK2 > 0:
        hb = _silu_h(gb, ub, SOFT)
        amax = tl.maximum(amax, tl.max(tl.abs(hb), axis=1))
    if BK3 > 0:
        hc = _silu_h(gc, uc, SOFT)
        amax = tl.maximum(amax, tl.max(tl.abs(hc), axis=1))
    _finish_row(ha, hb, hc, amax, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL)


@triton.jit
def _load_pairs(x_ptr, r, M, stride_xm, inter, K, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr):
    """Row r of a bf16 [gate | up] as int32 words, each the bf16 pair of columns (2j, 2j+1): one
    32-bit register holds two values while the row waits in the loop (needs K, I even). Tiles of
    BK/2, BK2/2, BK3/2 words; absent tiles are [1, 1] placeholders. Returns (a, au, b, bu, c, cu)."""
    xi = x_ptr.to(tl.pointer_type(tl.int32))
    rows = r + tl.arange(0, 1)
    live = (rows < M)[:, None]
    x_rows = xi + rows.to(tl.int64)[:, None] * (stride_xm // 2)
    up = inter // 2
    dummy = tl.zeros([1, 1], dtype=tl.int32)
    oa = tl.arange(0, BK // 2)[None, :]
    ma = live & (2 * oa < K)
    a = tl.load(x_rows + oa, mask=ma, other=0)
    au = tl.load(x_rows + up + oa, mask=ma, other=0)
    b = dummy
    bu = dummy
    c = dummy
    cu = dummy
    if BK2 > 0:
        ob = BK // 2 + tl.arange(0, BK2 // 2)[None, :]
        mb = live & (2 * ob < K)
        b = tl.load(x_rows + ob, mask=mb, other=0)
        bu = tl.load(x_rows + up + ob, mask=mb, other=0)
    if BK3 > 0:
        oc = (BK + BK2) // 2 + tl.arange(0, BK3 // 2)[None, :]
        mc = live & (2 * oc < K)
        c = tl.load(x_rows + oc, mask=mc, other=0)
        cu = tl.load(x_rows + up + oc, mask=mc, other=0)
    return a, au, b, bu, c, cu


@triton.jit
def _silu_pair_h(gw, uw, SOFT: tl.constexpr):
    """h of the even and the odd columns of a tile of bf16 pairs (int32 words). bf16 -> float32 is
    the exact 16-bit shift ``_f32`` does; then the SILU_MUL arithmetic of ``_produce``, op for op."""
    g_lo = (gw << 16).to(tl.float32, bitcast=True)
    g_hi = (gw & -65536).to(tl.float32, bitcast=True)
    u_lo = (uw << 16).to(tl.float32, bitcast=True)
    u_hi = (uw & -65536).to(tl.float32, bitcast=True)
    if SOFT:
        e_lo = tl.exp(-g_lo)
        e_hi = tl.exp(-g_hi)
    else:
        e_lo = libdevice.exp(-g_lo)
        e_hi = libdevice.exp(-g_hi)
    return tl.math.div_rn(g_lo, 1.0 + e_lo) * u_lo, tl.math.div_rn(g_hi, 1.0 + e_hi) * u_hi


@triton.jit
def _silu_row_pairs(ga, ua, gb, ub, gc, uc, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
                    SOFT: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr):
    """``_silu_row`` on bf16 pairs: h of even / odd columns apart, the quantized halves interleaved
    back into column order for ``_emit``."""
    la, ha = _silu_pair_h(ga, ua, SOFT)
    amax = tl.maximum(tl.max(tl.abs(la), axis=1), tl.max(tl.abs(ha), axis=1))
    lb = la
    hb = ha
    lc = la
    hc = ha
    if BK2 > 0:
        lb, hb = _silu_pair_h(gb, ub, SOFT)
        amax = tl.maximum(amax, tl.maximum(tl.max(tl.abs(lb), axis=1), tl.max(tl.abs(hb), axis=1)))
    if BK3 > 0:
        lc, hc = _silu_pair_h(gc, uc, SOFT)
        amax = tl.maximum(amax, tl.maximum(tl.max(tl.abs(lc), axis=1), tl.max(tl.abs(hc), axis=1)))
    rows = r + tl.arange(0, 1)
    amax = tl.maximum(amax, FLOOR)
    inv = tl.math.div_rn(tl.full([1], QMAX, tl.float32), amax)[:, None]
    tl.store(s_ptr + rows, tl.math.div_rn(amax, tl.full([1], QMAX, tl.float32)), mask=rows < M_PAD)
    keep = (rows < M_PAD)[:, None]
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    _emit(q_rows, 0, tl.interleave(_quantize(la * inv, QFP8, SOFT), _quantize(ha * inv, QFP8, SOFT)),
          keep, KIN, L, 1, BK)
    if BK2 > 0:
        _emit(q_rows, BK, tl.interleave(_quantize(lb * inv, QFP8, SOFT), _quantize(hb * inv, QFP8, SOFT)),
              keep, KIN, L, 1, BK2)
    if BK3 > 0:
        _emit(q_rows, BK + BK2, tl.interleave(_quantize(lc * inv, QFP8, SOFT), _quantize(hc * inv, QFP8, SOFT)),
              keep, KIN, L, 1, BK3)
    if L > 0:
        p = (K // L) * (2 * L - 4) + tl.arange(0, TAIL)[None, :]
        src = _slid_source(p // 4, p % 4, L)
        tl.store(q_rows + p, tl.zeros([1, TAIL], dtype=q_ptr.dtype.element_ty),
                 mask=keep & (p < KOUT) & (src >= K))


@triton.jit
def _w_tiles(w_ptr, K, SOFT: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr):
    """The RMSNorm weight as float32 tiles (for HOIST_W), loaded as ``_rms_h`` loads it."""
    oa = tl.arange(0, BK)[None, :]
    wa = _f32(tl.load(w_ptr + oa, mask=oa < K, other=0.0), SOFT)
    wb = wa
    wc = wa
    if BK2 > 0:
        ob = BK + tl.arange(0, BK2)[None, :]
        wb = _f32(tl.load(w_ptr + ob, mask=ob < K, other=0.0), SOFT)
    if BK3 > 0:
        oc = BK + BK2 + tl.arange(0, BK3)[None, :]
        wc = _f32(tl.load(w_ptr + oc, mask=oc < K, other=0.0), SOFT)
    return wa, wb, wc


@triton.jit
def _rms_row(xa, xb, xc, wa, wb, wc, r, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm, kf, eps,
             QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
             SOFT: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr,
             HOIST_W: tl.constexpr):
    """RMSNorm -> quant of one row from raw loaded x tiles: production's pass 0 / 1 (ONE_CHUNK), op for op."""
    oa = tl.arange(0, BK)[None, :]
    ob = BK + tl.arange(0, BK2 if BK2 > 0 else 1)[None, :]
    oc = BK + BK2 + tl.arange(0, BK3 if BK3 > 0 else 1)[None, :]
    fa = _f32(xa, SOFT)
    amx = tl.max(tl.abs(fa), axis=1)
    fb = fa
    fc = fa
    if BK2 > 0:
        fb = _f32(xb, SOFT)
        amx = tl.maximum(amx, tl.max(tl.abs(fb), axis=1))
    if BK3 > 0:
        fc = _f32(xc, SOFT)
        amx = tl.maximum(amx, tl.max(tl.abs(fc), axis=1))
    t = tl.minimum(tl.maximum(148 - tl.maximum(amx.to(tl.int32, bitcast=True) >> 23, 1), -126), 126)
    up = ((t + 127) << 23).to(tl.float32, bitcast=True)[:, None]
    down = ((127 - t) << 23).to(tl.float32, bitcast=True)
    xs = fa * up
    ssq = tl.sum((xs * xs).to(tl.int64), axis=1)
    if BK2 > 0:
        xs_b = fb * up
        ssq = ssq + tl.sum((xs_b * xs_b).to(tl.int64), axis=1)
    if BK3 > 0:
        xs_c = fc * up
        ssq = ssq + tl.sum((xs_c * xs_c).to(tl.int64), axis=1)
    ms = tl.math.div_rn((ssq.to(tl.float32) * down) * down, kf)
    rstd = tl.math.div_rn(tl.full([1], 1.0, tl.float32), tl.math.sqrt_rn(ms + eps))[:, None]
    if HOIST_W:
        ha = (fa * rstd) * wa
    else:
        ha = _rms_h(fa, rstd, w_ptr, oa, K, SOFT)
    amax = tl.max(tl.abs(ha), axis=1)
    hb = ha
    hc = ha
    if BK2 > 0:
        if HOIST_W:
            hb = (fb * rstd) * wb
        else:
            hb = _rms_h(fb, rstd, w_ptr, ob, K, SOFT)
        amax = tl.maximum(amax, tl.max(tl.abs(hb), axis=1))
    if BK3 > 0:
        if HOIST_W:
            hc = (fc * rstd) * wc
        else:
            hc = _rms_h(fc, rstd, w_ptr, oc, K, SOFT)
        amax = tl.maximum(amax, tl.max(tl.abs(hc), axis=1))
    _finish_row(ha, hb, hc, amax, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL)


# ------------------------------------------------------------------------------------------------
# Triton: the variant kernel (one entry; MODE picks the schedule)
# ------------------------------------------------------------------------------------------------

@triton.jit
def variant_kernel(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr,
    BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr,
    MODE: tl.constexpr, NS: tl.constexpr, HOIST_W: tl.constexpr, N_ITER: tl.constexpr,
):
    """Rows pid, pid + G, ... (G = the grid) of q [M_PAD, KOUT] and scale [M_PAD].

    MODE 0: register double buffering (row r+G's loads are issued before row r is processed);
    MODE 1: plain loop over the rows as tl.range(num_stages=NS). N_ITER > 0 (interpreter only):
    every program runs N_ITER iterations (rows >= M_PAD are masked off); else cdiv(M_PAD - pid, G).
    """
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    # (the interpreter turns a variable assigned in both arms of an `if` into a 1-element tensor,
    # which `range` refuses: so the loop bound goes straight into the call)
    if N_ITER > 0:
        _rows_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
                   pid, G, N_ITER, QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BK, BK2, BK3, TAIL, MODE, NS, HOIST_W)
    else:
        _rows_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
                   pid, G, tl.cdiv(M_PAD - pid, G), QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BK, BK2, BK3, TAIL,
                   MODE, NS, HOIST_W)


@triton.jit
def _rows_loop(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps, pid, G, n_iter,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr,
    BK: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, TAIL: tl.constexpr,
    MODE: tl.constexpr, NS: tl.constexpr, HOIST_W: tl.constexpr,
):
    SILU: tl.constexpr = PRODUCER == 2
    if HOIST_W:
        wa, wb, wc = _w_tiles(w_ptr, K, SOFT, BK, BK2, BK3)
    else:
        wa = tl.zeros([1, 1], dtype=tl.float32)
        wb = wa
        wc = wa
    if MODE == 0:
        r = pid
        a, au, b, bu, c, cu = _load_tiles(x_ptr, r, M, stride_xm, inter, K, SILU, BK, BK2, BK3)
        for _ in range(0, n_iter):
            # the next row's loads first: they stay in flight while this row is reduced and stored
            na, nau, nb, nbu, nc, ncu = _load_tiles(x_ptr, r + G, M, stride_xm, inter, K, SILU, BK, BK2, BK3)
            if SILU:
                _silu_row(a, au, b, bu, c, cu, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                          QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL)
            else:
                _rms_row(a, b, c, wa, wb, wc, r, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm, kf, eps,
                         QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL, HOIST_W)
            a, au, b, bu, c, cu = na, nau, nb, nbu, nc, ncu
            r = r + G
    elif MODE == 2:  # MODE 0 with the rows held as bf16 pairs in int32 words (SiLU only)
        r = pid
        a, au, b, bu, c, cu = _load_pairs(x_ptr, r, M, stride_xm, inter, K, BK, BK2, BK3)
        for _ in range(0, n_iter):
            na, nau, nb, nbu, nc, ncu = _load_pairs(x_ptr, r + G, M, stride_xm, inter, K, BK, BK2, BK3)
            _silu_row_pairs(a, au, b, bu, c, cu, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                            QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL)
            a, au, b, bu, c, cu = na, nau, nb, nbu, nc, ncu
            r = r + G
    else:
        for it in tl.range(0, n_iter, num_stages=NS):
            r = pid + it * G
            a, au, b, bu, c, cu = _load_tiles(x_ptr, r, M, stride_xm, inter, K, SILU, BK, BK2, BK3)
            if SILU:
                _silu_row(a, au, b, bu, c, cu, r, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm,
                          QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL)
            else:
                _rms_row(a, b, c, wa, wb, wc, r, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm, kf, eps,
                         QMAX, FLOOR, QFP8, L, SOFT, BK, BK2, BK3, TAIL, HOIST_W)


# ------------------------------------------------------------------------------------------------
# Host side
# ------------------------------------------------------------------------------------------------

def _pow2_floor(n: int) -> int:
    return 1 << (int(n).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def exact_tiles(kin: int, cap: int = 1 << 16, max_tiles: int = 3, min_tile: int = 32) -> tuple[int, int, int]:
    """<= 3 power-of-two tiles (each <= cap, >= min_tile, decreasing) covering kin columns with
    little padding: greedy binary decomposition, the last tile rounded up."""
    tiles, rem = [], int(kin)
    while rem > 0 and len(tiles) < max_tiles:
        if len(tiles) == max_tiles - 1:
            t = _pow2_ceil(rem)
        else:
            t = _pow2_floor(rem)
        t = max(min_tile, min(cap, t))
        tiles.append(t)
        rem -= t
    if rem > 0:
        raise ValueError(f"{kin} columns do not fit {max_tiles} tiles of at most {cap}")
    tiles += [0] * (3 - len(tiles))
    return tuple(tiles)


def row_geometry(x: torch.Tensor, producer: int, pattern):
    """(K, inter, kout, L, kin) as ``launch.quant`` computes them."""
    p = pattern if pattern is None or isinstance(pattern, Pattern) else Pattern.parse(pattern)
    M, cols = x.shape
    K = cols // 2 if producer == tk.SILU_MUL else cols
    inter = K
    kout = launch.out_k(K, p)
    L = 0 if p is None or p.window == 4 else p.window
    kin = K if L > 0 else kout
    return K, inter, kout, L, kin


def variant_tiles(var: dict, K: int, kout: int, L: int, kin: int, qd: str, pattern, producer: int):
    if var.get("tiles", "exact") == "prod":
        cfg = default_config(KERNEL_NAME[producer], K, qd, pattern)
        bk, bk2, _, one_chunk, _ = launch.tiling(K, kout, L, {**cfg, "SPLIT": 1})
        if not one_chunk:
            raise ValueError(f"production tiling of K={K} is not one chunk")
        return bk, bk2, 0
    cap = var.get("cap", 1 << 16)
    if cap == "small":  # tests: tiles of about a third of the row, so rows take two or three tiles
        cap = max(32, _pow2_ceil(-(-kin // 3)))
    return exact_tiles(kin, cap=int(cap))


def n_sms() -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    return 1


def resident_per_sm(n_regs: int, num_warps: int, smem: int) -> int:
    """Programs of one kernel an H100 SM holds at once (registers, warps, shared memory, blocks)."""
    per_warp = -(-max(1, n_regs) * 32 // 256) * 256
    by_regs = (65536 // per_warp) // num_warps
    by_warps = 64 // num_warps
    by_smem = 233472 // (smem + 1024)
    return max(1, min(by_regs, by_warps, by_smem, 32))


class Variant:
    """One variant config bound to a case's shapes: ``warmup()`` compiles, ``v(x, q, s)`` launches.

    Grid: 'row' -> one program per row; persistent -> P programs per SM, P = var['P'] or, for
    'auto' (the default), as many as fit an SM once the compiled kernel's registers are known
    (``fit``); var['G'] (interpreter tests) fixes the grid."""

    def __init__(self, var: dict, x: torch.Tensor, qd: str, pattern, producer: int, weight, eps: float, out):
        p = pattern if pattern is None or isinstance(pattern, Pattern) else Pattern.parse(pattern)
        self.var = var
        K, inter, kout, L, kin = row_geometry(x, producer, p)
        M = x.shape[0]
        self.Mp = Mp = launch.m_pad(M)
        bk, bk2, bk3 = variant_tiles(var, K, kout, L, kin, qd, p, producer)
        if bk + bk2 + bk3 < kin:
            raise ValueError(f"tiles {bk}+{bk2}+{bk3} do not cover {kin} columns")
        self.tiles = (bk, bk2, bk3)
        self.G = self._grid(None)
        mode = {"pf": 0, "stg": 1, "row": 1, "pfp": 2}[var["mode"]]
        ns = int(var.get("NS", 1)) if var["mode"] == "stg" else 1
        if mode == 2 and (producer != tk.SILU_MUL or x.dtype != torch.bfloat16 or K % 2 or x.stride(0) % 2
                          or x.data_ptr() % 4):
            raise ValueError("pfp (packed pairs) needs SiLU with a bf16 gate_up, I even, 4-byte aligned rows")
        self.ce = dict(QMAX=qmax(qd), FLOOR=ABSMAX_FLOOR, QFP8=(qd == "fp8"), L=L, PRODUCER=producer, SOFT=SOFT,
                       BK=bk, BK2=bk2, BK3=bk3, TAIL=1 << (2 * L + 27).bit_length() if L > 0 else 1,
                       MODE=mode, NS=ns, HOIST_W=bool(var.get("hoist_w", 0)) and producer == tk.RMSNORM,
                       N_ITER=-(-Mp // self.G) if SOFT else 0,
                       num_warps=int(var["num_warps"]), num_stages=1, enable_fp_fusion=False)
        w = weight if weight is not None else x
        self._scalars = (M, Mp, K, kout, kin)
        self._rest = (inter, float(K), float(eps))
        self._w, self._x, self._out = w, x, out

    def _grid(self, ck) -> int:
        var, Mp = self.var, self.Mp
        if var["mode"] == "row":
            return Mp
        if "G" in var:
            return max(1, min(Mp, int(var["G"])))
        P = var.get("P", "auto")
        if P == "auto":
            P = 1 if ck is None else resident_per_sm(ck.n_regs, int(var["num_warps"]), int(ck.metadata.shared))
        self.P = int(P)
        return max(1, min(Mp, int(P) * n_sms()))

    def _args(self, xx, q, s):
        return (xx, self._w, q, s, *self._scalars, xx.stride(0), q.stride(0), *self._rest)

    def warmup(self):
        """Compile (no launch); returns the CompiledKernel."""
        return variant_kernel.warmup(*self._args(self._x, *self._out), grid=(1,), **self.ce)

    def fit(self, ck) -> None:
        """Size a persistent grid from the compiled kernel (registers, shared memory)."""
        if hasattr(ck, "result"):
            ck = ck.result()
        ck._init_handles()
        self.G = self._grid(ck)

    def __call__(self, xx, q, s):
        return variant_kernel[(self.G,)](*self._args(xx, q, s), **self.ce)


def run_variant(var, x, qd, pattern, producer, weight=None, eps=0.0, out=None):
    p = pattern if pattern is None or isinstance(pattern, Pattern) else Pattern.parse(pattern)
    K, _, kout, _, _ = row_geometry(x, producer, p)
    if out is None:
        Mp = launch.m_pad(x.shape[0])
        out = (torch.empty(Mp, kout, dtype=torch_qdtype(qd), device=x.device),
               torch.empty(Mp, dtype=torch.float32, device=x.device))
    Variant(var, x, qd, p, producer, weight, eps, out)(x, *out)
    return out


def var_label(var: dict) -> str:
    s = f"{var['mode']}/{var.get('tiles', 'exact')}/w{var['num_warps']}"
    if var["mode"] == "stg":
        s += f"/ns{var.get('NS', 1)}"
    if var["mode"] != "row":
        s += f"/G{var['G']}" if "G" in var else f"/P{var.get('P', 'auto')}"
    if var.get("hoist_w"):
        s += "/hw"
    if "cap" in var:
        s += f"/cap{var['cap']}"
    return s


def poisoned(Mp: int, kout: int, qd: str, device):
    q = torch.full((Mp, kout), 0x5A, dtype=torch.uint8, device=device).view(torch_qdtype(qd))
    return q, torch.full((Mp,), float("nan"), device=device)


def same(a, b) -> str:
    """'' when the (q, scale) pairs are bit-identical, else a short description of the difference."""
    (qa, sa), (qb, sb) = a, b
    if qa.shape != qb.shape or sa.shape != sb.shape:
        return f"shapes {tuple(qa.shape)} vs {tuple(qb.shape)}"
    dq = (qa.view(torch.uint8) != qb.view(torch.uint8)).nonzero()
    ds = (sa.view(torch.int32) != sb.view(torch.int32)).nonzero().flatten()
    if dq.numel() or ds.numel():
        return f"q differs at {dq.shape[0]} elements (first {dq[:3].tolist()}), scale at {ds.numel()} rows " \
               f"(first {ds[:3].tolist()})"
    return ""


def production(x, qd, pattern, producer, weight, eps, out=None):
    p = pattern if pattern is None or isinstance(pattern, Pattern) else Pattern.parse(pattern)
    K = x.shape[1] // 2 if producer == tk.SILU_MUL else x.shape[1]
    cfg = default_config(KERNEL_NAME[producer], K, qd, p)
    return launch.quant(x, qd, p, cfg, producer=producer, weight=weight, eps=eps, out=out), cfg


# ------------------------------------------------------------------------------------------------
# --check-cpu
# ------------------------------------------------------------------------------------------------

def check_cpu() -> int:
    if not SOFT:
        print("--check-cpu needs TRITON_INTERPRET=1 (set before Triton is imported)")
        return 2
    import warnings  # noqa: PLC0415

    warnings.filterwarnings("ignore", message="overflow encountered")
    t0 = time.time()
    variants = [
        {"mode": "pf", "num_warps": 4, "G": 3},                        # double buffer, exact tiles
        {"mode": "pf", "num_warps": 4, "G": 2, "cap": "small"},        # two or three small tiles
        {"mode": "pf", "num_warps": 4, "G": 5, "tiles": "prod"},
        {"mode": "stg", "num_warps": 4, "G": 3, "NS": 2, "cap": "small"},
        {"mode": "row", "num_warps": 4, "cap": "small"},
        {"mode": "pf", "num_warps": 4, "G": 4, "hoist_w": 1, "cap": "small"},  # RMSNorm only
        {"mode": "pfp", "num_warps": 4, "G": 3},                       # SiLU only: rows as bf16 pairs
        {"mode": "pfp", "num_warps": 4, "G": 2, "cap": "small"},
    ]
    cases = []
    for producer, sizes in ((tk.SILU_MUL, (40, 100)), (tk.RMSNORM, (64, 96))):
        for K in sizes:
            for pat in (None, "6:8", "8:10"):
                for qd in ("int8", "fp8"):
                    cases.append((producer, K, pat, qd))
    fails, n = 0, 0
    for ci, (producer, K, pat, qd) in enumerate(cases):
        Ms = (1, 5, 17) if ci % 2 == 0 else (5, 17)  # M = 1 on half the cases: the interpreter is slow
        for M in Ms:
            g = torch.Generator().manual_seed(1000 * ci + M)
            cols = 2 * K if producer == tk.SILU_MUL else K
            x = (torch.randn(M, cols, generator=g) * 4.0).to(torch.bfloat16)
            if M >= 5:
                x[1] = 0.0
                x[M - 1] = 0.0
            if producer == tk.SILU_MUL and M >= 5:
                x[2, : K // 2] = -100.0  # exp(-g) overflows: silu -> -0
                x[3, 3] = 1e-40  # a bf16 subnormal
            w = (torch.rand(K, generator=g) + 0.5).to(torch.bfloat16) if producer == tk.RMSNORM else None
            eps = 1e-6 if producer == tk.RMSNORM else 0.0
            p = None if pat is None else Pattern.parse(pat)
            Kg, _, kout, _, _ = row_geometry(x, producer, p)
            Mp = launch.m_pad(M)
            ref, _ = production(x, qd, p, producer, w, eps, out=poisoned(Mp, kout, qd, "cpu"))
            for var in variants:
                if (var.get("hoist_w") and producer != tk.RMSNORM) or (var["mode"] == "pfp" and producer != tk.SILU_MUL):
                    continue
                n += 1
                what = f"{KERNEL_NAME[producer]} K={K} M={M} {pat or 'dense'} {qd} {var_label(var)}"
                try:
                    got = run_variant(var, x, qd, p, producer, w, eps, out=poisoned(Mp, kout, qd, "cpu"))
                    diff = same(got, ref)
                except Exception as e:  # noqa: BLE001
                    diff = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                if diff:
                    fails += 1
                    print(f"FAIL {what}: {diff}", flush=True)
        print(f"  {KERNEL_NAME[producer]} K={K} {pat or 'dense'} {qd}: done ({time.time() - t0:.0f}s)", flush=True)
    print(f"check-cpu: {n - fails}/{n} variant runs bit-identical to launch.quant ({time.time() - t0:.0f}s)")
    return 1 if fails else 0


# ------------------------------------------------------------------------------------------------
# Bench grid
# ------------------------------------------------------------------------------------------------

def bench_variants(producer: int, K: int) -> list[dict]:
    """The variant configs timed for one size: each is one compile per dtype/pattern (compiled in
    parallel threads). Persistent grids default to P='auto': as many programs per SM as fit.
    Register counts from --compile-cpu (sm_90): SiLU 13824/18944 pf w32 64 regs (1 program/SM,
    like production's 32 warps), w16 ~128 (1/SM); stg keeps the next row in shared memory."""
    if producer == tk.SILU_MUL:
        if K <= 8192:
            return [{"mode": "pf", "num_warps": 8}, {"mode": "pf", "num_warps": 16},
                    {"mode": "pfp", "num_warps": 8}, {"mode": "pfp", "num_warps": 16},
                    {"mode": "stg", "num_warps": 8, "NS": 2}, {"mode": "stg", "num_warps": 16, "NS": 2},
                    {"mode": "row", "num_warps": 8}]
        return [{"mode": "pf", "num_warps": 32}, {"mode": "pf", "num_warps": 16},
                {"mode": "pf", "num_warps": 32, "tiles": "prod"},
                {"mode": "pfp", "num_warps": 32}, {"mode": "pfp", "num_warps": 16},
                {"mode": "stg", "num_warps": 32, "NS": 2}, {"mode": "stg", "num_warps": 16, "NS": 2},
                {"mode": "stg", "num_warps": 32, "NS": 3},
                {"mode": "row", "num_warps": 16}]
    return [{"mode": "pf", "num_warps": 4}, {"mode": "pf", "num_warps": 8}, {"mode": "pf", "num_warps": 4, "hoist_w": 1},
            {"mode": "stg", "num_warps": 4, "NS": 2}, {"mode": "stg", "num_warps": 8, "NS": 3},
            {"mode": "row", "num_warps": 8}]


def bench_cases(quick: bool):
    """(producer, K, M, qd, pattern) in priority order: the slow sizes first, the controls last."""
    pats = [None, "6:8"]
    order = [(tk.SILU_MUL, 13824), (tk.SILU_MUL, 18944), (tk.RMSNORM, 5120), (tk.SILU_MUL, 8192),
             (tk.RMSNORM, 3584)]
    ms = (16384,) if quick else (4096, 16384)
    for producer, K in order:
        for qd in ("int8", "fp8"):
            for pat in pats:
                for M in ms:  # the second M reuses the first's compiled variants
                    yield producer, K, M, qd, pat


# ------------------------------------------------------------------------------------------------
# --bench
# ------------------------------------------------------------------------------------------------

def bench(out_dir: Path, budget_s: float, quick: bool, case_s: float, threads: int, max_cases: int = 0) -> int:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from slidesparse.kernels.timing import copy_time_us, require_cuda, rotation_sets, time_us  # noqa: PLC0415

    device = require_cuda()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    deadline = t_start + budget_s
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"{torch.cuda.get_device_name()}: {n_sms()} SMs; torch {torch.__version__}; triton {triton.__version__}; "
          f"budget {budget_s:.0f}s", flush=True)
    rows: list[dict] = []
    copy_cache: dict[int, float] = {}
    table = []
    reps, warm = 20, 3
    pool = ThreadPoolExecutor(max(1, threads))  # compiles (Triton releases the GIL for most of it)
    fields = ["kernel", "dtype", "pattern", "K", "M", "variant", "status", "us", "copy_us", "pct_of_copy", "bytes",
              "grid", "regs", "spills", "smem", "tiles", "compile_s", "config"]

    def write_csv():
        with open(out_dir / "variants.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            wr.writeheader()
            for r in rows:
                wr.writerow(r)

    cases = list(bench_cases(quick))
    if max_cases > 0:  # smoke test: the first case of each size
        firsts = {}
        for c in cases:
            firsts.setdefault((c[0], c[1]), c)
        cases = list(firsts.values())[:max_cases]
    for producer, K, M, qd, pat in cases:
        kname = KERNEL_NAME[producer]
        label = f"{kname} {qd} {pat or 'dense'} K={K} M={M}"
        base = dict(kernel=kname, dtype=qd, pattern=pat or "dense", K=K, M=M)
        if time.time() > deadline:
            table.append((kname, qd, pat or "dense", K, M, None, None, "skipped: time budget"))
            rows.append(dict(base, variant="*", status="skipped: time budget"))
            continue
        case_t0 = time.time()
        p = None if pat is None else Pattern.parse(pat)
        try:
            cols = 2 * K if producer == tk.SILU_MUL else K
            kout = launch.out_k(K, p)
            Mp = launch.m_pad(M)
            nbytes = M * cols * 2 + (K * 2 if producer == tk.RMSNORM else 0) + Mp * (kout + 4)
            n = rotation_sets(nbytes, device)
            xs = [(torch.randn(M, cols, device=device, generator=gen) + 0.01).to(torch.bfloat16) for _ in range(n)]
            w = (torch.rand(K, device=device, generator=gen) + 0.5).to(torch.bfloat16) \
                if producer == tk.RMSNORM else None
            eps = 1e-6 if producer == tk.RMSNORM else 0.0
            outs = [(torch.empty(Mp, kout, dtype=torch_qdtype(qd), device=device),
                     torch.empty(Mp, dtype=torch.float32, device=device)) for _ in range(n)]
            # variants: bind and compile in parallel threads while production compiles / runs here
            variants, futures = [], []
            for var in bench_variants(producer, K):
                try:
                    v = Variant(var, xs[0], qd, p, producer, w, eps, outs[0])
                    futures.append(pool.submit(lambda v=v: (time.time(), v.warmup(), time.time())))
                except Exception as e:  # noqa: BLE001
                    v = e
                    futures.append(None)
                variants.append((var, v))
            ref, cfg = production(xs[0], qd, p, producer, w, eps, out=poisoned(Mp, kout, qd, device))
            ref = (ref[0].clone(), ref[1].clone())
            if nbytes not in copy_cache:
                copy_cache[nbytes] = copy_time_us(nbytes, warm, reps, device)
            c_us = copy_cache[nbytes]
            prod_us = time_us(lambda i: launch.quant(xs[i], qd, p, cfg, producer=producer, weight=w, eps=eps,
                                                     out=outs[i]), n, warm, reps, 10.0)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            table.append((kname, qd, pat or "dense", K, M, None, None, f"case failed: {type(e).__name__}"))
            rows.append(dict(base, variant="production", status=f"error: {type(e).__name__}: {e}"))
            torch.cuda.empty_cache()
            continue
        prod_pct = 100.0 * c_us / prod_us
        rows.append(dict(base, variant="production", config=str(cfg), us=round(prod_us, 2), copy_us=round(c_us, 2),
                         pct_of_copy=round(prod_pct, 1), bytes=nbytes, status="ok"))
        print(f"{label}: copy {c_us:.1f}us  production {prod_us:.1f}us = {prod_pct:.0f}%  ({cfg})", flush=True)
        best = None
        for (var, v), fut in zip(variants, futures):
            vl = var_label(var)
            try:
                if fut is None:
                    raise v
                t0, ck, t1 = fut.result()
                if time.time() > deadline or time.time() - case_t0 > case_s:
                    rows.append(dict(base, variant=vl, status="skipped: time guard"))
                    continue
                v.fit(ck)
                info = dict(grid=v.G, regs=ck.n_regs, spills=ck.n_spills, smem=ck.metadata.shared,
                            tiles="+".join(map(str, v.tiles)), compile_s=round(t1 - t0, 2), config=str(var))
                got = poisoned(Mp, kout, qd, device)
                v(xs[0], *got)
                torch.cuda.synchronize()
                diff = same(got, ref)
                if diff:
                    rows.append(dict(base, variant=vl, status=f"MISMATCH: {diff}", **info))
                    print(f"    {vl:28s} MISMATCH {diff}", flush=True)
                    continue
                us = time_us(lambda i: v(xs[i], *outs[i]), n, warm, reps, 10.0)
            except Exception as e:  # noqa: BLE001
                msg = str(e).strip().splitlines()
                msg = msg[-1] if msg else ""
                rows.append(dict(base, variant=vl, status=f"error: {type(e).__name__}: {msg[:300]}"))
                print(f"    {vl:28s} ERROR {type(e).__name__}: {msg[:300]}", flush=True)
                continue
            pct = 100.0 * c_us / us
            rows.append(dict(base, variant=vl, us=round(us, 2), copy_us=round(c_us, 2), pct_of_copy=round(pct, 1),
                             bytes=nbytes, status="ok", **info))
            print(f"    {vl:28s} {us:9.1f}us {pct:5.0f}%  grid {v.G} regs {ck.n_regs} spills {ck.n_spills} "
                  f"smem {ck.metadata.shared} tiles {info['tiles']}", flush=True)
            if best is None or pct > best[0]:
                best = (pct, vl)
        table.append((kname, qd, pat or "dense", K, M, prod_pct, best[0] if best else None,
                      best[1] if best else "no variant ran"))
        xs = outs = ref = variants = futures = None  # free the case's buffers
        torch.cuda.empty_cache()
        write_csv()

    pool.shutdown(wait=False, cancel_futures=True)
    write_csv()
    print()
    print(f"{torch.cuda.get_device_name()}: % of device-to-device copy bandwidth (same bytes), "
          f"total {time.time() - t_start:.0f}s; rows in {out_dir / 'variants.csv'}")
    print(f"{'kernel':15s}{'dtype':>6s}{'pattern':>8s}{'K/I':>7s}{'M':>7s}{'prod%':>7s}{'best%':>7s}  best variant")
    for kname, qd, pat, K, M, pp, bp, bl in table:
        fp = f"{pp:7.0f}" if pp is not None else f"{'-':>7s}"
        fb = f"{bp:7.0f}" if bp is not None else f"{'-':>7s}"
        print(f"{kname:15s}{qd:>6s}{pat:>8s}{K:>7d}{M:>7d}{fp}{fb}  {bl}")
    return 0


# ------------------------------------------------------------------------------------------------
# --compile-cpu: registers / spills / pipelining without a GPU
# ------------------------------------------------------------------------------------------------

def compile_cpu(sizes: list[tuple[int, int]]) -> int:
    import re  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from triton.backends.compiler import GPUTarget  # noqa: PLC0415

    if SOFT:
        print("--compile-cpu must run without TRITON_INTERPRET")
        return 2
    target = GPUTarget("cuda", 90, 32)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    sig_base = {"x_ptr": "*bf16", "w_ptr": "*bf16", "s_ptr": "*fp32", "M": "i32", "M_PAD": "i32", "K": "i32",
                "KOUT": "i32", "KIN": "i32", "stride_xm": "i32", "stride_qm": "i32", "inter": "i32",
                "kf": "fp32", "eps": "fp32"}
    # hints as the launch gives them (K, strides divisible by 16; pointers 16-byte aligned)
    div16 = ["x_ptr", "w_ptr", "q_ptr", "s_ptr", "M", "M_PAD", "K", "KOUT", "KIN", "stride_xm", "stride_qm", "inter"]
    names = list(variant_kernel.arg_names)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in div16}

    def usage(cubin: bytes) -> str:
        p = Path("/tmp/_kv.cubin")
        p.write_bytes(cubin)
        out = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(p)], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+).*?LOCAL:(\d+)", out)
        return f"regs {m.group(1):>3s} stack {m.group(2):>4s} local {m.group(3)}" if m else out.strip()[-120:]

    for producer, K in sizes:
        for pat in (None, "6:8"):
            p = None if pat is None else Pattern.parse(pat)
            kout = launch.out_k(K, p)
            L = 0 if p is None else p.window
            kin = K if L else kout
            for qd, var in [(d, v) for d in ("int8", "fp8") for v in bench_variants(producer, K) + [{"mode": "prod"}]]:
                sig = dict(sig_base, q_ptr="*fp8e4nv" if qd == "fp8" else "*i8")
                t = time.time()
                try:
                    if var["mode"] == "prod":
                        cfg = default_config(KERNEL_NAME[producer], K, qd, p)
                        bk, bk2, kin_p, one, sc = launch.tiling(K, kout, L, cfg)
                        psig = dict(sig, NWIN="i32")
                        ce = dict(QMAX=qmax(qd), FLOOR=ABSMAX_FLOOR, QFP8=qd == "fp8", L=L, PRODUCER=producer,
                                  SOFT=False, ONE_CHUNK=one, SCATTER=sc, BLOCK_K=bk, BLOCK_K2=bk2, BLOCK_W=int(cfg["BLOCK_W"]),
                                  ROWS=int(cfg["ROWS"]), TAIL=(1 << (2 * L + 27).bit_length()) if sc else 1)
                        fn, nw, label = tk.quant_kernel, int(cfg["num_warps"]), f"production w{cfg['num_warps']} " \
                            f"BK={bk}+{bk2}"
                        pnames = list(tk.quant_kernel.arg_names)
                        a = {(pnames.index(n),): [["tt.divisibility", 16]] for n in div16}
                    else:
                        bk, bk2, bk3 = variant_tiles(var, K, kout, L, kin, qd, p, producer)
                        psig = sig
                        ce = dict(QMAX=qmax(qd), FLOOR=ABSMAX_FLOOR, QFP8=qd == "fp8", L=L, PRODUCER=producer,
                                  SOFT=False, BK=bk, BK2=bk2, BK3=bk3, TAIL=1 << (2 * L + 27).bit_length() if L else 1,
                                  MODE={"pf": 0, "stg": 1, "row": 1, "pfp": 2}[var["mode"]],
                                  NS=int(var.get("NS", 1)) if var["mode"] == "stg" else 1,
                                  HOIST_W=bool(var.get("hoist_w", 0)) and producer == tk.RMSNORM, N_ITER=0)
                        fn, nw, label = variant_kernel, int(var["num_warps"]), f"{var_label(var)} BK={bk}+{bk2}+{bk3}"
                        a = attrs
                    full = dict(psig, **{k: "constexpr" for k in ce})
                    ck = triton.compile(triton.compiler.ASTSource(fn, full, ce, a), target=target,
                                        options={"num_warps": nw, "enable_fp_fusion": False})
                    ttgir = ck.asm["ttgir"]
                    piped = ttgir.count("ttg.async_copy_global_to_local")
                    print(f"{KERNEL_NAME[producer]:15s} {qd:4s} K={K:6d} {pat or 'dense':5s} {label:44s} "
                          f"{usage(ck.asm['cubin'])} dyn-smem {ck.metadata.shared:6d} cp.async-tiles {piped} "
                          f"({time.time() - t:.1f}s)", flush=True)
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip().splitlines()
                    print(f"{KERNEL_NAME[producer]:15s} {qd:4s} K={K:6d} {pat or 'dense':5s} "
                          f"{var_label(var) if var['mode'] != 'prod' else 'production':44s} "
                          f"COMPILE ERROR {type(e).__name__}: {msg[-1] if msg else ''}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check-cpu", action="store_true", help="interpreter bit-identity check (TRITON_INTERPRET=1)")
    g.add_argument("--bench", type=Path, metavar="OUT_DIR", help="GPU check + timing; writes OUT_DIR/variants.csv")
    g.add_argument("--compile-cpu", action="store_true", help="compile for sm_90 offline: registers, spills")
    ap.add_argument("--budget", type=float, default=200.0, help="bench: seconds after which cases are skipped")
    ap.add_argument("--case-s", type=float, default=25.0, help="bench: seconds after which a case's variants stop")
    ap.add_argument("--quick", action="store_true", help="bench: M = 16384 only")
    ap.add_argument("--threads", type=int, default=8, help="bench: parallel compile threads")
    ap.add_argument("--cases", type=int, default=0, help="bench smoke test: only the first case of the first N sizes")
    ap.add_argument("--sizes", default="silu:13824,silu:18944,silu:8192,rms:5120,rms:3584",
                    help="compile-cpu: kernel:K list")
    args = ap.parse_args()
    if args.check_cpu:
        return check_cpu()
    if args.compile_cpu:
        sizes = []
        for item in args.sizes.split(","):
            k, v = item.split(":")
            sizes.append((tk.SILU_MUL if k.startswith("silu") else tk.RMSNORM, int(v)))
        return compile_cpu(sizes)
    return bench(args.bench, args.budget, args.quick, args.case_s, args.threads, args.cases)


if __name__ == "__main__":
    sys.exit(main())
