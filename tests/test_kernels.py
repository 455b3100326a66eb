"""Triton kernels vs the torch references, under the Triton interpreter on the CPU (conftest sets
TRITON_INTERPRET=1 without CUDA): bit-exact INT8 and FP8, every window L = 4..16, ragged K, odd M,
special rows, poisoned outputs, dequant variants, the fused producers, and the launch-config data.

Grids are tiny (the interpreter runs each program in Python); the launch configs below put all rows
of a case in one or two programs.
"""

import json
import math

import numpy as np
import pytest
import torch

from slidesparse.kernels import configs as C
from slidesparse.kernels import launch
from slidesparse.kernels import reference as R
from slidesparse.kernels import triton_kernels as tk
from slidesparse.ops import ReferenceOps
from slidesparse.pattern import Pattern
from slidesparse.quant import ABSMAX_FLOOR, dequant, qmax, torch_qdtype

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # exp(-g) -> inf on purpose

FP8 = torch.float8_e4m3fn
WINDOWS = [4, 6, 8, 10, 12, 14, 16]
ONE = {"BLOCK_K": 256, "BLOCK_W": 64, "ROWS": 16, "num_warps": 4}      # one chunk per row (K <= 256)
CHUNKED = {"BLOCK_K": 32, "BLOCK_W": 8, "ROWS": 8, "num_warps": 4}     # several chunks per row
SCATTER = {**ONE, "SCATTER": 1}                                     # lifted by scattered stores
SPLIT = {**CHUNKED, "BLOCK_K": 128, "SPLIT": 1, "SCATTER": 1}        # 128 + a second tile of 32..128
PAIRS = {**ONE, "BLOCK_G": 64}                                      # lifted rows as pair tiles (<= 64 groups)
PAIRS_SPLIT = {**ONE, "BLOCK_G": 32, "SPLIT": 1, "ROWS": 4}          # 32 groups + a second tile
PAIRS_UNIT = {**ONE, "BLOCK_G": 64, "UNIT": 4}                      # 4 groups a thread, 16-byte stores
CFGS, CFG_IDS = ([ONE, CHUNKED, SCATTER, {**CHUNKED, "SCATTER": 1}, SPLIT, {**SPLIT, "BLOCK_K": 64},
                  {**SPLIT, "BLOCK_K": 32}, PAIRS, PAIRS_SPLIT, PAIRS_UNIT],
                 ["one-chunk", "chunked", "scatter", "chunked-scatter", "split", "split64", "split32", "pairs",
                  "pairs-split", "pairs-unit"])
REF = ReferenceOps()


def np_exp(t: torch.Tensor) -> torch.Tensor:
    """The interpreter evaluates tl.exp with numpy; the GPU kernel uses CUDA's expf."""
    return torch.from_numpy(np.exp(t.numpy()))


def u8(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype.itemsize == 1 else t


def poisoned(M: int, kout: int, qd: str):
    mp = launch.m_pad(M)
    q = torch.full((mp, kout), 0x5A, dtype=torch.uint8).view(torch_qdtype(qd))
    return q, torch.full((mp,), float("nan"))


def zero_row_scale(qd: str) -> torch.Tensor:
    return torch.full((1,), ABSMAX_FLOOR) / torch.full((1,), qmax(qd))


def assert_quant(q, s, qr, sr, M, what=""):
    assert q.shape[0] == launch.m_pad(M) and q.shape[1] == qr.shape[1], what
    diff = (u8(q[:M]) != u8(qr)).nonzero()
    assert diff.numel() == 0, f"{what}: q differs at {diff[:5].tolist()} ({diff.shape[0]} elements)"
    assert torch.equal(s[:M], sr), f"{what}: scales differ at {(s[:M] != sr).nonzero().flatten().tolist()}"
    qd = "fp8" if q.dtype == FP8 else "int8"
    assert bool((u8(q[M:]) == 0).all()), f"{what}: padding rows not zero"
    assert bool((s[M:] == zero_row_scale(qd)).all()), f"{what}: padding scales are not the zero-row scale"


def rand_x(M, K, dtype, seed, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, K, generator=g) * scale).to(dtype)


