"""The Triton kernels: per-token quant (+ lift, + fused RMSNorm or SiLU-and-mul producer) and
dequant (+ bias). Launch them through ``slidesparse.kernels.launch``; the math they reproduce is in
``slidesparse.quant`` (quantization) and ``slidesparse.kernels.reference`` (fused producers).

Exactness notes (each cited step is one IEEE float32 operation, as in the torch references):
* divisions use ``tl.math.div_rn`` (correctly rounded); Triton's ``/`` is approximate on NVIDIA GPUs;
* INT8 rounding is the float32 "magic number" trick: for |v| <= 2**22, the bits of v + 1.5*2**23 hold
  rint(v) (round half to even) in the low byte; every launch passes ``enable_fp_fusion=False``, so
  the multiply v = h * inv and this add are never contracted into one FMA (PTX mul.rn / add.rn);
* FP8 uses the hardware's round-to-nearest-even conversion (satfinite);
* no clamp to +-QMAX: v = h * inv with inv = QMAX / amax and amax the max |h| of these same h, so
  |v| <= QMAX * (1 + 2**-23), which rounds to QMAX: the reference's clamp never changes a finite h
  (``_quantize``);
* every row offset is ``row.to(int64) * stride``: M*K and M*N exceed 2**31 at real shapes.

``quant_kernel_persist`` is the same quantization scheduled as persistent programs that keep the
next row's loads in flight (config key PERSIST; rows held whole in registers only): the same
arithmetic, op for op, so the same bits.

``SOFT`` (constexpr) is True only under the Triton interpreter (TRITON_INTERPRET=1, CPU tests),
whose float conversions are not IEEE: bf16 -> fp32 mishandles subnormals, fp32 -> bf16 truncates,
fp32 -> fp8 rounds half away and can overflow the mantissa. The soft path does these conversions on
the bits instead (exact), and uses ``tl.exp`` (numpy) where the GPU uses libdevice's expf, which the
interpreter cannot call. On the GPU, ``SOFT`` is False and the plain conversions are used.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

PLAIN, RMSNORM, SILU_MUL = 0, 1, 2  # PRODUCER values: what the quantized row is made of


@triton.jit
def _f32(v, SOFT: tl.constexpr):
    """Any float (or int32) tensor -> float32 (exact for floats)."""
    if SOFT:
        if v.dtype == tl.bfloat16:
            r = (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        else:
            r = v.to(tl.float32)
    else:
        r = v.to(tl.float32)
    return r


@triton.jit
def _store_f32(ptrs, y, mask, SOFT: tl.constexpr):
    """Store float32 ``y`` into ``ptrs`` (bf16 / fp16 / fp32), one round-to-nearest-even cast."""
    if SOFT:
        if ptrs.dtype.element_ty == tl.bfloat16:
            bits = y.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            tl.store(ptrs, (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)
        else:
            tl.store(ptrs, y.to(ptrs.dtype.element_ty), mask=mask)
    else:
        tl.store(ptrs, y.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _quantize(v, QFP8: tl.constexpr, SOFT: tl.constexpr):
    """v = h * inv (float32) -> int8 (rint half-even) or e4m3 (RNE), as the reference's
    clamp-then-round (quant.py) for every finite h: inv = QMAX / amax with amax the max |h| of
    these same h, so |v| <= QMAX * (1 + 2**-23), which rounds to QMAX; the clamp itself is left
    out (two instructions an element, 4-5 % of the SiLU pair kernels' SASS: docs/PERF.md).
    The GPU's e4m3 conversion saturates (satfinite) in any case."""
    if QFP8:
        if SOFT:  # the exact grid value converts without rounding
            r, sign = _e4m3_grid(v)
            q = (r.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True).to(tl.float8e4nv)
        else:
            q = v.to(tl.float8e4nv, fp_downcast_rounding="rtne")
    else:
        q = (v + 12582912.0).to(tl.int32, bitcast=True).to(tl.int8)
    return q


@triton.jit
def _e4m3_grid(v):
    """|v| (float32, <= 448) rounded to the e4m3 grid, ties to even, and v's sign bit (int32):
    adding 1.5 * 2**(exponent-of-the-grid + 23) makes the float32 add round to a multiple of the
    e4m3 quantum; below 2**-6 the quantum stays 2**-9 (subnormals)."""
    bits = v.to(tl.int32, bitcast=True)
    mag_bits = bits & 0x7FFFFFFF
    e = tl.maximum(mag_bits >> 23, 121)
    magic = (((e + 20) << 23) | 0x400000).to(tl.float32, bitcast=True)
    return (mag_bits.to(tl.float32, bitcast=True) + magic) - magic, bits ^ mag_bits


@triton.jit
def _silu_mul(g, u, SOFT: tl.constexpr):
    """SiLU(g) * u in float32: g / (1 + exp(-g)) as an IEEE division, then the product (the reference's ops)."""
    if SOFT:
        q = tl.math.div_rn(g, 1.0 + tl.exp(-g))
    else:
        q = _div_by_1pe(g, 1.0 + libdevice.exp(-g))
    return q * u


@triton.jit
def _div_by_1pe(n, d):
    """n / d correctly rounded (as ``div_rn``) for d = 1 + exp(-n) in [1, inf], without div_rn's
    slow-path call: that call's fixed registers cost SiLU rows 20-45 registers a thread (109 -> 64
    at I = 18944, 16 warps), and with them the second program an SM.
    Markstein's sequence, as div_rn's fast path: y ~ 1/d from rcp.approx and one Newton step,
    q0 = n*y, and the residual d*q0 - n (exact in an FMA) corrects q0 in one rounding (written
    with that sign so that n = -0 gives -0). Where 1/d would be subnormal (flushed by rcp.approx.ftz)
    both operands are first scaled by 2**-64 (exact: then n <= -44); d = inf is clamped to FLT_MAX,
    so y = 0 and q = n * 0 (-0; NaN for n = -inf), as n / inf; n = +inf (d = 1) gives inf.
    PTX, so the negations fold into the FMAs (Triton's -x is 0 - x, an instruction).
    Checked equal to div_rn bit for bit at all 2**32 float32 n on an H100 (tests/test_kernels_gpu.py)."""
    return tl.inline_asm_elementwise(
        """{
        .reg .pred big, pinf;
        .reg .f32 s, d2, n2, nn2, y0, nd2, t, y, ny, q0, r, q;
        setp.ge.f32 big, $2, 0f5F800000;
        selp.f32 s, 0f1F800000, 0f3F800000, big;
        mul.rn.f32 d2, $2, s;
        min.f32 d2, d2, 0f7F7FFFFF;
        mul.rn.f32 n2, $1, s;
        rcp.approx.ftz.f32 y0, d2;
        neg.f32 nd2, d2;
        fma.rn.f32 t, nd2, y0, 0f3F800000;
        fma.rn.f32 y, y0, t, y0;
        mul.rn.f32 q0, n2, y;
        neg.f32 nn2, n2;
        fma.rn.f32 r, d2, q0, nn2;
        neg.f32 ny, y;
        fma.rn.f32 q, r, ny, q0;
        setp.eq.f32 pinf, $1, 0f7F800000;
        selp.f32 $0, $1, q, pinf;
        }""",
        "=r,r,r", [n, d], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _ssq_scales(amx):
    """Powers of two (up [ROWS, 1], down [ROWS]) that put a row of absmax ``amx`` in fixed-point range
    for the exact int64 sum of squares (reference.sum_squares): x * up is summed, then scaled by down^2."""
    t = tl.minimum(tl.maximum(148 - tl.maximum(amx.to(tl.int32, bitcast=True) >> 23, 1), -126), 126)
    up = ((t + 127) << 23).to(tl.float32, bitcast=True)[:, None]
    down = ((127 - t) << 23).to(tl.float32, bitcast=True)
    return up, down


@triton.jit
def _rstd(ssq, down, kf, eps, ROWS: tl.constexpr):
    """1 / sqrt(mean of squares + eps) [ROWS, 1] from the fixed-point sum ``ssq`` (IEEE ops throughout)."""
    ms = tl.math.div_rn((ssq.to(tl.float32) * down) * down, kf)
    return tl.math.div_rn(tl.full([ROWS], 1.0, tl.float32), tl.math.sqrt_rn(ms + eps))[:, None]


@triton.jit
def _produce(x_rows, offs, mask, w_ptr, rstd, inter, PRODUCER: tl.constexpr, SOFT: tl.constexpr):
    """The float32 value h at columns ``offs`` of the rows ``x_rows`` points at (0 where ``mask`` is
    False). ``x_rows`` and ``rstd`` carry the row dimension (size 1 elsewhere), ``offs`` the columns."""
    if PRODUCER == 1:  # RMSNorm: (x * rstd) * w
        h = _rms_h(_f32(tl.load(x_rows + offs, mask=mask, other=0.0), SOFT), rstd, w_ptr, offs, inter, SOFT)
    elif PRODUCER == 2:  # SiLU(gate) * up; gate = columns [0, I), up = [I, 2I)
        h = _silu_mul(_f32(tl.load(x_rows + offs, mask=mask, other=0.0), SOFT),
                      _f32(tl.load(x_rows + inter + offs, mask=mask, other=0.0), SOFT), SOFT)
    else:
        h = _f32(tl.load(x_rows + offs, mask=mask, other=0.0), SOFT)
    return h


@triton.jit
def _quant_rows(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, KIN, NWIN, stride_xm, stride_qm, inter, kf, eps,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr, ONE_CHUNK: tl.constexpr, SCATTER: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr,
    TAIL: tl.constexpr,
):
    """A tile of ROWS rows, [pid*ROWS, pid*ROWS + ROWS), of q [M_PAD, KOUT] and scale [M_PAD].

    Rows >= M read as zeros (q = 0, scale = ABSMAX_FLOOR / QMAX: what the reference gives a zero row),
    so every output element is written. Columns: L == 0 -> q[:, j] from column j (zero for j >= K);
    L > 0 -> the lifted layout: slid column 4*win + lane holds input column g*L + 2*w + lane with
    g = win // (L/2 - 1), w = win % (L/2 - 1), zero where that is >= K.
    For RMSNORM, ``inter`` is K (the weight's length); for SILU_MUL it is I (where `up` starts).

    ONE_CHUNK: h of the whole row stays in registers between the absmax and the quantization, as
    one tile of BLOCK_K columns plus, if BLOCK_K2 > 0, a second of BLOCK_K2 (a row of 18944 is
    16384 + 4096 lanes, not 32768). Otherwise h is produced twice, chunk by chunk.
    Lifting: SCATTER writes each quantized input column to its one or two slid columns (no second
    production of h, 2-byte pair stores); otherwise each window reads its four columns again (4-byte loads,
    h produced again for every window: 2(L-2)/L times the columns). KIN is how many input columns
    pass 2 walks: K for a scatter (slid columns whose source is >= K are zeroed apart, TAIL at a
    time), KOUT for a plain row (its padding columns read as zeros).
    """
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    live = (rows < M)[:, None]
    rows64 = rows.to(tl.int64)
    x_rows = x_ptr + rows64[:, None] * stride_xm          # [ROWS, 1]
    offs_k = tl.arange(0, BLOCK_K)[None, :]                 # [1, BLOCK_K]
    offs_b = BLOCK_K + tl.arange(0, BLOCK_K2 if BLOCK_K2 > 0 else 1)[None, :]  # the second tile

    if PRODUCER == 1:  # pass 0: rstd from the fixed-point sum of squares (reference.sum_squares)
        if ONE_CHUNK:
            x_all = _f32(tl.load(x_rows + offs_k, mask=live & (offs_k < K), other=0.0), SOFT)
            amx = tl.max(tl.abs(x_all), axis=1)
            if BLOCK_K2 > 0:
                x_b = _f32(tl.load(x_rows + offs_b, mask=live & (offs_b < K), other=0.0), SOFT)
                amx = tl.maximum(amx, tl.max(tl.abs(x_b), axis=1))
        else:
            accx = tl.zeros([ROWS, BLOCK_K], dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                offs = k0 + offs_k
                accx = tl.maximum(accx, tl.abs(_f32(tl.load(x_rows + offs, mask=live & (offs < K), other=0.0), SOFT)))
            amx = tl.max(accx, axis=1)
        up, down = _ssq_scales(amx)
        if ONE_CHUNK:
            xs = x_all * up
            ssq = tl.sum((xs * xs).to(tl.int64), axis=1)
            if BLOCK_K2 > 0:
                xs_b = x_b * up
                ssq = ssq + tl.sum((xs_b * xs_b).to(tl.int64), axis=1)
        else:
            acc64 = tl.zeros([ROWS, BLOCK_K], dtype=tl.int64)
            for k0 in range(0, K, BLOCK_K):
                offs = k0 + offs_k
                xs = _f32(tl.load(x_rows + offs, mask=live & (offs < K), other=0.0), SOFT) * up
                acc64 = acc64 + (xs * xs).to(tl.int64)
            ssq = tl.sum(acc64, axis=1)
        rstd = _rstd(ssq, down, kf, eps, ROWS)
    else:
        rstd = tl.full([ROWS, 1], 1.0, tl.float32)

    # pass 1: absmax of h over each row
    if ONE_CHUNK:
        if PRODUCER == 1:  # x is already in registers
            h_all = _rms_h(x_all, rstd, w_ptr, offs_k, K, SOFT)
        else:
            h_all = _produce(x_rows, offs_k, live & (offs_k < K), w_ptr, rstd, inter, PRODUCER, SOFT)
        amax = tl.max(tl.abs(h_all), axis=1)
        if BLOCK_K2 > 0:
            if PRODUCER == 1:
                h_b = _rms_h(x_b, rstd, w_ptr, offs_b, K, SOFT)
            else:
                h_b = _produce(x_rows, offs_b, live & (offs_b < K), w_ptr, rstd, inter, PRODUCER, SOFT)
            amax = tl.maximum(amax, tl.max(tl.abs(h_b), axis=1))
    else:
        accm = tl.zeros([ROWS, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + offs_k
            h = _produce(x_rows, offs, live & (offs < K), w_ptr, rstd, inter, PRODUCER, SOFT)
            accm = tl.maximum(accm, tl.abs(h))
        amax = tl.max(accm, axis=1)
    amax = tl.maximum(amax, FLOOR)
    inv = tl.math.div_rn(tl.full([ROWS], QMAX, tl.float32), amax)
    tl.store(s_ptr + rows, tl.math.div_rn(amax, tl.full([ROWS], QMAX, tl.float32)), mask=rows < M_PAD)

    # pass 2: quantize (and lift) into q
    keep = (rows < M_PAD)[:, None]
    q_rows = q_ptr + rows64[:, None] * stride_qm            # [ROWS, 1]
    if L == 0 or SCATTER:
        if ONE_CHUNK:
            _emit(q_rows, 0, _quantize(h_all * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K)
            if BLOCK_K2 > 0:
                _emit(q_rows, BLOCK_K, _quantize(h_b * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K2)
        else:
            for k0 in range(0, KIN, BLOCK_K):
                offs = k0 + offs_k
                h = _produce(x_rows, offs, live & (offs < K), w_ptr, rstd, inter, PRODUCER, SOFT)
                _emit(q_rows, k0, _quantize(h * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K)
        if L > 0:
            # Zeros where a slid column's source is >= K: in the windows of the group K falls in and
            # after the last window, up to KOUT (a multiple of 32): fewer than TAIL columns from p0.
            p = (K // L) * (2 * L - 4) + tl.arange(0, TAIL)[None, :]  # a group's windows: 2L - 4 columns
            src = _slid_source(p // 4, p % 4, L)
            tl.store(q_rows + p, tl.zeros([ROWS, TAIL], dtype=q_ptr.dtype.element_ty),
                     mask=keep & (p < KOUT) & (src >= K))
    else:
        lane = tl.arange(0, 4)[None, None, :]              # [1, 1, 4]
        offs_w = tl.arange(0, BLOCK_W)[None, :, None]      # [1, BLOCK_W, 1]
        x_rows3 = x_rows[:, :, None]
        q_rows3 = q_rows[:, :, None]
        live3 = live[:, :, None]
        keep3 = keep[:, :, None]
        rstd3 = rstd[:, :, None]
        inv3 = inv[:, None, None]
        for w0 in range(0, NWIN, BLOCK_W):
            win = w0 + offs_w
            src = _slid_source(win, lane, L)                # [1, BLOCK_W, 4]
            h = _produce(x_rows3, src, live3 & (src < K), w_ptr, rstd3, inter, PRODUCER, SOFT)
            dst = win * 4 + lane
            tl.store(q_rows3 + dst, _quantize(h * inv3, QFP8, SOFT), mask=keep3 & (dst < KOUT))


@triton.jit
def _slid_source(win, lane, L: tl.constexpr):
    """The input column slid column 4*win + lane holds: g*L + 2*w + lane, g = win // (L/2 - 1),
    w = win % (L/2 - 1) (the layout of ``sparsify.lift``)."""
    NW: tl.constexpr = L // 2 - 1
    g = win // NW
    return g * L + 2 * (win - g * NW) + lane


@triton.jit
def _rms_h(x, rstd, w_ptr, offs, K, SOFT: tl.constexpr):
    """RMSNorm's h = (x * rstd) * w for float32 x already in registers."""
    return (x * rstd) * _f32(tl.load(w_ptr + offs, mask=offs < K, other=0.0), SOFT)


@triton.jit
def _emit(q_rows, k0, q, keep, KIN, L: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Store q, the quantized input columns [k0, k0 + BLOCK) (those < KIN), of ROWS rows.

    L == 0: at the same columns. Lifted: columns come in pairs (2p, 2p + 1); pair j of group g goes
    to window j (lanes 0-1) unless it is the group's last pair, and to window j - 1 (lanes 2-3)
    unless it is the first. The pair is the innermost dimension of a [ROWS, BLOCK/2, 2] view, so
    each store writes two contiguous bytes (column-wise byte stores cost twice the instructions).
    """
    if L == 0:
        k = k0 + tl.arange(0, BLOCK)[None, :]
        tl.store(q_rows + k, q, mask=keep & (k < KIN))
    else:
        NW: tl.constexpr = L // 2 - 1
        q3 = tl.reshape(q, [ROWS, BLOCK // 2, 2])
        pair = k0 // 2 + tl.arange(0, BLOCK // 2)[None, :, None]     # [1, BLOCK/2, 1]
        lane = tl.arange(0, 2)[None, None, :]                        # [1, 1, 2]
        g = pair // (L // 2)
        j = pair - g * (L // 2)
        base = g * (4 * NW) + 4 * j                                  # window j, lane 0
        # Per pair, so the mask provably covers both bytes. With K odd, the last pair's second column
        # (>= K, h = 0) stores a 0 where the tail also writes one: same value, harmless.
        m = keep[:, :, None] & (pair < (KIN + 1) // 2)
        rows3 = q_rows[:, :, None]
        tl.store(rows3 + (base + lane), q3, mask=m & (j < NW))
        tl.store(rows3 + (base - 2 + lane), q3, mask=m & (j > 0))


@triton.jit
def quant_kernel(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, KIN, NWIN, stride_xm, stride_qm, inter, kf, eps,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr, ONE_CHUNK: tl.constexpr, SCATTER: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr,
    TAIL: tl.constexpr,
):
    """The GPU entry: K, KOUT, KIN, NWIN are run-time values (one compiled variant serves every K)."""
    _quant_rows(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, NWIN, stride_xm, stride_qm, inter, kf, eps,
                QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, ONE_CHUNK, SCATTER, BLOCK_K, BLOCK_K2, BLOCK_W, ROWS, TAIL)


@triton.jit
def quant_kernel_static(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K: tl.constexpr, KOUT: tl.constexpr, KIN: tl.constexpr, NWIN: tl.constexpr, stride_xm, stride_qm,
    inter, kf, eps, QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr, ONE_CHUNK: tl.constexpr, SCATTER: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr,
    TAIL: tl.constexpr,
):
    """The interpreter entry: the loop bounds are constexpr because the Triton 3.6 interpreter
    cannot take a run-time value as a ``range`` bound with numpy >= 2.4 (int() of a 1-element
    array is an error there). Same body as ``quant_kernel``."""
    _quant_rows(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, NWIN, stride_xm, stride_qm, inter, kf, eps,
                QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, ONE_CHUNK, SCATTER, BLOCK_K, BLOCK_K2, BLOCK_W, ROWS, TAIL)


# ------------------------------------------------------------------------------------------------
# Persistent programs with the next row tile's loads in flight (config key PERSIST)
# ------------------------------------------------------------------------------------------------

@triton.jit
def _p_load(x_ptr, tile, M, stride_xm, inter, K, UP: tl.constexpr, ROWS: tl.constexpr,
            BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_K3: tl.constexpr):
    """The raw loads of row tile ``tile`` (rows tile*ROWS ...): columns [0, BLOCK_K), then
    BLOCK_K2 and BLOCK_K3 more (absent when 0), masked at K and at rows >= M (zeros, as
    ``_quant_rows`` loads them). UP: also the `up` half at +inter (SiLU). Returns
    (a, a_up, b, b_up, c, c_up); absent tiles / halves are [1, 1] zero placeholders."""
    rows = tile * ROWS + tl.arange(0, ROWS)
    live = (rows < M)[:, None]
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    dummy = tl.zeros([1, 1], dtype=x_ptr.dtype.element_ty)
    oa = tl.arange(0, BLOCK_K)[None, :]
    ma = live & (oa < K)
    a = tl.load(x_rows + oa, mask=ma, other=0.0)
    au = dummy
    if UP:
        au = tl.load(x_rows + inter + oa, mask=ma, other=0.0)
    b = dummy
    bu = dummy
    if BLOCK_K2 > 0:
        ob = BLOCK_K + tl.arange(0, BLOCK_K2)[None, :]
        mb = live & (ob < K)
        b = tl.load(x_rows + ob, mask=mb, other=0.0)
        if UP:
            bu = tl.load(x_rows + inter + ob, mask=mb, other=0.0)
    c = dummy
    cu = dummy
    if BLOCK_K3 > 0:
        oc = BLOCK_K + BLOCK_K2 + tl.arange(0, BLOCK_K3)[None, :]
        mc = live & (oc < K)
        c = tl.load(x_rows + oc, mask=mc, other=0.0)
        if UP:
            cu = tl.load(x_rows + inter + oc, mask=mc, other=0.0)
    return a, au, b, bu, c, cu


@triton.jit
def _p_w(w_ptr, K, SOFT: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr, BLOCK_K3: tl.constexpr):
    """The RMSNorm weight as float32 tiles (HOIST_W: loaded once per program), as ``_rms_h`` loads it."""
    oa = tl.arange(0, BLOCK_K)[None, :]
    wa = _f32(tl.load(w_ptr + oa, mask=oa < K, other=0.0), SOFT)
    wb = wa
    wc = wa
    if BLOCK_K2 > 0:
        ob = BLOCK_K + tl.arange(0, BLOCK_K2)[None, :]
        wb = _f32(tl.load(w_ptr + ob, mask=ob < K, other=0.0), SOFT)
    if BLOCK_K3 > 0:
        oc = BLOCK_K + BLOCK_K2 + tl.arange(0, BLOCK_K3)[None, :]
        wc = _f32(tl.load(w_ptr + oc, mask=oc < K, other=0.0), SOFT)
    return wa, wb, wc


@triton.jit
def _p_h(raw, raw_up, w, w_ptr, offs, rstd, K, PRODUCER: tl.constexpr, SOFT: tl.constexpr, HOIST_W: tl.constexpr):
    """h of one tile from its raw loads: ``_produce`` (and ``_rms_h``) op for op. For RMSNorm,
    ``raw`` is x already converted to float32."""
    if PRODUCER == 1:
        if HOIST_W:
            h = (raw * rstd) * w
        else:
            h = _rms_h(raw, rstd, w_ptr, offs, K, SOFT)
    elif PRODUCER == 2:
        h = _silu_mul(_f32(raw, SOFT), _f32(raw_up, SOFT), SOFT)
    else:
        h = _f32(raw, SOFT)
    return h


@triton.jit
def _p_row(a, au, b, bu, c, cu, wa, wb, wc, tile, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm, kf, eps,
           QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
           PRODUCER: tl.constexpr, SOFT: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr,
           BLOCK_K3: tl.constexpr, ROWS: tl.constexpr, TAIL: tl.constexpr, HOIST_W: tl.constexpr):
    """Row tile ``tile`` of q and scale from its raw loads: ``_quant_rows``'s ONE_CHUNK passes 0-2
    (dense, or lifted by SCATTER), op for op; the tiles only split the same columns differently."""
    rows = tile * ROWS + tl.arange(0, ROWS)
    oa = tl.arange(0, BLOCK_K)[None, :]
    ob = BLOCK_K + tl.arange(0, BLOCK_K2 if BLOCK_K2 > 0 else 1)[None, :]
    oc = BLOCK_K + BLOCK_K2 + tl.arange(0, BLOCK_K3 if BLOCK_K3 > 0 else 1)[None, :]
    if PRODUCER == 1:  # pass 0: rstd from the fixed-point sum of squares
        a = _f32(a, SOFT)
        amx = tl.max(tl.abs(a), axis=1)
        if BLOCK_K2 > 0:
            b = _f32(b, SOFT)
            amx = tl.maximum(amx, tl.max(tl.abs(b), axis=1))
        if BLOCK_K3 > 0:
            c = _f32(c, SOFT)
            amx = tl.maximum(amx, tl.max(tl.abs(c), axis=1))
        up, down = _ssq_scales(amx)
        xs = a * up
        ssq = tl.sum((xs * xs).to(tl.int64), axis=1)
        if BLOCK_K2 > 0:
            xs_b = b * up
            ssq = ssq + tl.sum((xs_b * xs_b).to(tl.int64), axis=1)
        if BLOCK_K3 > 0:
            xs_c = c * up
            ssq = ssq + tl.sum((xs_c * xs_c).to(tl.int64), axis=1)
        rstd = _rstd(ssq, down, kf, eps, ROWS)
    else:
        rstd = tl.full([ROWS, 1], 1.0, tl.float32)
    # pass 1: absmax of h
    ha = _p_h(a, au, wa, w_ptr, oa, rstd, K, PRODUCER, SOFT, HOIST_W)
    amax = tl.max(tl.abs(ha), axis=1)
    hb = ha
    hc = ha
    if BLOCK_K2 > 0:
        hb = _p_h(b, bu, wb, w_ptr, ob, rstd, K, PRODUCER, SOFT, HOIST_W)
        amax = tl.maximum(amax, tl.max(tl.abs(hb), axis=1))
    if BLOCK_K3 > 0:
        hc = _p_h(c, cu, wc, w_ptr, oc, rstd, K, PRODUCER, SOFT, HOIST_W)
        amax = tl.maximum(amax, tl.max(tl.abs(hc), axis=1))
    amax = tl.maximum(amax, FLOOR)
    inv = tl.math.div_rn(tl.full([ROWS], QMAX, tl.float32), amax)
    tl.store(s_ptr + rows, tl.math.div_rn(amax, tl.full([ROWS], QMAX, tl.float32)), mask=rows < M_PAD)
    # pass 2: quantize (and scatter-lift) into q
    keep = (rows < M_PAD)[:, None]
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    _emit(q_rows, 0, _quantize(ha * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K)
    if BLOCK_K2 > 0:
        _emit(q_rows, BLOCK_K, _quantize(hb * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K2)
    if BLOCK_K3 > 0:
        _emit(q_rows, BLOCK_K + BLOCK_K2, _quantize(hc * inv[:, None], QFP8, SOFT), keep, KIN, L, ROWS, BLOCK_K3)
    if L > 0:  # zeros where a slid column's source is >= K (as in _quant_rows)
        p = (K // L) * (2 * L - 4) + tl.arange(0, TAIL)[None, :]
        src = _slid_source(p // 4, p % 4, L)
        tl.store(q_rows + p, tl.zeros([ROWS, TAIL], dtype=q_ptr.dtype.element_ty),
                 mask=keep & (p < KOUT) & (src >= K))


@triton.jit
def _p_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps, pid, G, n_iter,
            QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
            PRODUCER: tl.constexpr, SOFT: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr,
            BLOCK_K3: tl.constexpr, ROWS: tl.constexpr, TAIL: tl.constexpr, HOIST_W: tl.constexpr):
    UP: tl.constexpr = PRODUCER == 2
    if HOIST_W:
        wa, wb, wc = _p_w(w_ptr, K, SOFT, BLOCK_K, BLOCK_K2, BLOCK_K3)
    else:
        wa = tl.zeros([1, 1], dtype=tl.float32)
        wb = wa
        wc = wa
    tile = pid
    a, au, b, bu, c, cu = _p_load(x_ptr, tile, M, stride_xm, inter, K, UP, ROWS, BLOCK_K, BLOCK_K2, BLOCK_K3)
    for _ in range(0, n_iter):
        # the next tile's loads first (past the last tile: rows >= M, masked): they stay in flight
        # while this tile is reduced, quantized and stored
        na, nau, nb, nbu, nc, ncu = _p_load(x_ptr, tile + G, M, stride_xm, inter, K, UP, ROWS,
                                            BLOCK_K, BLOCK_K2, BLOCK_K3)
        _p_row(a, au, b, bu, c, cu, wa, wb, wc, tile, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, KIN, stride_qm, kf, eps,
               QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BLOCK_K, BLOCK_K2, BLOCK_K3, ROWS, TAIL, HOIST_W)
        a, au, b, bu, c, cu = na, nau, nb, nbu, nc, ncu
        tile = tile + G


@triton.jit
def quant_kernel_persist(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_K2: tl.constexpr,
    BLOCK_K3: tl.constexpr, ROWS: tl.constexpr, TAIL: tl.constexpr, HOIST_W: tl.constexpr, N_ITER: tl.constexpr,
):
    """``quant_kernel`` for rows held whole in registers (ONE_CHUNK), dense or lifted by SCATTER
    (L > 0 means SCATTER here), as persistent programs: program pid of G handles the row tiles
    pid, pid + G, ... (ROWS rows each) and issues the loads of its next tile before it reduces,
    quantizes and stores the current one (register double buffering: loads stay in flight while
    the SM computes). The row holds up to three power-of-two tiles (BLOCK_K, BLOCK_K2, BLOCK_K3;
    0 = absent). Same outputs, bit for bit, and every element of q [M_PAD, KOUT] and scale [M_PAD]
    written. HOIST_W (RMSNorm): the weight is loaded once per program, not per row.
    N_ITER > 0 (the interpreter, whose ``range`` needs a constant): every program runs N_ITER
    iterations (tiles past the last are masked off); 0: cdiv(tiles - pid, G)."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    # (the interpreter turns a variable assigned in both arms of an `if` into a 1-element tensor,
    # which `range` refuses: so the loop bound goes straight into the call)
    if N_ITER > 0:
        _p_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
                pid, G, N_ITER, QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BLOCK_K, BLOCK_K2, BLOCK_K3, ROWS, TAIL,
                HOIST_W)
    else:
        _p_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, KIN, stride_xm, stride_qm, inter, kf, eps,
                pid, G, tl.cdiv(tl.cdiv(M_PAD, ROWS) - pid, G), QMAX, FLOOR, QFP8, L, PRODUCER, SOFT,
                BLOCK_K, BLOCK_K2, BLOCK_K3, ROWS, TAIL, HOIST_W)


# ------------------------------------------------------------------------------------------------
# Lifted rows held as pair tiles (config key BLOCK_G): windows built in registers, word stores
# ------------------------------------------------------------------------------------------------

@triton.jit
def _g_cols(g0, BU: tl.constexpr, i: tl.constexpr, j: tl.constexpr, L: tl.constexpr, GQ: tl.constexpr):
    """Input columns of pair j, (g*L + 2j, g*L + 2j + 1), of group g = g0 + GQ*u + i of each unit
    u < BU: [1, BU, 2]."""
    g = g0 + GQ * tl.arange(0, BU)[None, :, None] + i
    return g * L + 2 * j + tl.arange(0, 2)[None, None, :]


@triton.jit
def _g_load(x_rows, g0, K, live, L: tl.constexpr, BU: tl.constexpr, GQ: tl.constexpr):
    """The raw values of each pair of the BU units of GQ groups from group g0 of the rows ``x_rows``
    points at ([ROWS, 1, 1]): a tuple of GQ * L/2 tiles [ROWS, BU, 2] (group i of a unit, pair j at
    i*L/2 + j), zeros at columns >= K and where ``live`` is False. L = 8: one [ROWS, BU, 8] load a
    group (16-byte accesses) unzipped in registers; otherwise a 4-byte load per pair (a group of
    2L bytes is only 4-byte aligned)."""
    out = ()
    for i in tl.static_range(GQ):
        if L == 8:
            g = g0 + GQ * tl.arange(0, BU)[None, :, None] + i
            c = g * L + tl.arange(0, 8)[None, None, :]
            raw = tl.load(x_rows + c, mask=live & (c < K), other=0.0)
            # [.., 8] = pairs (jhi, jlo) of two columns e -> [.., e, jhi, jlo]; splitting jlo then jhi
            t = tl.permute(tl.reshape(raw, [raw.shape[0], BU, 2, 2, 2]), (0, 1, 4, 2, 3))
            even, odd = tl.split(t)                 # j = 0, 2 | j = 1, 3: [.., e, jhi]
            p0, p2 = tl.split(even)
            p1, p3 = tl.split(odd)
            out = out + (p0, p1, p2, p3)
        else:
            for j in tl.static_range(L // 2):
                c = _g_cols(g0, BU, i, j, L, GQ)
                out = out + (tl.load(x_rows + c, mask=live & (c < K), other=0.0),)
    return out


@triton.jit
def _g_f32(raw, SOFT: tl.constexpr):
    out = ()
    for j in tl.static_range(len(raw)):
        out = out + (_f32(raw[j], SOFT),)
    return out


@triton.jit
def _g_absmax(t):
    """max |v| over the tiles of the tuple ``t`` (tiles of one shape [ROWS, BU, 2]), elementwise:
    [ROWS, BU, 2]; ``_g_rows`` reduces it (with the other group tiles') to one value a row."""
    m = tl.abs(t[0])
    for j in tl.static_range(1, len(t)):
        m = tl.maximum(m, tl.abs(t[j]))
    return m


@triton.jit
def _g_ssq(xs, up):
    """The fixed-point squares (``_ssq_scales``'s ``up`` [ROWS, 1, 1]) of the tuple ``xs`` summed
    elementwise as int64: [ROWS, BU, 2]. int64 addition is exact, so any order of the sums (here and
    in ``_g_rows``) gives the reference's sum."""
    v = xs[0] * up
    acc = (v * v).to(tl.int64)
    for j in tl.static_range(1, len(xs)):
        v = xs[j] * up
        acc = acc + (v * v).to(tl.int64)
    return acc


@triton.jit
def _g_fold(m, n: tl.constexpr, SUM: tl.constexpr):
    """[ROWS, BU, 2] -> [ROWS, n, 2] (n divides BU): the max (or SUM) of units u, u + n, u + 2n, ...
    A thread holds units t, t + threads, ... of a tile, so for n >= threads the fold stays in the
    thread's registers (no shuffle, no barrier)."""
    if m.shape[1] == n:
        r = m
    elif SUM:
        r = tl.sum(tl.reshape(m, [m.shape[0], m.shape[1] // n, n, 2]), axis=1)
    else:
        r = tl.max(tl.reshape(m, [m.shape[0], m.shape[1] // n, n, 2]), axis=1)
    return r


@triton.jit
def _g_rows(ma, mb, mc, HAS_B: tl.constexpr, HAS_C: tl.constexpr, SUM: tl.constexpr, FOLD: tl.constexpr):
    """The max (or SUM) per row of the elementwise parts of up to three group tiles (units
    BU1 >= BU2 >= BU3, powers of two). FOLD: the larger tiles are folded onto the smallest one
    first, so a row takes one block-wide reduction, not one a tile (RMSNorm, three reductions a
    row: two-tile rows had twice the barriers and went from 88-93 to 96-101 % of copy with the fold
    at 8:10 K = 3072 / 3584 on the H100; SiLU lost 4 points at 8:10 I = 13824, where the
    reductions of separate tiles overlap its math). Same value either way (max; exact int64 sums)."""
    if FOLD:
        m = ma
        if HAS_C:
            n: tl.constexpr = mc.shape[1]
            m = _g_comb(_g_comb(_g_fold(ma, n, SUM), _g_fold(mb, n, SUM), SUM), mc, SUM)
        elif HAS_B:
            m = _g_comb(_g_fold(ma, mb.shape[1], SUM), mb, SUM)
        r = _g_reduce(m, SUM)
    else:
        r = _g_reduce(ma, SUM)
        if HAS_B:
            r = _g_comb(r, _g_reduce(mb, SUM), SUM)
        if HAS_C:
            r = _g_comb(r, _g_reduce(mc, SUM), SUM)
    return r


@triton.jit
def _g_comb(a, b, SUM: tl.constexpr):
    """a + b (SUM) or max(a, b)."""
    if SUM:
        r = a + b
    else:
        r = tl.maximum(a, b)
    return r


@triton.jit
def _g_reduce(m, SUM: tl.constexpr):
    """[ROWS, BU, 2] -> [ROWS]: max or sum (block-wide)."""
    if SUM:
        r = tl.sum(tl.sum(m, axis=2), axis=1)
    else:
        r = tl.max(tl.max(m, axis=2), axis=1)
    return r


@triton.jit
def _g_h(raw, raw_up, xs, ws, rstd, w_ptr, g0, K, L: tl.constexpr, BU: tl.constexpr, GQ: tl.constexpr,
         PRODUCER: tl.constexpr, SOFT: tl.constexpr, HOIST_W: tl.constexpr):
    """h of each pair tile (``_produce``'s arithmetic, op for op). RMSNorm: ``xs`` is x in float32,
    ``ws`` the weight's tiles when HOIST_W (``_g_w``), else the weight is loaded here."""
    out = ()
    for i in tl.static_range(GQ):
        for j in tl.static_range(L // 2):
            if PRODUCER == 1 and HOIST_W:
                h = (xs[i * (L // 2) + j] * rstd) * ws[i * (L // 2) + j]
            elif PRODUCER == 1:
                h = _rms_h(xs[i * (L // 2) + j], rstd, w_ptr, _g_cols(g0, BU, i, j, L, GQ), K, SOFT)
            elif PRODUCER == 2:
                h = _silu_mul(_f32(raw[i * (L // 2) + j], SOFT), _f32(raw_up[i * (L // 2) + j], SOFT), SOFT)
            else:
                h = _f32(raw[i * (L // 2) + j], SOFT)
            out = out + (h,)
    return out


@triton.jit
def _g_cat(a, b):
    """[ROWS, BG, n] and [ROWS, BG, n] -> [ROWS, BG, 2n]: a's n values, then b's (two pair tiles give
    a window's bytes). The join gives [.., value, which]; the permute puts all of a first."""
    n: tl.constexpr = a.shape[2]
    return tl.reshape(tl.permute(tl.join(a, b), (0, 1, 3, 2)), [a.shape[0], a.shape[1], 2 * n])


@triton.jit
def _g_emit(q_rows, hs, inv, keep, g0, KOUT, zero, L: tl.constexpr, BU: tl.constexpr, GQ: tl.constexpr,
            QFP8: tl.constexpr, SOFT: tl.constexpr):
    """Quantize the pair tiles ``hs`` and write the windows of the BU units of GQ groups from group
    g0: window w of group g is its pairs w and w + 1, slid columns 4*(g*(L/2 - 1) + w) .. + 3. A
    unit's GQ*(L/2 - 1) windows go out in the widest stores (16, 8 or 4 bytes) that divide them
    and their alignment: 16 with GQ = ``launch.pair_unit`` (narrow strided stores were the cost:
    H100, docs/PERF.md). Columns >= KOUT are not written (KOUT is a multiple of 32, so a store is
    all in or all out). FP8: windows are built as int32 words from 16-bit pairs (``_fp8_pair16``;
    ``zero`` is the kernel's runtime 0 it adds)."""
    H: tl.constexpr = L // 2
    NW: tl.constexpr = H - 1
    UB: tl.constexpr = GQ * NW * 4                               # bytes a unit writes
    CW: tl.constexpr = 16 if UB % 16 == 0 else (8 if UB % 8 == 0 else 4)  # store width: aligned, divides UB
    u = g0 // GQ + tl.arange(0, BU)[None, :, None]
    wins = ()
    if QFP8:
        p16 = ()
        for t in tl.static_range(GQ * H):
            x0, x1 = tl.split(hs[t] * inv)  # no clamp: as _quantize
            p16 = p16 + (_fp8_pair16(x0, x1, zero, SOFT),)
        for i in tl.static_range(GQ):
            for w in tl.static_range(NW):
                wins = wins + ((p16[i * H + w] | (p16[i * H + w + 1] << 16))[:, :, None],)
        w_rows = q_rows.to(tl.pointer_type(tl.int32), bitcast=True)  # windows are 4-byte aligned
        for c in tl.static_range(UB // CW):
            word = (u * UB + CW * c) // 4 + tl.arange(0, CW // 4)[None, None, :]
            tl.store(w_rows + word, _g_chunk(wins, c, CW // 4), mask=keep & (u * UB + CW * c < KOUT))
    else:
        q = ()
        for t in tl.static_range(GQ * H):
            q = q + (_quantize(hs[t] * inv, QFP8, SOFT),)
        for i in tl.static_range(GQ):
            for w in tl.static_range(NW):
                wins = wins + (_g_cat(q[i * H + w], q[i * H + w + 1]),)
        for c in tl.static_range(UB // CW):
            col = u * UB + CW * c + tl.arange(0, CW)[None, None, :]
            tl.store(q_rows + col, _g_chunk(wins, c, CW // 4).to(q_rows.dtype.element_ty, bitcast=True),
                     mask=keep & (u * UB + CW * c < KOUT))


@triton.jit
def _g_chunk(wins, c: tl.constexpr, N: tl.constexpr):
    """Windows N*c .. N*c + N - 1 of the tuple ``wins`` (N = 1, 2 or 4) joined along the last axis:
    one store's worth."""
    if N == 4:
        out = _g_cat(_g_cat(wins[4 * c], wins[4 * c + 1]), _g_cat(wins[4 * c + 2], wins[4 * c + 3]))
    elif N == 2:
        out = _g_cat(wins[2 * c], wins[2 * c + 1])
    else:
        out = wins[c]
    return out


@triton.jit
def _fp8_pair16(x0, x1, zero, SOFT: tl.constexpr):
    """The e4m3 bytes of float32 ``x0`` (low byte) and ``x1`` (high byte) as an int32 < 2**16:
    round to nearest even, as ``_quantize``. GPU: one cvt.rn.satfinite.e4m3x2 a pair, then + ``zero``
    (a kernel argument that is 0 at run time), a guard: when converted pairs were joined as fp8
    tensors, ptxas (Triton 3.6's) fused the conversions into the packing (F2FP ... PACK_AB_MERGE_C)
    and took the upper half of words whose pair two windows share from a wrong register (H100,
    2026-12-06). Packed as integers here, its SASS merges with RZ only, with or without the guard,
    and the bytes are checked on the GPU (tests/test_kernels_gpu.py). Interpreter: ``_fp8_bits``."""
    if SOFT:
        r = (_fp8_bits(x0).to(tl.int32) & 0xFF) | ((_fp8_bits(x1).to(tl.int32) & 0xFF) << 8)
    else:
        r = tl.inline_asm_elementwise(
            """{
            .reg .b16 h;
            .reg .b32 w;
            cvt.rn.satfinite.e4m3x2.f32 h, $2, $1;
            cvt.u32.u16 w, h;
            add.u32 $0, w, $3;
            }""",
            "=r,r,r,r", [x0, x1, zero + tl.zeros_like(x0.to(tl.int32, bitcast=True))], dtype=tl.int32,
            is_pure=True, pack=1)
    return r


@triton.jit
def _fp8_bits(v):
    """The e4m3 bit pattern (int8) of float32 ``v`` (|v| <= 448 * (1 + 2**-23), ``_quantize``): round
    to nearest even, as the hardware conversion, in integer and float32 ops only: the pair kernel's
    FP8 bytes under the interpreter (``_fp8_pair16``), whose float8 conversion is not IEEE.
    |v| is rounded to the e4m3 grid (``_e4m3_grid``); a normal result's exponent and top 3 mantissa
    bits are then the byte (rebiased), a subnormal is |r| * 2**9."""
    r, sign = _e4m3_grid(v)
    rb = r.to(tl.int32, bitcast=True)
    mag = tl.where(rb >= (121 << 23), (rb >> 20) - 960, (r * 512.0).to(tl.int32))
    return (mag | ((sign >> 24) & 0x80)).to(tl.int8)


@triton.jit
def _g_tile_load(x_ptr, tile, M, stride_xm, inter, K, L: tl.constexpr, PRODUCER: tl.constexpr, BG: tl.constexpr,
                 BG2: tl.constexpr, BG3: tl.constexpr, GQ: tl.constexpr, GQ2: tl.constexpr, GQ3: tl.constexpr,
                 ROWS: tl.constexpr):
    """The raw loads of row tile ``tile`` (rows tile*ROWS ...) as pair tiles: (a, a_up, b, b_up, c,
    c_up), one ``_g_load`` tuple per group tile (BG, BG2, BG3; absent = a 1-tuple placeholder) and
    half (up: SiLU's, at +inter). Zeros at rows >= M and columns >= K."""
    rows = tile * ROWS + tl.arange(0, ROWS)
    live = (rows < M)[:, None, None]
    x_rows = x_ptr + rows.to(tl.int64)[:, None, None] * stride_xm   # [ROWS, 1, 1]
    dummy = (tl.zeros([1, 1, 1], dtype=tl.float32),)
    ra = _g_load(x_rows, 0, K, live, L, BG // GQ, GQ)
    ua = dummy
    rb = dummy
    ub = dummy
    rc = dummy
    uc = dummy
    if PRODUCER == 2:
        ua = _g_load(x_rows + inter, 0, K, live, L, BG // GQ, GQ)
    if BG2 > 0:
        rb = _g_load(x_rows, BG, K, live, L, BG2 // GQ2, GQ2)
        if PRODUCER == 2:
            ub = _g_load(x_rows + inter, BG, K, live, L, BG2 // GQ2, GQ2)
    if BG3 > 0:
        rc = _g_load(x_rows, BG + BG2, K, live, L, BG3 // GQ3, GQ3)
        if PRODUCER == 2:
            uc = _g_load(x_rows + inter, BG + BG2, K, live, L, BG3 // GQ3, GQ3)
    return ra, ua, rb, ub, rc, uc


@triton.jit
def _g_w(w_ptr, g0, K, L: tl.constexpr, BU: tl.constexpr, GQ: tl.constexpr, SOFT: tl.constexpr):
    """The RMSNorm weight at the pair tiles of ``_g_load`` (float32, [1, BU, 2] each), as
    ``_rms_h`` loads it: HOIST_W loads it once per persistent program."""
    out = ()
    for i in tl.static_range(GQ):
        for j in tl.static_range(L // 2):
            c = _g_cols(g0, BU, i, j, L, GQ)
            out = out + (_f32(tl.load(w_ptr + c, mask=c < K, other=0.0), SOFT),)
    return out


@triton.jit
def _g_tile(ra, ua, rb, ub, rc, uc, wa, wb, wc, tile, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, stride_qm, kf, eps,
            zero, QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
            PRODUCER: tl.constexpr, SOFT: tl.constexpr, BG: tl.constexpr, BG2: tl.constexpr, BG3: tl.constexpr,
            GQ: tl.constexpr, GQ2: tl.constexpr, GQ3: tl.constexpr, ROWS: tl.constexpr, HOIST_W: tl.constexpr):
    """q and scale of row tile ``tile`` from its raw loads (``_g_tile_load``): passes 0-2, the
    reference's arithmetic op for op. ``wa``/``wb``/``wc``: the hoisted weight (HOIST_W) or unused."""
    rows = tile * ROWS + tl.arange(0, ROWS)
    g2: tl.constexpr = BG
    g3: tl.constexpr = BG + BG2
    U1: tl.constexpr = BG // GQ
    U2: tl.constexpr = BG2 // GQ2
    U3: tl.constexpr = BG3 // GQ3
    xa = ra
    xb = rb
    xc = rc
    if PRODUCER == 1:  # pass 0: rstd from the fixed-point sum of squares (reference.sum_squares)
        xa = _g_f32(ra, SOFT)
        ma = _g_absmax(xa)
        mb = ma
        mc = ma
        if BG2 > 0:
            xb = _g_f32(rb, SOFT)
            mb = _g_absmax(xb)
        if BG3 > 0:
            xc = _g_f32(rc, SOFT)
            mc = _g_absmax(xc)
        up, down = _ssq_scales(_g_rows(ma, mb, mc, BG2 > 0, BG3 > 0, False, True))
        up = up[:, :, None]
        sa = _g_ssq(xa, up)
        sb = sa
        sc = sa
        if BG2 > 0:
            sb = _g_ssq(xb, up)
        if BG3 > 0:
            sc = _g_ssq(xc, up)
        rstd = _rstd(_g_rows(sa, sb, sc, BG2 > 0, BG3 > 0, True, True), down, kf, eps, ROWS)[:, :, None]
    else:
        rstd = tl.full([ROWS, 1, 1], 1.0, tl.float32)

    # pass 1: absmax of h
    ha = _g_h(ra, ua, xa, wa, rstd, w_ptr, 0, K, L, U1, GQ, PRODUCER, SOFT, HOIST_W)
    hb = ha
    hc = ha
    ma = _g_absmax(ha)
    mb = ma
    mc = ma
    if BG2 > 0:
        hb = _g_h(rb, ub, xb, wb, rstd, w_ptr, g2, K, L, U2, GQ2, PRODUCER, SOFT, HOIST_W)
        mb = _g_absmax(hb)
    if BG3 > 0:
        hc = _g_h(rc, uc, xc, wc, rstd, w_ptr, g3, K, L, U3, GQ3, PRODUCER, SOFT, HOIST_W)
        mc = _g_absmax(hc)
    amax = _g_rows(ma, mb, mc, BG2 > 0, BG3 > 0, False, PRODUCER == 1)
    amax = tl.maximum(amax, FLOOR)
    inv = tl.math.div_rn(tl.full([ROWS], QMAX, tl.float32), amax)
    tl.store(s_ptr + rows, tl.math.div_rn(amax, tl.full([ROWS], QMAX, tl.float32)), mask=rows < M_PAD)

    # pass 2: quantize and write the windows
    keep = (rows < M_PAD)[:, None, None]
    q_rows = q_ptr + rows.to(tl.int64)[:, None, None] * stride_qm
    inv3 = inv[:, None, None]
    _g_emit(q_rows, ha, inv3, keep, 0, KOUT, zero, L, U1, GQ, QFP8, SOFT)
    if BG2 > 0:
        _g_emit(q_rows, hb, inv3, keep, g2, KOUT, zero, L, U2, GQ2, QFP8, SOFT)
    if BG3 > 0:
        _g_emit(q_rows, hc, inv3, keep, g3, KOUT, zero, L, U3, GQ3, QFP8, SOFT)


@triton.jit
def _g_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, stride_xm, stride_qm, inter, kf, eps, zero, pid, G, n_iter,
            QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
            PRODUCER: tl.constexpr, SOFT: tl.constexpr, BG: tl.constexpr, BG2: tl.constexpr, BG3: tl.constexpr,
            GQ: tl.constexpr, GQ2: tl.constexpr, GQ3: tl.constexpr, ROWS: tl.constexpr, HOIST_W: tl.constexpr):
    """Row tiles pid, pid + G, ... (n_iter of them), each one's loads issued a tile ahead (``_p_loop``
    for pair tiles)."""
    dummy = (tl.zeros([1, 1, 1], dtype=tl.float32),)
    wa = dummy
    wb = dummy
    wc = dummy
    if HOIST_W:
        wa = _g_w(w_ptr, 0, K, L, BG // GQ, GQ, SOFT)
        if BG2 > 0:
            wb = _g_w(w_ptr, BG, K, L, BG2 // GQ2, GQ2, SOFT)
        if BG3 > 0:
            wc = _g_w(w_ptr, BG + BG2, K, L, BG3 // GQ3, GQ3, SOFT)
    tile = pid
    ra, ua, rb, ub, rc, uc = _g_tile_load(x_ptr, tile, M, stride_xm, inter, K, L, PRODUCER, BG, BG2, BG3, GQ, GQ2,
                                          GQ3, ROWS)
    for _ in range(0, n_iter):
        # the next tile's loads first (past the last tile: rows >= M, masked): in flight while this
        # tile is reduced, quantized and stored
        na, nua, nb, nub, nc, nuc = _g_tile_load(x_ptr, tile + G, M, stride_xm, inter, K, L, PRODUCER,
                                                 BG, BG2, BG3, GQ, GQ2, GQ3, ROWS)
        _g_tile(ra, ua, rb, ub, rc, uc, wa, wb, wc, tile, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, stride_qm, kf, eps,
                zero, QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BG, BG2, BG3, GQ, GQ2, GQ3, ROWS, HOIST_W)
        ra, ua, rb, ub, rc, uc = na, nua, nb, nub, nc, nuc
        tile = tile + G


@triton.jit
def quant_kernel_pairs(
    x_ptr, w_ptr, q_ptr, s_ptr,
    M, M_PAD, K, KOUT, stride_xm, stride_qm, inter, kf, eps, zero,
    QMAX: tl.constexpr, FLOOR: tl.constexpr, QFP8: tl.constexpr, L: tl.constexpr,
    PRODUCER: tl.constexpr, SOFT: tl.constexpr, BG: tl.constexpr, BG2: tl.constexpr, BG3: tl.constexpr,
    GQ: tl.constexpr, GQ2: tl.constexpr, GQ3: tl.constexpr, ROWS: tl.constexpr, PERSIST: tl.constexpr,
    HOIST_W: tl.constexpr, N_ITER: tl.constexpr,
):
    """``quant_kernel`` for a lifted row (L > 0) held whole in registers as pair tiles: for each pair
    position j < L/2 of a group, tiles [ROWS, units, 2] of its two columns (up to three group tiles
    of BG, BG2, BG3 groups; 0 = absent; together they cover every window up to KOUT). A thread holds
    whole units of GQ consecutive groups (config key UNIT; at ``launch.pair_unit`` the windows of a
    unit fill 16-byte stores), of GQ2 and GQ3 in the later tiles (smaller with SHRINK, so a row's
    rest is a unit a thread rather than padding: ``launch.tile_units``). h is produced once per input
    column, and each window (pairs j, j + 1 of a group) is joined in registers and written with the
    unit's other windows in the widest stores they fill, where the scatter (``_emit``) needs two
    2-byte stores a pair and index division. Same arithmetic op for op, so the same bits; every
    element of q [M_PAD, KOUT] and scale [M_PAD] is written (a window whose columns are >= K quantizes zeros).

    PERSIST (config key PERSIST > 0): persistent programs, program pid of G taking row tiles pid,
    pid + G, ... with the next tile's loads in flight (as ``quant_kernel_persist``); HOIST_W
    (RMSNorm, with PERSIST): the weight loaded once per program. N_ITER > 0 (the interpreter, whose
    ``range`` needs a constant): every program runs N_ITER iterations; 0: cdiv(tiles - pid, G).

    Narrow strided stores were the cost (H100, docs/PERF.md): 8:10 with four 4-byte window stores
    a group ran at 77 % of copy, with one 16-byte store 100 %; 6:8 (GQ = 4: three 16-byte stores
    for four groups) had three 4-byte stores a group. With L = 8 the loads are one 16-byte access a
    group, unzipped in registers; other L load each pair with a 4-byte access. FP8 pairs are
    converted in hardware and packed into words as integers (``_fp8_pair16``)."""
    pid = tl.program_id(0)
    if PERSIST:
        G = tl.num_programs(0)
        # (a bound assigned in both arms of an `if` becomes a tensor under the interpreter: see
        # quant_kernel_persist)
        if N_ITER > 0:
            _g_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, stride_xm, stride_qm, inter, kf, eps, zero,
                    pid, G, N_ITER, QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BG, BG2, BG3, GQ, GQ2, GQ3, ROWS, HOIST_W)
        else:
            _g_loop(x_ptr, w_ptr, q_ptr, s_ptr, M, M_PAD, K, KOUT, stride_xm, stride_qm, inter, kf, eps, zero,
                    pid, G, tl.cdiv(tl.cdiv(M_PAD, ROWS) - pid, G), QMAX, FLOOR, QFP8, L, PRODUCER, SOFT,
                    BG, BG2, BG3, GQ, GQ2, GQ3, ROWS, HOIST_W)
    else:
        ra, ua, rb, ub, rc, uc = _g_tile_load(x_ptr, pid, M, stride_xm, inter, K, L, PRODUCER, BG, BG2, BG3, GQ,
                                              GQ2, GQ3, ROWS)
        dummy = (tl.zeros([1, 1, 1], dtype=tl.float32),)
        _g_tile(ra, ua, rb, ub, rc, uc, dummy, dummy, dummy, pid, w_ptr, q_ptr, s_ptr, M_PAD, K, KOUT, stride_qm,
                kf, eps, zero, QMAX, FLOOR, QFP8, L, PRODUCER, SOFT, BG, BG2, BG3, GQ, GQ2, GQ3, ROWS, False)


@triton.jit
def dequant_kernel(
    acc_ptr, sa_ptr, sb_ptr, bias_ptr, out_ptr, M, N, stride_am, stride_om,
    HAS_BIAS: tl.constexpr, SOFT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out[m, n] = cast((acc[m, n] * sa[m]) * sb[n] (+ bias[n])), all in float32, one final cast."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    a = _f32(tl.load(acc_ptr + rows64[:, None] * stride_am + cols[None, :], mask=mask, other=0), SOFT)
    sa = _f32(tl.load(sa_ptr + rows, mask=rmask, other=0.0), SOFT)
    sb = _f32(tl.load(sb_ptr + cols, mask=cmask, other=0.0), SOFT)
    y = (a * sa[:, None]) * sb[None, :]
    if HAS_BIAS:
        y = y + _f32(tl.load(bias_ptr + cols, mask=cmask, other=0.0), SOFT)[None, :]
    _store_f32(out_ptr + rows64[:, None] * stride_om + cols[None, :], y, mask, SOFT)


@triton.jit
def _rope_heads(src, dst, dst_stride_h, c, s, keep, NH: tl.constexpr, BLOCK_H: tl.constexpr, D: tl.constexpr,
                ROTATE: tl.constexpr, SOFT: tl.constexpr):
    """NH heads of D values from ``src`` (contiguous heads) to ``dst`` (heads ``dst_stride_h`` apart),
    rotated (rotate-half: x1*c - x2*s | x2*c + x1*s, float32, no FMA) when ROTATE, else copied;
    nothing is stored where ``keep`` is False."""
    HALF: tl.constexpr = D // 2
    hh = tl.arange(0, BLOCK_H)[:, None]
    offs_d = tl.arange(0, HALF)[None, :]
    m = (hh < NH) & keep
    x1 = _f32(tl.load(src + hh * D + offs_d, mask=m, other=0.0), SOFT)
    x2 = _f32(tl.load(src + hh * D + HALF + offs_d, mask=m, other=0.0), SOFT)
    if ROTATE:
        r1 = x1 * c - x2 * s
        r2 = x2 * c + x1 * s
    else:
        r1 = x1
        r2 = x2
    _store_f32(dst + hh * dst_stride_h + offs_d, r1, m, SOFT)
    _store_f32(dst + hh * dst_stride_h + HALF + offs_d, r2, m, SOFT)


@triton.jit
def rope_cache_kernel(
    qkv_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, kc_ptr, vc_ptr,
    T, S, stride_row, stride_cb, stride_ch, stride_cs,
    H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, SOFT: tl.constexpr,
):
    """One token row (b, t) of qkv [B*T, (H + 2*HKV)*D]: rotate q and k (RoPE in float32, each
    product and sum rounded as torch's separate ops round them), write q to q [B*T, H*D], and k, v
    into the caches [B, HKV, S, D] at slot pos[t] — only if 0 <= pos[t] < S: a slot past the cache
    is never written (pos lives on the device, so the host cannot check it without a sync)."""
    row = tl.program_id(0)
    b = row // T
    t = row - b * T
    HALF: tl.constexpr = D // 2
    offs_d = tl.arange(0, HALF)[None, :]
    c = tl.load(cos_ptr + t * HALF + offs_d)
    s = tl.load(sin_ptr + t * HALF + offs_d)
    src = qkv_ptr + row.to(tl.int64) * stride_row
    p = tl.load(pos_ptr + t)
    in_cache = (p >= 0) & (p < S)
    at = b.to(tl.int64) * stride_cb + tl.where(in_cache, p, 0) * stride_cs
    _rope_heads(src, q_ptr + row.to(tl.int64) * (H * D), D, c, s, True, H, BLOCK_H, D, True, SOFT)
    _rope_heads(src + H * D, kc_ptr + at, stride_ch, c, s, in_cache, HKV, BLOCK_H, D, True, SOFT)
    _rope_heads(src + (H + HKV) * D, vc_ptr + at, stride_ch, c, s, in_cache, HKV, BLOCK_H, D, False, SOFT)


def interpreted() -> bool:
    """True when the kernels run under the Triton interpreter (decided when this module was imported)."""
    from triton.runtime.interpreter import InterpretedFunction  # noqa: PLC0415

    return isinstance(quant_kernel, InterpretedFunction)