def run_quant(x, qd, pattern, cfg, **kw):
    p = None if pattern is None else Pattern.parse(pattern)
    kout = launch.out_k(x.shape[1] // (2 if kw.get("producer") == tk.SILU_MUL else 1), p)
    q, s = poisoned(x.shape[0], kout, qd)
    launch.quant(x, qd, p, cfg, out=(q, s), **kw)
    return q, s


# --- plain quant -------------------------------------------------------------------------------
@pytest.mark.parametrize("qd", ["int8", "fp8"])
def test_row_max_times_multiplier_rounds_to_qmax(qd):
    """The kernels leave out the reference's clamp to +-QMAX (triton_kernels._quantize): for every
    float32 amax >= the floor, h = +-amax times inv = fl(QMAX / amax) is within QMAX * (1 + 2**-23)
    and rounds to +-QMAX, INT8 by the magic add the kernels use (any |h| <= amax gives less)."""
    qm = qmax(qd)
    lo = torch.tensor(ABSMAX_FLOOR, dtype=torch.float32).view(torch.int32).item()
    hi = torch.tensor(torch.finfo(torch.float32).max).view(torch.int32).item()
    bits = torch.cat([torch.randint(lo, hi, (2_000_000,), generator=torch.Generator().manual_seed(5),
                                    dtype=torch.int64),
                      torch.arange(lo, lo + 100_000), torch.arange(hi - 100_000, hi + 1)]).to(torch.int32)
    amax = bits.view(torch.float32)
    inv = (torch.full_like(amax, qm, dtype=torch.float64) / amax.double()).float()  # div_rn
    for h in (amax, -amax):
        v = h * inv
        assert float(v.abs().max()) <= qm * (1 + 2.0 ** -23)
        if qd == "int8":
            byte = ((v + 12582912.0).view(torch.int32) & 0xFF).to(torch.uint8).view(torch.int8)
            assert bool((byte == int(math.copysign(qm, float(h[0])))).all())
        else:
            assert bool((v.to(FP8).float() == math.copysign(qm, float(h[0]))).all())


@pytest.mark.parametrize("xdtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("K", [1, 37, 200])
def test_quant_matches_reference(K, qd, xdtype):
    x = rand_x(5, K, xdtype, seed=K)
    q, s = run_quant(x, qd, None, ONE)
    qr, sr = REF.quant(x, qd, None)
    assert_quant(q, s, qr, sr, 5, f"K={K} {qd} {xdtype}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_8", "2_10"])
@pytest.mark.parametrize("rows", [1, 2, 8])
def test_quant_chunked_path(pattern, qd, rows):
    """Rows longer than BLOCK_K (the looping passes), several rows per program or one."""
    x = rand_x(11, 200, torch.bfloat16, seed=rows)
    q, s = run_quant(x, qd, pattern, {**CHUNKED, "ROWS": rows})
    qr, sr = REF.quant(x, qd, None if pattern is None else Pattern.parse(pattern))
    assert_quant(q, s, qr, sr, 11, f"{pattern} rows={rows}")


@pytest.mark.parametrize("M", [1, 33])
def test_quant_m_one_and_odd_m(M):
    x = rand_x(M, 70, torch.bfloat16, seed=M)
    for qd in ("int8", "fp8"):
        q, s = run_quant(x, qd, "2_6", ONE)
        qr, sr = REF.quant(x, qd, Pattern.parse("2_6"))
        assert_quant(q, s, qr, sr, M, f"M={M} {qd}")


# --- lifting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("L", WINDOWS)
def test_quant_lift_every_window(L, qd):
    for K in (37, 200, 250):  # ragged: K is not a multiple of L (or 32)
        x = rand_x(3, K, torch.bfloat16, seed=L * K)
        qr, sr = REF.quant(x, qd, Pattern(L))
        for name, cfg in zip(CFG_IDS, CFGS):
            q, s = run_quant(x, qd, f"2_{L}", cfg)
            assert_quant(q, s, qr, sr, 3, f"L={L} K={K} {qd} {name}")



@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("scatter", [0, 1])
@pytest.mark.parametrize("K, L, cfg", [(30, 10, {**CHUNKED, "BLOCK_W": 64}), (40, 16, {**CHUNKED, "BLOCK_K": 16}),
                                       (70, 6, {**CHUNKED, "BLOCK_K": 64, "BLOCK_W": 4}),
                                       (200, 10, {**SPLIT, "BLOCK_K": 64}), (37, 8, {**SPLIT, "BLOCK_K": 32}),
                                       (64, 10, {**ONE, "BLOCK_K": 64}), (33, 6, {**ONE, "BLOCK_K": 32, "SPLIT": 1})])
def test_quant_lift_chunk_edges(K, L, cfg, qd, scatter):
    """Lifted rows around the tile edges: BLOCK_K below one group, the zero columns after the last
    window (KOUT rounds up to 32), windows in several blocks, a second tile of 32 or 128 (SPLIT),
    a row just too long for two tiles (chunked), a tile ending inside a group, an odd K."""
    cfg = {**cfg, "SCATTER": scatter}
    x = rand_x(9, K, torch.bfloat16, seed=K + L)
    q, s = run_quant(x, qd, f"2_{L}", cfg)
    qr, sr = REF.quant(x, qd, Pattern(L))
    assert_quant(q, s, qr, sr, 9, f"L={L} K={K} {qd}")

@pytest.mark.parametrize("L", [6, 8, 10, 12])
def test_pair_tiles_cover_every_window(L):
    """BLOCK_G configs take the pair kernel only when their tiles cover every group with a slid column
    below KOUT; a config whose tiles cannot falls back to the other kernels (None)."""
    p = Pattern(L)
    for K in (37, 200, 600, 18944):
        kout = launch.out_k(K, p)
        need = -(-kout // (2 * L - 4))
        for cfg in ({"BLOCK_G": 64, "num_warps": 1}, {"BLOCK_G": 64, "SPLIT": 1, "num_warps": 1},
                    {"BLOCK_G": 1024, "SPLIT": 1, "num_warps": 16}, {"BLOCK_G": 0, "num_warps": 4},
                    {"BLOCK_G": 128, "SPLIT": 1, "num_warps": 1, "UNIT": 4, "SHRINK": 1}):
            got = launch.pair_tiles(kout, L, cfg)
            if got is None:
                assert not cfg["BLOCK_G"] or need > cfg["BLOCK_G"] * (2 if cfg.get("SPLIT") else 1)
                continue
            assert got[0] == cfg["BLOCK_G"] and sum(got) >= need
            assert all(t == 0 or t & (t - 1) == 0 for t in got)
            assert got[1] == 0 or sum(got[:2]) < need or got[2] == 0
    assert launch.pair_tiles(1600, 10, {"BLOCK_G": 64, "SPLIT": 1, "num_warps": 1}) == (64, 32, 32)  # 100 groups
    assert launch.pair_tiles(800, 6, {"BLOCK_G": 64, "SPLIT": 1, "num_warps": 1, "UNIT": 2}) == (64, 64, 0)
    assert launch.pair_tiles(800, 8, {"BLOCK_G": 2, "num_warps": 1, "UNIT": 4}) is None  # less than a unit
    assert launch.pair_tiles(800, 0, {"BLOCK_G": 64, "num_warps": 1}) is None  # not lifted


def test_unit_and_maxnreg_keys_are_validated():
    base = {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": 16, "BLOCK_G": 1024}
    assert C.validate_config("quant", {**base, "UNIT": 4, "MAXNREG": 64})["MAXNREG"] == 64
    assert C.validate_config("quant", base)["UNIT"] == 1  # configs tuned before the key: a group a thread
    for bad in ({"UNIT": 0}, {"UNIT": 3}, {"UNIT": 8}, {"MAXNREG": 16}, {"MAXNREG": 256}):
        with pytest.raises(ValueError):
            C.validate_config("quant", {**base, **bad})
    assert launch.group_unit(8, {}) == 1 and launch.group_unit(8, {"UNIT": 4}) == 4


@pytest.mark.parametrize("L", range(6, 17, 2))
def test_pair_unit_fills_16_byte_stores(L):
    """A unit's windows (4 bytes each, L/2 - 1 a group) are a multiple of 16 bytes, with the fewest groups."""
    unit = launch.pair_unit(L)
    assert unit in (1, 2, 4) and unit * (L // 2 - 1) * 4 % 16 == 0
    assert unit == 1 or (unit // 2) * (L // 2 - 1) * 4 % 16 != 0


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("producer", [tk.PLAIN, tk.RMSNORM, tk.SILU_MUL])
def test_pair_kernel_three_tiles(producer, qd):
    """K = 1000 at 8:10 (100 groups): tiles of 64 + 32 + 32 groups, the last one partly past the row."""
    cfg = {**ONE, "BLOCK_G": 64, "SPLIT": 1, "ROWS": 2, "num_warps": 1}
    assert launch.pair_tiles(launch.out_k(1000, Pattern(10)), 10, cfg) == (64, 32, 32)
    x = rand_x(5, 2000 if producer == tk.SILU_MUL else 1000, torch.bfloat16, seed=6)
    w = (torch.rand(1000, generator=torch.Generator().manual_seed(2)) + 0.5).to(torch.bfloat16)
    qr, sr, kw = producer_reference(producer, x, w, qd, Pattern(10))
    q, s = run_quant(x, qd, "2_10", cfg, **kw)
    assert_quant(q, s, qr, sr, 5, f"{producer} {qd}")


def producer_reference(producer, x, w, qd, pat):
    """(q, scale) of the reference for ``producer`` (RMSNorm with weight ``w`` and eps 1e-6), and the
    launch keywords that ask the kernel for the same."""
    if producer == tk.RMSNORM:
        return (*R.rmsnorm_quant_ref(x, w, 1e-6, qd, pat), {"producer": producer, "weight": w, "eps": 1e-6})
    if producer == tk.SILU_MUL:
        return (*R.silu_mul_quant_ref(x, qd, pat, exp=np_exp), {"producer": producer})
    return (*REF.quant(x, qd, pat), {"producer": producer})


def test_lift_layout_is_slide_index():
    """Every slid column holds the input column slide_index names (the kernel's own index math)."""
    from slidesparse.sparsify import slide_index

    K = 45
    x = torch.arange(1, K + 1, dtype=torch.float32)[None, :].repeat(2, 1)
    x[:, -1] = 127  # absmax 127: inv = 1, q equals x exactly
    for L in WINDOWS:
        q, _ = run_quant(x, "int8", f"2_{L}", ONE)
        idx = slide_index(K, Pattern(L))
        want = torch.where(idx >= 0, x[0, idx.clamp_min(0)], torch.zeros(())).to(torch.int8)
        assert torch.equal(q[0], want), f"L={L}"


# --- special values ------------------------------------------------------------------------------
def special_rows(dtype):
    K = 48
    x = torch.randn(8, K, generator=torch.Generator().manual_seed(7)) * 3
    x[0] = 0                                    # all zero: q = 0, scale = floor / QMAX
    x[1] = x[1] * 1e-30                         # tiny (bf16 subnormals for some)
    x[2, :8] = 1e4                              # huge next to ordinary values
    x[3] = -0.0                                 # negative zeros
    x[4] = torch.linspace(-1, 1, K)             # exact ties at some elements
    x[5] = 2.0 ** -110                          # a constant row below the absmax floor... above it
    x[6, 5] = 3.0e38 if dtype != torch.float16 else 6.0e4
    x[7] = 1.0
    return x.to(dtype)


@pytest.mark.parametrize("xdtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern, cfg", [(None, ONE), ("2_6", ONE), ("2_8", PAIRS), ("2_10", PAIRS)])
def test_quant_special_rows(pattern, cfg, qd, xdtype):
    x = special_rows(xdtype)
    q, s = run_quant(x, qd, pattern, cfg)
    qr, sr = REF.quant(x, qd, None if pattern is None else Pattern.parse(pattern))
    assert_quant(q, s, qr, sr, x.shape[0], f"{pattern} {qd} {xdtype}")
    assert bool(torch.isfinite(s).all())


def test_int8_rounding_ties_to_even():
    """absmax 127 makes inv exactly 1, so q = rint(x): every k + 0.5 tie in [-127, 127]."""
    ties = torch.arange(-127, 127, dtype=torch.float32) + 0.5
    x = torch.cat([ties, torch.tensor([127.0, -127.0, 0.25, -0.75])])[None, :]
    q, s = run_quant(x, "int8", None, {**ONE, "BLOCK_K": 512})
    assert float(s[0]) == 1.0
    assert torch.equal(q[0, :x.shape[1]], torch.round(x[0]).to(torch.int8))  # torch.round: half to even


def test_fp8_rounding_every_midpoint():
    """absmax 448 makes inv exactly 1, so q = e4m3(x): all representable values, every midpoint
    between neighbours (ties to even, subnormals included) and values just beside the midpoints."""
    vals = torch.arange(0, 256, dtype=torch.int32).to(torch.uint8).view(FP8).float()
    pos = torch.unique(vals[torch.isfinite(vals) & (vals >= 0)])
    mids = (pos[1:] + pos[:-1]) / 2
    near = torch.cat([torch.nextafter(mids, torch.zeros(())), torch.nextafter(mids, torch.full((), 1e9))])
    v = torch.cat([pos, mids, near, torch.tensor([1e-12, 2.0 ** -10, 3 * 2.0 ** -11])])
    x = torch.cat([v, -v, torch.tensor([448.0])])[None, :]
    q, s = run_quant(x, "fp8", None, {**ONE, "BLOCK_K": 2048})
    assert float(s[0]) == 1.0
    assert torch.equal(u8(q[0, :x.shape[1]]), u8(x[0].to(FP8)))
    # the pair kernel's FP8 words (interpreter: _fp8_bits): the same bytes, in the lifted layout
    for L in (8, 10):
        q, s = run_quant(x, "fp8", f"2_{L}", {**ONE, "BLOCK_G": 1024})
        assert float(s[0]) == 1.0
        assert torch.equal(u8(q[:1]), u8(REF.quant(x, "fp8", Pattern(L))[0])), f"L={L}"


# --- outputs and argument checks -----------------------------------------------------------------
def test_quant_allocates_when_no_out():
    x = rand_x(3, 40, torch.bfloat16, seed=3)
    q, s = launch.quant(x, "fp8", None, ONE)
    assert q.shape == (16, 64) and q.dtype == FP8 and s.shape == (16,)
    qr, sr = REF.quant(x, "fp8", None)
    assert_quant(q, s, qr, sr, 3)


def test_quant_empty_batch():
    q, s = launch.quant(torch.zeros(0, 40, dtype=torch.bfloat16), "int8", "2_8", ONE)
    assert q.shape == (0, Pattern(8).slid_k(40)) and s.shape == (0,)


def test_quant_strided_rows():
    big = rand_x(4, 300, torch.bfloat16, seed=5)
    x = big[:, 20:220]  # row stride 300, unit column stride
    q, s = run_quant(x, "int8", "2_8", ONE)
    qr, sr = REF.quant(x.contiguous(), "int8", Pattern(8))
    assert_quant(q, s, qr, sr, 4)


@pytest.mark.parametrize("bad, match", [
    (lambda: launch.quant(torch.zeros(4), "int8", None, ONE), "2-D"),
    (lambda: launch.quant(torch.zeros(2, 4, dtype=torch.int32), "int8", None, ONE), "bfloat16, float16 or float32"),
    (lambda: launch.quant(torch.zeros(2, 0), "int8", None, ONE), "K = 0"),
    (lambda: launch.quant(torch.zeros(4, 2).t(), "int8", None, ONE), "unit column stride"),
    (lambda: launch.quant(torch.zeros(2, 4), "int4", None, ONE), "int8, fp8"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", "3:8", ONE), "pattern"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE, out=(torch.zeros(16, 32, dtype=torch.int8),)),
     "pair"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE,
                          out=(torch.zeros(16, 64, dtype=torch.int8), torch.zeros(16))), r"\[16, 32\]"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE,
                          out=(torch.zeros(16, 32, dtype=FP8), torch.zeros(16))), "int8"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE,
                          out=(torch.zeros(16, 32, dtype=torch.int8), torch.zeros(2))), "scale"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE, producer=tk.RMSNORM, weight=torch.ones(3),
                          eps=1e-6), "weight"),
    (lambda: launch.quant(torch.zeros(2, 4), "int8", None, ONE, producer=tk.RMSNORM, weight=torch.ones(4),
                          eps=0.0), "eps"),
    (lambda: launch.quant(torch.zeros(2, 5), "int8", None, ONE, producer=tk.SILU_MUL), "even number"),
])
def test_quant_argument_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


# --- dequant -------------------------------------------------------------------------------------
DQ = {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4}


@pytest.mark.parametrize("acc_dtype", [torch.int32, torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_dequant_matches_reference(acc_dtype, with_bias, out_dtype):
    g = torch.Generator().manual_seed(11)
    M, N = 21, 100
    if acc_dtype == torch.int32:
        buf = torch.randint(-2**24, 2**24, (M + 3, N + 28), generator=g, dtype=torch.int32)
    else:
        buf = (torch.randn(M + 3, N + 28, generator=g) * 1000).to(acc_dtype)
    acc = buf[:M, 5:5 + N]  # strided: a slice of a padded buffer
    sa = torch.rand(M + 11, generator=g) * 1e-2  # longer than M (the quant kernel's M_pad scales)
    sb = torch.rand(N, generator=g) * 1e-2
    bias = (torch.randn(N, generator=g) * 10).to(torch.bfloat16) if with_bias else None
    out = torch.full((M, N), float("nan"), dtype=out_dtype)
    launch.dequant(acc, sa, sb, bias, out_dtype, DQ, out=out)
    assert torch.equal(out, dequant(acc, sa, sb, bias, out_dtype))


def test_dequant_rounds_to_nearest_even_in_bf16():
    """Values whose float32 result sits exactly between two bf16 numbers (the interpreter's own
    conversion truncates; the kernel rounds the bits itself there)."""
    ties = [(2 * m + 1) * 2**14 for m in range(128, 256)]  # in [2**22, 2**23): bf16 spacing 2**15
    acc = torch.tensor([ties + [t + 1 for t in ties] + [t - 1 for t in ties]], dtype=torch.int32)
    sa, sb = torch.ones(1), torch.ones(acc.shape[1])
    out = launch.dequant(acc, sa, sb, None, torch.bfloat16, DQ)
    assert torch.equal(out, acc.float().to(torch.bfloat16))


@pytest.mark.parametrize("bad, match", [
    (lambda: launch.dequant(torch.zeros(4, dtype=torch.int32), torch.ones(4), torch.ones(4), None,
                            torch.bfloat16, DQ), "2-D"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int8), torch.ones(4), torch.ones(4), None,
                            torch.bfloat16, DQ), "int32"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int32), torch.ones(3), torch.ones(4), None,
                            torch.bfloat16, DQ), "do not fit"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int32), torch.ones(4), torch.ones(5), None,
                            torch.bfloat16, DQ), "do not fit"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int32), torch.ones(4), torch.ones(4), torch.ones(3),
                            torch.bfloat16, DQ), "bias"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int32), torch.ones(4), torch.ones(4), None,
                            torch.float32, DQ), "out_dtype"),
    (lambda: launch.dequant(torch.zeros(4, 4, dtype=torch.int32), torch.ones(4), torch.ones(4), None,
                            torch.bfloat16, DQ, out=torch.zeros(4, 5, dtype=torch.bfloat16)), "out must be"),
])
def test_dequant_argument_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


# --- fused producers -------------------------------------------------------------------------------
def test_sum_squares_is_order_free_and_accurate():
    x = rand_x(6, 300, torch.float32, seed=2) * torch.logspace(-15, 15, 6)[:, None]
    s = R.sum_squares(x)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, R.sum_squares(x[:, perm]))
    exact = (x.double() ** 2).sum(1)
    assert torch.allclose(s.double(), exact, rtol=1e-6, atol=0)
    assert torch.equal(R.sum_squares(torch.zeros(2, 9)), torch.zeros(2))


@pytest.mark.parametrize("xdtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_8"])
@pytest.mark.parametrize("cfg", CFGS, ids=CFG_IDS)
def test_rmsnorm_quant_matches_reference(cfg, pattern, qd, xdtype):
    x = special_rows(xdtype)[:, :45] if xdtype != torch.float32 else rand_x(8, 45, xdtype, seed=9)
    x = torch.cat([x, rand_x(3, 45, xdtype, seed=1) * torch.tensor([[1e-3], [1.0], [1e3]]).to(xdtype)])
    w = (torch.rand(45, generator=torch.Generator().manual_seed(4)) + 0.5).to(xdtype)
    q, s = run_quant(x, qd, pattern, cfg, producer=tk.RMSNORM, weight=w, eps=1e-6)
    qr, sr = R.rmsnorm_quant_ref(x, w, 1e-6, qd, None if pattern is None else Pattern.parse(pattern))
    assert_quant(q, s, qr, sr, x.shape[0], f"{pattern} {qd} {xdtype}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_6", "2_8", "2_10"])
@pytest.mark.parametrize("cfg", CFGS, ids=CFG_IDS)
def test_silu_mul_quant_matches_reference(cfg, pattern, qd):
    gu = rand_x(7, 2 * 70, torch.bfloat16, seed=13, scale=6.0)
    gu[2] = 0
    gu[3, :70] = -100.0  # exp(-g) overflows to inf: silu -> -0
    q, s = run_quant(gu, qd, pattern, cfg, producer=tk.SILU_MUL)
    qr, sr = R.silu_mul_quant_ref(gu, qd, None if pattern is None else Pattern.parse(pattern), exp=np_exp)
    assert_quant(q, s, qr, sr, 7, f"{pattern} {qd}")


# --- persistent programs (config key PERSIST) ------------------------------------------------------
# BLOCK_K 128 + SPLIT: the persistent launch covers K = 200 in three tiles (dense: 224 = 128 + 64 + 32;
# lifted: 200 = 128 + 64 + 32); under the interpreter a grid has launch.SOFT_SMS (4) "SMs", so with
# PERSIST 1 each program loops over 4 or 8 rows and its last prefetch reads past the rows (masked).
PERSIST = {"BLOCK_K": 128, "BLOCK_W": 64, "ROWS": 1, "num_warps": 4, "SPLIT": 1, "SCATTER": 1, "PERSIST": 1}


def poisoned_with(M, kout, qd, byte):
    q, s = poisoned(M, kout, qd)
    q.view(torch.uint8).fill_(byte)
    return q, s


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "6:8", "8:10"])
@pytest.mark.parametrize("producer", ["rmsnorm", "silu"])
def test_persistent_matches_reference(producer, pattern, qd):
    """quant_kernel_persist (dense or scattered lift, three tiles, programs looping over rows) gives
    the references' bits and writes every element of q and scale (two different poisons)."""
    K, pat = 200, None if pattern is None else Pattern.parse(pattern)
    kout = launch.out_k(K, pat)
    for M in (1, 5, 17):
        assert launch.m_pad(M) > launch.SOFT_SMS  # fewer programs than row tiles: every program loops
        if producer == "rmsnorm":
            x = rand_x(M, K, torch.bfloat16, seed=M)
            w = (torch.rand(K, generator=torch.Generator().manual_seed(M)) + 0.5).to(torch.bfloat16)
            qr, sr = R.rmsnorm_quant_ref(x, w, 1e-6, qd, pat)
            kw = {"producer": tk.RMSNORM, "weight": w, "eps": 1e-6}
            cfg = {**PERSIST, "HOIST_W": M % 2}  # the weight hoisted or loaded per row
        else:
            x = rand_x(M, 2 * K, torch.bfloat16, seed=100 + M, scale=6.0)
            if M > 3:
                x[3, :K] = -100.0  # exp(-g) overflows: silu -> -0
            qr, sr = R.silu_mul_quant_ref(x, qd, pat, exp=np_exp)
            kw = {"producer": tk.SILU_MUL}
            cfg = {**PERSIST, "PERSIST": 2 if M == 17 else 1}
        if M > 1:
            x[1] = 0  # an all-zero row
            x[M - 1] = 0
            qr, sr = (R.rmsnorm_quant_ref(x, w, 1e-6, qd, pat) if producer == "rmsnorm"
                      else R.silu_mul_quant_ref(x, qd, pat, exp=np_exp))
        for byte in ((0x5A, 0xA5) if M == 17 else (0x5A,)):
            q, s = poisoned_with(M, kout, qd, byte)
            launch.quant(x, qd, pat, cfg, out=(q, s), **kw)
            assert_quant(q, s, qr, sr, M, f"{producer} {pattern} {qd} M={M} poison {byte:#x}")


@pytest.mark.parametrize("producer, pattern, unit, qd, persist", [
    (tk.PLAIN, "6:8", 4, "fp8", 1), (tk.PLAIN, "8:10", 1, "int8", 2), (tk.RMSNORM, "6:8", 1, "int8", 2),
    (tk.RMSNORM, "8:10", 1, "fp8", 1), (tk.SILU_MUL, "6:8", 4, "int8", 1), (tk.SILU_MUL, "8:10", 1, "fp8", 2),
    (tk.SILU_MUL, "4:6", 2, "fp8", 1)])
def test_persistent_pair_tiles_match_reference(producer, pattern, unit, qd, persist):
    """quant_kernel_pairs as persistent programs (PERSIST with BLOCK_G): two or three group tiles,
    programs looping over 16 two-row tiles (2 or 4 each) and prefetching past the last row, the
    RMSNorm weight hoisted or loaded per tile; the references' bits and every element of q and
    scale written (two poisons). (Each producer, dtype and UNIT in a few combinations: the
    interpreter takes about 6 s a case.)"""
    pat = Pattern.parse(pattern)
    L = pat.window
    K = {6: 700, 8: 900, 10: 1000}[L]
    cfg = {**ONE, "BLOCK_G": 64, "SPLIT": 1, "ROWS": 2, "num_warps": 1, "UNIT": unit}
    tiles = launch.pair_tiles(launch.out_k(K, pat), L, cfg)
    assert tiles[1] > 0 and (tiles[2] > 0 or unit > 1), tiles  # 64 + 32 + 32 groups at UNIT 1
    # positive: a negative weight gives FP8 -0 in padding rows (every RMSNorm kernel, a known gap)
    w = (torch.rand(K, generator=torch.Generator().manual_seed(4)) * 2 + 0.1).to(torch.bfloat16)
    M = 21  # 32 padded rows
    x = rand_x(M, 2 * K if producer == tk.SILU_MUL else K, torch.bfloat16, seed=M + L, scale=6.0)
    x[M - 2] = 0  # an all-zero row
    qr, sr, kw = producer_reference(producer, x, w, qd, pat)
    for hoist in ((0, 1) if producer == tk.RMSNORM else (0,)):
        run = {**cfg, "PERSIST": persist, "HOIST_W": hoist}
        for byte in (0x5A, 0xA5):
            q, s = poisoned_with(M, launch.out_k(K, pat), qd, byte)
            launch.quant(x, qd, pat, run, out=(q, s), **kw)
            assert_quant(q, s, qr, sr, M, f"{producer} {pattern} {qd} {run} poison {byte:#x}")


def test_shrink_gives_later_tiles_smaller_units():
    """SHRINK: the tiles after the first need only a group a thread and take the largest unit <= UNIT
    that gives every thread one; the units a tile never grow (``_g_rows`` folds onto the last)."""
    big = {"BLOCK_G": 2048, "SPLIT": 1, "num_warps": 16, "UNIT": 4}
    kout = launch.out_k(18944, Pattern(8))  # 2368 groups
    assert launch.pair_tiles(kout, 8, big) == (2048, 2048, 0)  # the rest padded to a unit a thread
    shrink = {**big, "SHRINK": 1}
    assert launch.pair_tiles(kout, 8, shrink) == (2048, 512, 0)
    assert launch.tile_units((2048, 512, 0), 8, shrink) == (4, 1, 4)
    assert launch.tile_units((2048, 512, 0), 8, big) == (4, 4, 4)
    wide = {**shrink, "num_warps": 32}  # 1024 threads, 512 units in the first tile
    assert launch.pair_tiles(kout, 8, wide) is None and launch.pair_tiles(kout, 8, {**wide, "SHRINK": 0})
    one = launch.out_k(2048 * 8 - 100, Pattern(8))  # one tile: SHRINK changes nothing
    assert launch.pair_tiles(one, 8, wide) == launch.pair_tiles(one, 8, {**wide, "SHRINK": 0}) == (2048, 0, 0)
    small = {"BLOCK_G": 128, "SPLIT": 1, "num_warps": 1, "UNIT": 4, "SHRINK": 1}
    tiles = launch.pair_tiles(launch.out_k(1790, Pattern(8)), 8, small)  # 224 groups
    assert tiles == (128, 64, 32) and launch.tile_units(tiles, 8, small) == (4, 2, 1)
    for t in range(1, 4):
        for K in range(100, 3000, 37):
            for nw in (1, 2):
                cfg = {**small, "num_warps": nw, "BLOCK_G": 128 * nw, "UNIT": 1 << (t - 1)}
                tiles = launch.pair_tiles(launch.out_k(K, Pattern(8)), 8, cfg)
                if tiles is None:
                    continue
                units = launch.tile_units(tiles, 8, cfg)
                per = [g // u for g, u in zip(tiles, units) if g]
                assert per == sorted(per, reverse=True) and all(g % u == 0 for g, u in zip(tiles, units)), cfg
    from slidesparse.kernels.tune import pair_candidates
    for K, pat, least in ((2048, "6:8", 0), (3584, "6:8", 1), (18944, "6:8", 1), (3072, "4:6", 0)):
        p = Pattern.parse(pat)
        kout = launch.out_k(K, p)
        got = [c for c in pair_candidates(K, p, "rmsnorm_quant") if c.get("SHRINK")]
        assert len(got) >= least, (K, pat)
        for c in got:  # only where SHRINK changes the tiles or their units
            plain = {**c, "SHRINK": 0}
            assert (launch.pair_tiles(kout, p.window, c), launch.tile_units(launch.pair_tiles(kout, p.window, c),
                    p.window, c)) != (launch.pair_tiles(kout, p.window, plain), launch.tile_units(
                    launch.pair_tiles(kout, p.window, plain) or (0, 0, 0), p.window, plain)), c
    assert C.validate_config("quant", {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": 1})["SHRINK"] == 0
    with pytest.raises(ValueError):
        C.validate_config("quant", {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": 1, "SHRINK": 2})


@pytest.mark.parametrize("producer, pattern, qd, persist, K", [
    (tk.RMSNORM, "6:8", "int8", 1, 1790), (tk.SILU_MUL, "6:8", "fp8", 0, 1700), (tk.PLAIN, "4:6", "int8", 2, 1340)])
def test_shrink_tile_units_match_reference(producer, pattern, qd, persist, K):
    """Pair tiles in units of 4, 2 and 1 groups in one row (SHRINK: 128 + 64 + 32 groups at one
    warp, 16-, 8- and 4-byte stores at 6:8): the references' bits, every element written (two
    poisons), persistent and not. 224 groups exactly, or 214 (K = 1700: the last tile's units
    partly and wholly past KOUT, not written)."""
    pat = Pattern.parse(pattern)
    L = pat.window
    cfg = {**ONE, "BLOCK_G": 128, "SPLIT": 1, "ROWS": 1, "num_warps": 1, "UNIT": 4, "SHRINK": 1,
           "PERSIST": persist, "HOIST_W": 1}
    tiles = launch.pair_tiles(launch.out_k(K, pat), L, cfg)
    assert tiles == (128, 64, 32) and launch.tile_units(tiles, L, cfg) == (4, 2, 1), tiles
    w = (torch.rand(K, generator=torch.Generator().manual_seed(5)) * 2 + 0.1).to(torch.bfloat16)
    M = 9
    x = rand_x(M, 2 * K if producer == tk.SILU_MUL else K, torch.bfloat16, seed=L, scale=6.0)
    x[3] = 0
    qr, sr, kw = producer_reference(producer, x, w, qd, pat)
    for byte in (0x5A, 0xA5):
        q, s = poisoned_with(M, launch.out_k(K, pat), qd, byte)
        launch.quant(x, qd, pat, cfg, out=(q, s), **kw)
        assert_quant(q, s, qr, sr, M, f"{producer} {pattern} {qd} poison {byte:#x}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_8", "2_10"])
def test_persistent_plain_quant_matches_reference(pattern, qd):
    """A PERSIST config on the plain quant (no producer) also takes the persistent kernel: same bits,
    every element written (odd K, programs looping over rows)."""
    for K in (131, 200):
        x = rand_x(11, K, torch.bfloat16, seed=K)
        x[4] = 0
        qr, sr = REF.quant(x, qd, None if pattern is None else Pattern.parse(pattern))
        q, s = poisoned_with(11, launch.out_k(K, None if pattern is None else Pattern.parse(pattern)), qd, 0x5A)
        launch.quant(x, qd, pattern, PERSIST, out=(q, s))
        assert_quant(q, s, qr, sr, 11, f"plain {pattern} {qd} K={K}")


def test_persistent_rows_per_program_and_fallbacks():
    """ROWS = 2 row tiles in the persistent loop; a PERSIST config whose rows do not fit one chunk
    (chunked) or whose lift re-reads windows (no SCATTER) runs the ordinary kernel (same bits)."""
    x = rand_x(9, 200, torch.bfloat16, seed=3)
    w = (torch.rand(200, generator=torch.Generator().manual_seed(3)) + 0.5).to(torch.bfloat16)
    kw = {"producer": tk.RMSNORM, "weight": w, "eps": 1e-6}
    for pattern, cfg in ((None, {**PERSIST, "ROWS": 2, "HOIST_W": 1}), ("2_8", {**CHUNKED, "PERSIST": 2}),
                         ("2_10", {**PERSIST, "SCATTER": 0})):
        q, s = run_quant(x, "fp8", pattern, cfg, **kw)
        qr, sr = R.rmsnorm_quant_ref(x, w, 1e-6, "fp8", None if pattern is None else Pattern.parse(pattern))
        assert_quant(q, s, qr, sr, 9, f"{pattern} {cfg}")


def test_persistent_tiles_and_grid():
    assert launch.persist_tiles(224, 128, 128) == (64, 32)
    assert launch.persist_tiles(5120, 4096, 1024) == (1024, 0)
    assert launch.persist_tiles(13824, 8192, 8192) == (4096, 2048)
    assert launch.persist_tiles(18944, 16384, 4096) == (2048, 512)
    assert launch.persist_tiles(4100, 4096, 32) == (32, 0)
    assert launch.persist_tiles(100, 128, 0) == (0, 0)
    assert launch.sm_count("cpu") == launch.SOFT_SMS


@pytest.mark.parametrize("bad, match", [
    ({"PERSIST": -1}, "PERSIST"), ({"PERSIST": 33}, "PERSIST"), ({"PERSIST": 1.5}, "PERSIST"),
    ({"PERSIST": "2"}, "PERSIST"), ({"PERSIST": True}, "PERSIST"), ({"HOIST_W": 2, "PERSIST": 1}, "HOIST_W"),
    ({"HOIST_W": 1}, "needs PERSIST"), ({"HOIST_W": 1, "PERSIST": 0}, "needs PERSIST"),
])
def test_config_persist_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        C.validate_config("rmsnorm_quant", {**cfg(4096), **bad})


@pytest.mark.parametrize("kernel", ["quant", "silu_mul_quant"])
def test_config_hoist_w_is_rmsnorm_only(kernel):
    with pytest.raises(ValueError, match="rmsnorm_quant only"):
        C.validate_config(kernel, {**cfg(4096), "PERSIST": 1, "HOIST_W": 1})


def test_config_persist_optional():
    assert C.validate_config("quant", cfg(4096))["PERSIST"] == 0
    got = C.validate_config("silu_mul_quant", {**cfg(8192), "PERSIST": 2, "HOIST_W": 0})
    assert got["PERSIST"] == 2 and got["HOIST_W"] == 0


def test_default_config_persist_rule():
    def persist(kernel, K, dtype, pattern=None):
        c = C.default_config(kernel, K, dtype, pattern)
        return c.get("PERSIST", 0), c.get("HOIST_W", 0), c["num_warps"]

    for qd in ("int8", "fp8"):
        # RMSNorm dense K > 4096 (the row in two tiles): 4 warps, weight hoisted, programs per SM
        # as the registers allow (H100 K = 5120 measurement)
        assert persist("rmsnorm_quant", 5120, qd) == (3, 1, 4)
        assert persist("rmsnorm_quant", 5120, qd, "2_4") == (3, 1, 4)  # 2:4's lift is the identity
        assert persist("rmsnorm_quant", 8192, qd) == (2, 1, 4)
        for K in (1, 2048, 3584, 4096):
            assert persist("rmsnorm_quant", K, qd)[:2] == (0, 0), K
        assert persist("rmsnorm_quant", 8192, qd, "6:8")[:2] == (0, 0)
        # 6:8 K = 5120: 3 persistent programs an SM at 4 warps (RMS_PAIRS), the weight hoisted
        assert persist("rmsnorm_quant", 5120, qd, "6:8") == (3, 1, 4)
        assert persist("rmsnorm_quant", 16384, qd)[:2] == (0, 0)  # not one chunk
        # SiLU dense INT8 8192 < I <= 32768 and FP8 16384 < I <= 32768: 16 warps, one program per SM
        for inter in (8200, 13824, 16384, 18944, 27648):
            want = (0, 0, 16) if qd == "fp8" and inter <= 16384 else (1, 0, 16)
            assert persist("silu_mul_quant", inter, qd) == want, (inter, qd)
        for inter in (2048, 4096, 40000):
            assert persist("silu_mul_quant", inter, qd)[:2] == (0, 0), inter
        # lifted SiLU: the pair tiles at 6:8 are persistent past I = 8192 (one program an SM), 8:10 not
        assert persist("silu_mul_quant", 13824, qd, "8:10")[:2] == (0, 0)
        assert persist("silu_mul_quant", 8192, qd, "6:8")[:2] == (0, 0)
        assert persist("silu_mul_quant", 13824, qd, "6:8") == (1, 0, 32)
        assert persist("silu_mul_quant", 18944, qd, "6:8") == (1, 0, 16)
        assert persist("rmsnorm_quant", 3584, qd, "6:8") == (4, 1, 2)  # RMS_PAIRS: 4 programs, weight hoisted
        assert persist("rmsnorm_quant", 3072, qd, "6:8") == (6, 1, 2)
        for K in (2048, 5120, 13824):
            assert persist("quant", K, qd)[:2] == (0, 0)
    # FP8 8192 < I <= 16384: two programs an SM by a register cap instead
    assert C.default_config("silu_mul_quant", 13824, "fp8").get("MAXNREG") == 64
    assert C.default_config("silu_mul_quant", 13824, "int8").get("MAXNREG", 0) == 0
    # I = 8192: fp8 at 16 warps, int8 (and an unknown dtype, taken as int8) at 8; neither persistent
    assert persist("silu_mul_quant", 8192, "fp8") == (0, 0, 16)
    assert persist("silu_mul_quant", 8192, "e4m3") == (0, 0, 16)
    assert persist("silu_mul_quant", 8192, "int8") == (0, 0, 8)
    assert persist("silu_mul_quant", 8192, None) == (0, 0, 8)
    k = C.KernelConfigs("/nonexistent-dir", "TEST")  # lookups pass the dtype to the defaults
    assert k.lookup("silu_mul_quant", 8192, 64, "fp8", None)["num_warps"] == 16
    assert k.lookup("silu_mul_quant", 8192, 64, "int8", None)["num_warps"] == 8


def test_persistent_candidates():
    from slidesparse.kernels.tune import candidate_configs

    for kernel, K, pattern in (("rmsnorm_quant", 5120, None), ("rmsnorm_quant", 3584, "2_8"),
                               ("silu_mul_quant", 13824, None), ("silu_mul_quant", 8192, "2_10")):
        cands = candidate_configs(kernel, K, pattern)
        pers = [c for c in cands if c["PERSIST"] and not c["BLOCK_G"]]  # the schedule variants
        assert {c["PERSIST"] for c in pers} >= {1, 2}, (kernel, K)
        pair_pers = [c for c in cands if c["PERSIST"] and c["BLOCK_G"]]
        assert bool(pair_pers) == (pattern is not None), (kernel, K, pattern)
        if kernel == "rmsnorm_quant":  # 3 programs an SM (4: the 3584 6:8 default), the weight hoisted, <= 4 warps
            assert all(c["PERSIST"] in (3, 4) and c["HOIST_W"] and c["num_warps"] <= 4 for c in pair_pers)
        else:  # one program an SM at 16 or 32 warps
            assert all(c["PERSIST"] == 1 and c["num_warps"] >= 16 for c in pair_pers)
        assert len(pers) <= 6
        if kernel == "silu_mul_quant" and K > 8192:  # and two programs an SM by a register cap
            assert [c for c in cands if c["MAXNREG"] == 64 and c["num_warps"] == 16 and not c["PERSIST"]]
        warps = {c["num_warps"] for c in pers}
        assert warps >= ({4, 8} if kernel == "rmsnorm_quant" else {16}), (kernel, K)
    assert not [c for c in candidate_configs("quant", 3584, None) if c["PERSIST"]]
    assert not [c for c in candidate_configs("rmsnorm_quant", 16384, None) if c["PERSIST"]]  # not one chunk
    assert {c["PERSIST"] for c in candidate_configs("silu_mul_quant", 18944, None)} == {0, 1}  # two rows do not fit


def test_pair_candidates_and_defaults():
    """Lifted rows get pair-tile candidates whose tiles cover the row; dense rows none. The defaults
    take pair tiles only for the measured windows, the same for INT8 and FP8 but for plain quant
    6:8 past 256 groups; measured table rows may be persistent; pairs=False gives the other
    kernels' config."""
    from slidesparse.kernels.tune import candidate_configs

    for kernel, K in (("quant", 3072), ("rmsnorm_quant", 5120), ("silu_mul_quant", 18944)):
        for pattern in ("2_6", "2_8", "2_10"):
            L = Pattern.parse(pattern).window
            pairs = [c for c in candidate_configs(kernel, K, pattern) if c["BLOCK_G"]]
            assert pairs, (kernel, K, pattern)
            assert all(launch.pair_tiles(launch.out_k(K, Pattern(L)), L, c) for c in pairs), (kernel, K, pattern)
        assert not [c for c in candidate_configs(kernel, K, None) if c["BLOCK_G"]]
    assert C.default_config("quant", 3072, "int8", "2_8")["BLOCK_G"] == 512
    assert "BLOCK_G" not in C.default_config("quant", 3072, "int8", "2_8", pairs=False)
    assert "BLOCK_G" not in C.default_config("quant", 3072, "int8", "2_12")      # window not measured
    for K, pattern in ((3072, "2_8"), (8192, "2_10"), (13824, "2_8"), (5120, "2_10")):
        for kernel in ("quant", "rmsnorm_quant", "silu_mul_quant"):
            if (kernel, pattern) == ("quant", "2_8") and K == 3072:  # FP8 6:8 past 256 groups: two half tiles
                fp8 = C.default_config(kernel, K, "fp8", pattern)
                assert (fp8["BLOCK_G"], fp8["SPLIT"], fp8["num_warps"]) == (256, 1, 8)
                assert launch.pair_tiles(launch.out_k(K, Pattern(8)), 8, fp8) == (256, 256, 0)
                continue
            assert C.default_config(kernel, K, "fp8", pattern) == C.default_config(kernel, K, "int8", pattern)
    # plain quant: about two groups a thread, one at 6:8 up to 256 groups (K = 2048)
    for K, pattern, want in ((2048, "2_8", (256, 8)), (1024, "2_8", (128, 4)), (2048, "2_10", (256, 4)),
                             (3584, "2_10", (512, 8))):
        for qd in ("int8", "fp8"):
            got = C.default_config("quant", K, qd, pattern)
            assert (got["BLOCK_G"], got["num_warps"]) == want, (K, pattern, qd)
    assert "BLOCK_G" not in C.default_config("rmsnorm_quant", 3584, "int8", "2_8", pairs=False)
    assert "BLOCK_G" not in C.default_config("rmsnorm_quant", 5120, "int8", "2_6")  # three tiles: scatter
    rms = C.default_config("rmsnorm_quant", 3584, "fp8", "2_8")  # a measured RMS_PAIRS row: persistent
    assert (rms["BLOCK_G"], rms["UNIT"], rms["PERSIST"], rms["HOIST_W"], rms["SHRINK"]) == (256, 4, 4, 1, 1)
    assert launch.tile_units(launch.pair_tiles(launch.out_k(3584, Pattern(8)), 8, rms), 8, rms) == (4, 2, 1)
    # SiLU 6:8 I = 8192: INT8 in units of 2 groups (8-byte stores), FP8 not
    assert C.default_config("silu_mul_quant", 8192, "int8", "2_8")["UNIT"] == 2
    assert C.default_config("silu_mul_quant", 8192, "fp8", "2_8")["UNIT"] == 1
    assert C.default_config("silu_mul_quant", 8192, None, "2_8")["UNIT"] == 2  # unknown dtype: as INT8
    silu = C.default_config("silu_mul_quant", 18944, "int8", "2_8")
    assert silu["PERSIST"] == 1 and silu["HOIST_W"] == 0 and silu["SHRINK"] == 1
    assert silu == C.default_config("silu_mul_quant", 18944, "fp8", "2_8")
    assert launch.pair_tiles(launch.out_k(18944, Pattern(8)), 8, silu) == (2048, 512, 0)
    for c in (rms, silu):
        assert C.validate_config("rmsnorm_quant", c) == {**C.validate_config("rmsnorm_quant", c), **c}
    with pytest.raises(ValueError, match="0 or a power of 2"):
        C.validate_config("quant", {**cfg(4096), "BLOCK_G": 48})


def test_reference_argument_errors():
    with pytest.raises(ValueError, match="weight"):
        R.rmsnorm_f32(torch.zeros(2, 4), torch.ones(3), 1e-6)
    with pytest.raises(ValueError, match="even"):
        R.silu_mul_f32(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="2-D"):
        R.silu_mul_f32(torch.zeros(4))
    with pytest.raises(ValueError, match="K <="):
        R.sum_squares(torch.zeros(1, R.RMS_MAX_K + 1))


# --- TritonOps ------------------------------------------------------------------------------------
def test_triton_ops_interface(tmp_path):
    from slidesparse.kernels import TritonOps

    ops = TritonOps(search_dir=tmp_path, hwtag="TEST")  # no kernels.json there: defaults
    x = rand_x(5, 64, torch.bfloat16, seed=21)
    q, s = ops.quant(x, "int8", Pattern(6))
    qr, sr = REF.quant(x, "int8", Pattern(6))
    assert_quant(q, s, qr, sr, 5)
    acc = torch.randint(-1000, 1000, (5, 40), dtype=torch.int32)
    sb = torch.rand(40)
    assert torch.equal(ops.dequant(acc, s, sb, None, torch.bfloat16), dequant(acc, s, sb, None, torch.bfloat16))
    w = torch.rand(64) + 0.5
    q, s = ops.rmsnorm_quant(x, w, 1e-5, "fp8", None)
    qr, sr = R.rmsnorm_quant_ref(x, w, 1e-5, "fp8", None)
    assert_quant(q, s, qr, sr, 5)
    gu = rand_x(5, 64, torch.bfloat16, seed=22)
    q, s = ops.silu_mul_quant(gu, "int8", Pattern(8))
    qr, sr = R.silu_mul_quant_ref(gu, "int8", Pattern(8), exp=np_exp)
    assert_quant(q, s, qr, sr, 5)
    with pytest.raises(ValueError, match="2-D"):
        ops.quant(torch.zeros(3), "int8", None)


# --- launch configs --------------------------------------------------------------------------------
def write_db(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": C.FORMAT, "version": C.VERSION, "hardware": "TEST", "entries": entries}))


def cfg(bk):
    return {"BLOCK_K": bk, "BLOCK_W": 256, "ROWS": 1, "num_warps": 4, "num_stages": 1}


def test_config_bucket_selection(tmp_path):
    write_db(tmp_path / "TEST" / C.FILENAME, {"quant/int8/2_8/3584": [
        {"m": 256, "config": cfg(1024)}, {"m": 64, "config": cfg(512)}, {"m": 4096, "config": cfg(2048)}]})
    k = C.KernelConfigs(tmp_path, "TEST")
    assert k.lookup("quant", 3584, 1, "int8", "2_8")["BLOCK_K"] == 512
    assert k.lookup("quant", 3584, 64, "int8", "6:8")["BLOCK_K"] == 512      # 6:8 is 2_8
    assert k.lookup("quant", 3584, 65, "int8", Pattern(8))["BLOCK_K"] == 1024
    assert k.lookup("quant", 3584, 4096, "int8", "2_8")["BLOCK_K"] == 2048
    assert k.lookup("quant", 3584, 32768, "int8", "2_8")["BLOCK_K"] == 2048  # above the largest: largest
    # more than 8x from every tuned M (a decode config for a prefill): the default, not the largest
    assert k.lookup("quant", 3584, 65536, "int8", "2_8") == C.default_config("quant", 3584, "int8", "2_8")
    far = tmp_path / "far"
    write_db(far / "TEST" / C.FILENAME, {"quant/int8/2_8/3584": [{"m": 64, "config": cfg(512)},
                                                                  {"m": 32768, "config": cfg(2048)}]})
    f = C.KernelConfigs(far, "TEST")
    assert f.lookup("quant", 3584, 256, "int8", "2_8")["BLOCK_K"] == 512     # 4x below beats 128x above
    assert f.lookup("quant", 3584, 2048, "int8", "2_8") == C.default_config("quant", 3584, "int8", "2_8")
    # no entry for this K / dtype / pattern / kernel: the defaults
    assert k.lookup("quant", 2048, 64, "int8", "2_8") == C.default_config("quant", 2048, "int8", "2_8")
    assert k.lookup("quant", 3584, 64, "fp8", "2_8") == C.default_config("quant", 3584, "fp8", "2_8")
    assert k.lookup("quant", 3584, 64, "int8", None) == C.default_config("quant", 3584, "int8", None)
    assert C.config_for("quant", 3584, 100, "int8", "2_8", search_dir=tmp_path, hwtag="TEST")["BLOCK_K"] == 1024


def test_config_missing_file_gives_defaults(tmp_path):
    k = C.KernelConfigs(tmp_path / "nowhere", "TEST")
    for kernel in C.KERNELS:
        got = k.lookup(kernel, 4096, 512, "int32" if kernel == "dequant" else "fp8", None)
        assert got == C.default_config(kernel, 4096, None, None)
        C.validate_config(kernel, got)


def test_config_file_is_reread_when_it_changes(tmp_path):
    path = tmp_path / "TEST" / C.FILENAME
    write_db(path, {"dequant/int32/dense/4608": [{"m": 64, "config": {"BLOCK_M": 8, "BLOCK_N": 128, "num_warps": 4}}]})
    k = C.KernelConfigs(tmp_path, "TEST", recheck_s=0)
    assert k.lookup("dequant", 4608, 10, torch.int32, None)["BLOCK_M"] == 8
    write_db(path, {"dequant/int32/dense/4608": [{"m": 64, "config": {"BLOCK_M": 32, "BLOCK_N": 128,
                                                                       "num_warps": 4, "num_stages": 1}}]})
    assert k.lookup("dequant", 4608, 10, "int32", None)["BLOCK_M"] == 32
    path.unlink()  # gone again: defaults
    assert k.lookup("dequant", 4608, 10, "int32", None) == C.default_config("dequant", 4608)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not JSON"),
    (json.dumps({"format": "other", "version": 1, "entries": {}}), "format"),
    (json.dumps({"format": C.FORMAT, "version": 99, "entries": {}}), "version"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": []}), "entries"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/3584": []}}), "kernel/dtype/pattern/K"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/6:8/3584": [{"m": 1, "config": cfg(64)}]}}),
     "normal form"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/2_8/3584": [{"m": 64}]}}), "launch config"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/2_8/3584": [
        {"m": 64, "config": {**cfg(64), "BLOCK_K": 100}}]}}), "power of 2"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/2_8/3584": [
        {"m": 64, "config": {**cfg(64), "bogus": 1}}]}}), "unknown"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/2_8/3584": [
        {"m": 64, "config": cfg(64)}, {"m": 64, "config": cfg(128)}]}}), "repeats"),
    (json.dumps({"format": C.FORMAT, "version": 1, "entries": {"quant/int8/2_8/3584": [
        {"m": "64", "config": cfg(64)}]}}), "positive integer"),
])
def test_config_corrupt_file_is_a_clear_error(tmp_path, text, match):
    path = tmp_path / "TEST" / C.FILENAME
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        C.KernelConfigs(tmp_path, "TEST").lookup("quant", 3584, 64, "int8", "2_8")
    assert str(path) in str(e.value) and "delete it" in str(e.value)


def test_config_save_merges_and_validates(tmp_path):
    path = tmp_path / "TEST" / C.FILENAME
    C.save_entries(path, {"quant/int8/2_8/3584": [{"m": 64, "config": cfg(512), "us": 1.0},
                                                   {"m": 256, "config": cfg(1024), "us": 2.0}]}, "TEST")
    C.save_entries(path, {"quant/int8/2_8/3584": [{"m": 256, "config": cfg(2048), "us": 1.5}],
                          "quant/fp8/dense/2048": [{"m": 64, "config": cfg(2048)}]}, "TEST")
    entries = C.load_entries(path)
    assert [m for m, _ in entries["quant/int8/2_8/3584"]] == [64, 256]
    assert entries["quant/int8/2_8/3584"][1][1]["BLOCK_K"] == 2048
    assert "quant/fp8/dense/2048" in entries
    assert not list(path.parent.glob("*.tmp"))
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid"):
        C.save_entries(path, {"quant/int8/2_8/3584": [{"m": 64, "config": cfg(512)}]}, "TEST")


def test_config_keys_and_bad_names():
    assert C.entry_key("quant", 3584, "fp8e4m3", "6:8") == "quant/fp8/2_8/3584"
    assert C.entry_key("dequant", 4608, torch.bfloat16, None) == "dequant/bf16/dense/4608"
    assert C.entry_key("rmsnorm_quant", 2048, "int8", "dense") == "rmsnorm_quant/int8/dense/2048"
    with pytest.raises(ValueError, match="unknown kernel"):
        C.entry_key("gemm", 1, "int8", None)
    with pytest.raises(ValueError, match="int32/bf16"):
        C.entry_key("dequant", 1, "int8", None)
    with pytest.raises(ValueError, match="positive"):
        C.entry_key("quant", 0, "int8", None)


def test_candidate_configs_are_valid():
    from slidesparse.kernels.tune import candidate_configs

    for kernel in C.KERNELS:
        for K in (200, 2048, 3584, 18944):
            cands = candidate_configs(kernel, K, None if kernel == "dequant" else "2_8")
            assert cands and cands[0] == C.validate_config(kernel, C.default_config(kernel, K, "int8", "2_8"))
            assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)


def test_default_configs_are_valid():
    for kernel in C.KERNELS:
        for K in (1, 37, 2048, 3584, 8192, 13824, 18944, 65536, 70000, 140000, 300000):
            for pat in (None, "2_4", "2_8"):
                for qd in (None, "int8", "fp8"):
                    C.validate_config(kernel, C.default_config(kernel, K, qd, pat))


@pytest.mark.parametrize("pattern", [None, "2_8"])
def test_silu_rows_too_long_for_registers_take_the_chunked_path(pattern):
    """Past 32768 lanes the default SiLU config produces h twice, chunk by chunk (it used to ask for a
    BLOCK_K over the limit at I > 65536); still exact."""
    cfg = C.default_config("silu_mul_quant", 40000, "int8", pattern)
    assert cfg["BLOCK_K"] == 16384 and not cfg.get("SPLIT") and not cfg.get("PERSIST")
    gu = rand_x(2, 2 * 40000, torch.bfloat16, seed=3, scale=4.0)
    q, s = run_quant(gu, "int8", pattern, cfg, producer=tk.SILU_MUL)
    qr, sr = R.silu_mul_quant_ref(gu, "int8", None if pattern is None else Pattern.parse(pattern), exp=np_exp)
    assert_quant(q, s, qr, sr, 2, f"{pattern} I=40000")


def test_tune_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from slidesparse.kernels import tune_kernel

    with pytest.raises(RuntimeError, match="CUDA"):
        tune_kernel("quant", [2048], [64], "int8")


def test_bench_quant_byte_counts():
    from slidesparse.bench.quant import dequant_bytes, model_shapes, quant_bytes

    p = Pattern(8)
    assert quant_bytes("quant", 3584, 100, None) == 100 * 3584 * 2 + 112 * (3584 + 4)
    assert quant_bytes("quant", 3584, 100, p) == 100 * 3584 * 2 + 112 * (p.slid_k(3584) + 4)
    assert quant_bytes("silu_mul_quant", 18944, 16, p) == 16 * 37888 * 2 + 16 * (p.slid_k(18944) + 4)
    assert quant_bytes("rmsnorm_quant", 2048, 16, None) == 16 * 2048 * 2 + 2048 * 2 + 16 * (2048 + 4)
    assert dequant_bytes(4608, 10, torch.int32) == 10 * 4608 * 6 + 40 + 4608 * 8
    s = model_shapes(["qwen2.5-7b"])
    assert s.quant_k == (3584, 18944) and s.rms_k == (3584,) and s.silu_i == (18944,)
    assert 37888 in s.dequant_n and 4608 in s.dequant_n
    assert math.prod(s.quant_k) > 0


# --- the quant benchmark (CPU side: arguments, rows, files) ---------------------------------------
def _fake_row(kernel, pattern, K, M, us, nbytes, plain=None):
    row = {"kernel": kernel, "dtype": "int8", "pattern": pattern, "paper": "", "K": K, "N": "", "M": M,
           "us": us, "host_us": 50.0, "bytes": nbytes, "gbps": round(nbytes / us / 1e3, 1), "copy_us": us,
           "copy_gbps": 1.0, "pct_of_copy": 90.0, "lift_ratio": "", "byte_ratio": "", "config": "{}",
           "gpu": "TEST", "hwtag": "TEST_INT8"}
    if plain:
        row["lift_ratio"], row["byte_ratio"] = round(us / plain["us"], 3), round(nbytes / plain["bytes"], 3)
    return row


def test_bench_quant_writes_rows_and_table(tmp_path):
    from slidesparse.bench.quant import summary_lines, write_rows

    plain = _fake_row("quant", "dense", 3584, 4096, 20.0, 1000)
    rows = [plain, _fake_row("quant", "2_8", 3584, 4096, 25.0, 1200, plain)]
    paths = write_rows(rows, tmp_path)
    assert paths == [tmp_path / "quant" / "TEST_INT8" / "quant_int8.csv"]
    doc = json.loads((tmp_path / "quant" / "TEST_INT8" / "quant_int8.json").read_text())
    assert [r["pattern"] for r in doc["rows"]] == ["dense", "2_8"] and "commit" in doc["rows"][0]
    write_rows(rows[1:], tmp_path)  # a rerun of one case replaces its row
    doc = json.loads((tmp_path / "quant" / "TEST_INT8" / "quant_int8.json").read_text())
    assert len(doc["rows"]) == 2
    lines = summary_lines(rows)
    assert "copy%" in lines[0] and "1.25" in lines[2] and "1.20" in lines[2]


def test_bench_quant_target_lines():
    """The issue's target per kernel at M >= 4096: cases at >= 85 % of copy, lift ratios within 1.05 x
    the byte ratio, and each miss named; small M does not count."""
    from slidesparse.bench.quant import target_lines

    def row(kernel, pattern, M, pct, us, nbytes, plain=None):
        return {**_fake_row(kernel, pattern, 3584, M, us, nbytes, plain), "pct_of_copy": pct}

    plain = row("quant", "dense", 4096, 99.0, 20.0, 1000)
    ok = row("quant", "2_8", 4096, 97.0, 24.0, 1200, plain)      # 1.2 <= 1.05 * 1.2
    slow = row("quant", "2_10", 4096, 84.9, 26.0, 1200, plain)   # 1.3 > 1.26, and below 85 %
    small = row("quant", "2_10", 64, 10.0, 99.0, 1200, row("quant", "dense", 64, 50.0, 20.0, 1000))
    deq = {**row("dequant", "dense", 16384, 96.0, 10.0, 100), "K": "", "N": 4608}
    lines = target_lines([plain, ok, slow, small, deq])
    assert lines[0] == ("quant: 2 of 3 cases at >= 85% of copy (M >= 4096); "
                        "lift ratio within 1.05x the byte ratio: 1 of 2")
    assert lines[1] == "  below: int8 2_10 K=3584 M=4096 84.9%"
    assert lines[2] == "  lift over: int8 2_10 K=3584 M=4096 1.300 > 1.260"
    assert lines[3] == "dequant: 1 of 1 cases at >= 85% of copy (M >= 4096)"
    assert len(lines) == 4
    assert target_lines([small]) == []


def test_bench_quant_command_arguments():
    from click.testing import CliRunner

    from slidesparse.commands.bench_quant import quant_cmd

    r = CliRunner().invoke(quant_cmd, ["--help"])
    assert r.exit_code == 0 and "copy" in r.output
    r = CliRunner().invoke(quant_cmd, ["--m", "0"])
    assert r.exit_code == 2 and "positive" in r.output
    r = CliRunner().invoke(quant_cmd, ["--model", "qwen2.5-7b", "--k", "2048"])
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(quant_cmd, ["--dtype", "int4"])
    assert isinstance(r.exception, ValueError) and "int8, fp8" in str(r.exception)
    if not torch.cuda.is_available():
        r = CliRunner().invoke(quant_cmd, ["--k", "2048", "--m", "64"])
        assert isinstance(r.exception, RuntimeError) and "CUDA" in str(r.exception)


def test_bench_quant_needs_cuda_and_known_kernels():
    from slidesparse.bench.quant import Shapes, run_quant_bench

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA"):
        run_quant_bench(shapes=Shapes((64,), (), (), ()), m_list=[64], qdtypes=["int8"], patterns=[None])


# --- RoPE + KV-cache write ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B, T, heads, kv_heads, D", [(2, 3, 4, 2, 32), (1, 1, 3, 1, 8), (3, 2, 5, 5, 16)])
def test_rope_cache_matches_reference(B, T, heads, kv_heads, D, dtype):
    from slidesparse.ops import rope_cache_reference

    g = torch.Generator().manual_seed(B * 100 + T * 10 + heads)
    qkv = (torch.randn(B, T, (heads + 2 * kv_heads) * D, generator=g) * 3).to(dtype)
    S = 7
    ang = torch.rand(T, D // 2, generator=g) * 50
    cos, sin = ang.cos(), ang.sin()
    pos = torch.randperm(S, generator=g)[:T]
    caches = [(torch.randn(B, kv_heads, S, D, generator=g)).to(dtype) for _ in range(2)]
    ref_k, ref_v = caches[0].clone(), caches[1].clone()
    k, v = caches[0].clone(), caches[1].clone()
    q_ref = rope_cache_reference(qkv, cos, sin, pos, ref_k, ref_v, heads, kv_heads)
    q = launch.rope_cache(qkv, cos, sin, pos, k, v, heads, kv_heads)
    assert q.shape == (B, heads, T, D)
    assert torch.equal(q.view(torch.int16), q_ref.view(torch.int16))
    assert torch.equal(k.view(torch.int16), ref_k.view(torch.int16))  # written slots and untouched ones
    assert torch.equal(v.view(torch.int16), ref_v.view(torch.int16))


def test_rope_cache_never_writes_outside_the_cache():
    """A slot outside [0, S) is skipped in the kernel (pos is on the device: no host check): the cache
    keeps every byte and the memory right after it too; q is still rotated and written."""
    from slidesparse.ops import rope_cache_reference

    g = torch.Generator().manual_seed(5)
    B, T, H, HKV, D, S = 2, 3, 2, 1, 8, 4
    qkv = torch.randn(B, T, (H + 2 * HKV) * D, generator=g).to(torch.bfloat16)
    ang = torch.rand(T, D // 2, generator=g)
    cos, sin = ang.cos(), ang.sin()
    big = [torch.randn(B, HKV, S + 2, D, generator=g).to(torch.bfloat16) for _ in range(2)]  # S + 2 slots
    before = [c.clone() for c in big]
    k, v = (c[:, :, :S] for c in big)  # the cache views: [B, HKV, S, D], memory after slot S-1 is live
    pos = torch.tensor([1, S, -1])
    q = launch.rope_cache(qkv, cos, sin, pos, k, v, H, HKV)
    rk, rv = before[0][:, :, :S].clone(), before[1][:, :, :S].clone()
    q_ref = rope_cache_reference(qkv[:, :1], cos[:1], sin[:1], pos[:1], rk, rv, H, HKV)
    assert torch.equal(q[:, :, :1].view(torch.int16), q_ref.view(torch.int16))
    assert torch.equal(k.view(torch.int16), rk.view(torch.int16)) and torch.equal(v.view(torch.int16), rv.view(torch.int16))
    for c, b in zip(big, before):  # slots S, S+1 of the backing tensor: untouched
        assert torch.equal(c[:, :, S:].view(torch.int16), b[:, :, S:].view(torch.int16))


def test_rope_cache_argument_errors():
    qkv = torch.zeros(1, 2, 8 * 4, dtype=torch.bfloat16)
    cos = sin = torch.zeros(2, 4)
    kc = vc = torch.zeros(1, 1, 5, 8, dtype=torch.bfloat16)
    pos = torch.arange(2)
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        launch.rope_cache(qkv, cos, sin, pos, kc, vc, 3, 1)          # 32 = (3 + 2) x 6.4
    with pytest.raises(ValueError, match="cos/sin"):
        launch.rope_cache(qkv, cos[:1], sin, pos, kc, vc, 2, 1)
    with pytest.raises(ValueError, match="pos"):
        launch.rope_cache(qkv, cos, sin, pos.int(), kc, vc, 2, 1)
    with pytest.raises(ValueError, match="k_cache"):
        launch.rope_cache(qkv, cos, sin, pos, kc.float(), vc, 2, 1)
    with pytest.raises(ValueError, match="same shape and strides"):  # one S bounds both caches' writes
        big = torch.zeros(1, 1, 9, 8, dtype=torch.bfloat16)
        launch.rope_cache(qkv, cos, sin, pos, big[:, :, :5], big[:, :, :7], 2, 1)
