"""Triton kernels on a real GPU: bit-exact against the torch references (computed on the same GPU),
at the built-in models' shapes and at the shapes whose element count exceeds 2**31.

Every output is poisoned before the call (q bytes 0x5A, scales NaN) and every element is checked.
Inputs are fresh random data each run (the seed is printed in failure messages).
"""

import time

import pytest
import torch

pytestmark = pytest.mark.gpu

FP8 = torch.float8_e4m3fn
# K (in_features) and N (out_features) of the four built-in models' linears (qkv, o, gate_up, down):
# Llama-3.2-1B, Llama-3.2-3B, Qwen2.5-7B, Qwen2.5-14B
MODEL_K = (2048, 3072, 3584, 5120, 8192, 13824, 18944)
MODEL_N = (2048, 3072, 3584, 4608, 5120, 7168, 16384, 27648, 37888)
HIDDEN = (2048, 3072, 3584, 5120)
INTER = (8192, 13824, 18944)
PATTERNS = (None, "2_6", "2_8", "2_10")  # 2:4 runs the plain path (its lift is the identity): see below


try:  # the exhaustive SiLU-division check's kernel (Triton is there whenever CUDA tests run)
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    from slidesparse.kernels import triton_kernels as _tk

    @triton.jit
    def _silu_division_kernel(bad_ptr, found_ptr, BLOCK: tl.constexpr, FOUND: tl.constexpr):
        """Counts the float32 gates g (bit patterns pid*BLOCK ..) whose _silu_mul(g, 1) differs from
        div_rn(g, 1 + exp(-g)) (NaN = NaN); the first FOUND of them (in no order) go to found_ptr."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        g = idx.to(tl.uint32).to(tl.float32, bitcast=True)
        got = _tk._silu_mul(g, 1.0, False)
        want = tl.math.div_rn(g, 1.0 + libdevice.exp(-g))
        differ = (got.to(tl.int32, bitcast=True) != want.to(tl.int32, bitcast=True)) & ((got == got) | (want == want))
        slot = tl.atomic_add(bad_ptr + tl.zeros_like(idx), 1, mask=differ)
        tl.store(found_ptr + slot, idx, mask=differ & (slot < FOUND))
except ImportError:  # no Triton: the GPU tests skip anyway
    _silu_division_kernel = None


class Rng:
    """A CUDA generator with a fresh seed per test; the seed goes into failure messages."""

    def __init__(self):
        self.seed = time.time_ns() % 2**31
        self.g = torch.Generator(device="cuda").manual_seed(self.seed)


@pytest.fixture
def gen():
    return Rng()


def _ops():
    from slidesparse.kernels import TritonOps

    return TritonOps(search_dir=None)


def _pat(p):
    from slidesparse.pattern import Pattern

    return None if p is None else Pattern.parse(p)


def _poisoned(M, kout, qd):
    from slidesparse.kernels.launch import m_pad
    from slidesparse.quant import torch_qdtype

    q = torch.full((m_pad(M), kout), 0x5A, dtype=torch.uint8, device="cuda").view(torch_qdtype(qd))
    s = torch.full((m_pad(M),), float("nan"), device="cuda")
    return q, s


def _bytes(t):
    return t.view(torch.uint8) if t.dtype.itemsize == 1 else t


def _check_quant(q, s, qr, sr, M, what):
    from slidesparse.quant import ABSMAX_FLOOR, qmax

    assert torch.equal(_bytes(q[:M]), _bytes(qr)), f"{what}: {int((_bytes(q[:M]) != _bytes(qr)).sum())} q bytes differ"
    assert torch.equal(s[:M], sr), f"{what}: {int((s[:M] != sr).sum())} scales differ"
    assert bool((_bytes(q[M:]) == 0).all()), f"{what}: padding rows of q not zero"
    qd = "fp8" if q.dtype == FP8 else "int8"
    zero_row = torch.full((1,), ABSMAX_FLOOR, device=s.device) / torch.full((1,), qmax(qd), device=s.device)
    assert bool((s[M:] == zero_row).all()), f"{what}: padding scales not the zero-row scale"


def _rand_x(M, K, gen, dtype=torch.bfloat16):
    x = torch.randn(M, K, device="cuda", generator=gen.g) * 4
    if M > 3:
        x[1] = 0                       # an all-zero row
        x[2] *= 1e-30                  # a tiny row (subnormal in bf16 for part of it)
        x[3, : K // 2] *= 1e4          # huge values next to ordinary ones
    return x.to(dtype)


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("K", MODEL_K)
def test_quant_model_shapes(K, pattern, qd, gen):
    from slidesparse.ops import ReferenceOps

    ops, ref = _ops(), ReferenceOps()
    for M in (1, 77, 4096):
        x = _rand_x(M, K, gen)
        qr, sr = ref.quant(x, qd, _pat(pattern))
        q, s = _poisoned(M, qr.shape[1], qd)
        ops.quant(x, qd, _pat(pattern), out=(q, s))
        _check_quant(q, s, qr, sr, M, f"quant K={K} M={M} {pattern} {qd} seed={gen.seed}")


@pytest.mark.parametrize("K", [2048, 18944, 200])
def test_quant_2to4_equals_lift_reference(K, gen):
    from slidesparse.ops import ReferenceOps

    for qd in ("int8", "fp8"):
        x = _rand_x(77, K, gen)
        qr, sr = ReferenceOps().quant(x, qd, _pat("2_4"))
        q, s = _poisoned(77, qr.shape[1], qd)
        _ops().quant(x, qd, _pat("2_4"), out=(q, s))
        _check_quant(q, s, qr, sr, 77, f"2:4 K={K} {qd} seed={gen.seed}")


@pytest.mark.parametrize("xdtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("qd", ["int8", "fp8"])
def test_quant_other_input_dtypes(xdtype, qd, gen):
    from slidesparse.ops import ReferenceOps

    ops, ref = _ops(), ReferenceOps()
    for K, pattern in ((3584, None), (18944, "2_8"), (200, "2_6")):
        x = _rand_x(300, K, gen, xdtype) if xdtype == torch.float32 else \
            (torch.randn(300, K, device="cuda", generator=gen.g) * 4).to(xdtype)
        qr, sr = ref.quant(x, qd, _pat(pattern))
        q, s = _poisoned(300, qr.shape[1], qd)
        ops.quant(x, qd, _pat(pattern), out=(q, s))
        _check_quant(q, s, qr, sr, 300, f"quant {xdtype} K={K} {pattern} {qd} seed={gen.seed}")


@pytest.mark.parametrize("acc_dtype", [torch.int32, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("N", MODEL_N)
def test_dequant_model_shapes(N, acc_dtype, gen):
    from slidesparse.quant import dequant

    ops = _ops()
    M = 1000
    if acc_dtype == torch.int32:
        buf = torch.randint(-2**24, 2**24, (M + 16, N + 32), device="cuda", dtype=torch.int32, generator=gen.g)
    else:
        buf = (torch.randn(M + 16, N + 32, device="cuda", generator=gen.g) * 1000).to(acc_dtype)
    acc = buf[:M, :N]  # a row slice of a padded buffer: row stride > N
    sa = torch.rand(M + 16, device="cuda", generator=gen.g) * 1e-2
    sb = torch.rand(N, device="cuda", generator=gen.g) * 1e-2
    bias = torch.randn(N, device="cuda", generator=gen.g)
    for b in (None, bias):
        for od in (torch.bfloat16, torch.float16):
            out = torch.full((M, N), float("nan"), dtype=od, device="cuda")
            ops.dequant(acc, sa, sb, b, od, out=out)
            want = dequant(acc, sa, sb, b, od)
            assert torch.equal(out, want), (f"dequant N={N} {acc_dtype} bias={b is not None} {od}: "
                                            f"{int((out != want).sum())} differ, seed={gen.seed}")


def test_dequant_beyond_2_31_elements(gen):
    """Qwen2.5-7B gate_up at M=65536: [65536, 37888] int32 = 2.48e9 elements (9.9 GB)."""
    from slidesparse.quant import dequant

    M, N = 65536, 37888
    assert M * N > 2**31
    acc = torch.randint(-2**24, 2**24, (M, N), device="cuda", dtype=torch.int32, generator=gen.g)
    sa = torch.rand(M, device="cuda", generator=gen.g) * 1e-3
    sb = torch.rand(N, device="cuda", generator=gen.g) * 1e-3
    bias = torch.randn(N, device="cuda", generator=gen.g).to(torch.bfloat16)
    out = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
    _ops().dequant(acc, sa, sb, bias, torch.bfloat16, out=out)
    for r0 in range(0, M, 4096):
        want = dequant(acc[r0:r0 + 4096], sa[r0:r0 + 4096], sb, bias, torch.bfloat16)
        assert torch.equal(out[r0:r0 + 4096], want), f"rows {r0}..{r0 + 4095} differ, seed={gen.seed}"
    del acc, out
    torch.cuda.empty_cache()


def test_quant_lift_beyond_2_31_elements(gen):
    """Qwen2.5-7B down input at M=65536 with 8:10 lifting: [65536, 18944] bf16 (2.5 GB) ->
    [65536, 30336] (1.99e9 elements, just under 2**31): rows far past 2**31 bytes of input."""
    from slidesparse.ops import ReferenceOps

    M, K, pattern = 65536, 18944, _pat("2_10")
    x = (torch.randn(M, K, device="cuda", generator=gen.g) * 3).to(torch.bfloat16)
    kout = pattern.slid_k(K)
    for qd in ("int8", "fp8"):
        q, s = _poisoned(M, kout, qd)
        _ops().quant(x, qd, pattern, out=(q, s))
        for r0 in range(0, M, 4096):
            qr, sr = ReferenceOps().quant(x[r0:r0 + 4096], qd, pattern)
            assert torch.equal(_bytes(q[r0:r0 + 4096]), _bytes(qr)), f"{qd} rows {r0}.. differ, seed={gen.seed}"
            assert torch.equal(s[r0:r0 + 4096], sr), f"{qd} scales {r0}.. differ"
    del x, q
    torch.cuda.empty_cache()


def test_silu_mul_quant_beyond_2_31_elements(gen):
    """The gate_up output of Qwen2.5-7B at M=65536, [65536, 37888] bf16 (2.48e9 elements), straight
    into silu*up -> quant + 8:10 lift for the down projection."""
    from slidesparse.kernels.reference import silu_mul_quant_ref

    M, inter, pattern = 65536, 18944, _pat("2_10")
    gu = (torch.randn(M, 2 * inter, device="cuda", generator=gen.g) * 3).to(torch.bfloat16)
    assert gu.numel() > 2**31
    q, s = _poisoned(M, pattern.slid_k(inter), "int8")
    _ops().silu_mul_quant(gu, "int8", pattern, out=(q, s))
    for r0 in range(0, M, 4096):
        qr, sr = silu_mul_quant_ref(gu[r0:r0 + 4096], "int8", pattern)
        assert torch.equal(q[r0:r0 + 4096], qr), f"rows {r0}.. differ, seed={gen.seed}"
        assert torch.equal(s[r0:r0 + 4096], sr), f"scales {r0}.. differ"
    del gu, q
    torch.cuda.empty_cache()


def test_silu_division_at_every_float32():
    """SiLU's division (``_div_by_1pe``: Newton steps, no slow path) equals div_rn at every float32
    gate value, all 2**32 bit patterns (NaN = NaN): the gate of any bf16 / fp16 / fp32 input is one
    of them, so this covers every input the kernels can see."""
    bad = torch.zeros(1, dtype=torch.int64, device="cuda")
    found = torch.zeros(16, dtype=torch.int64, device="cuda")
    block = 8192
    _silu_division_kernel[(2**32 // block,)](bad, found, BLOCK=block, FOUND=16, num_warps=8, enable_fp_fusion=False)
    n = int(bad[0])
    gates = found[:min(n, 16)].to(torch.int32).view(torch.float32).tolist()
    assert n == 0, f"{n} float32 gate values differ from div_rn, e.g. {gates}"


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_8", "2_10"])
def test_rmsnorm_quant_model_shapes(pattern, qd, gen):
    from slidesparse.kernels.reference import rmsnorm_quant_ref

    ops = _ops()
    for K in HIDDEN:
        for M in (3, 1000):
            x = _rand_x(M, K, gen)
            w = (torch.rand(K, device="cuda", generator=gen.g) + 0.5).to(torch.bfloat16)
            qr, sr = rmsnorm_quant_ref(x, w, 1e-5, qd, _pat(pattern))
            q, s = _poisoned(M, qr.shape[1], qd)
            ops.rmsnorm_quant(x, w, 1e-5, qd, _pat(pattern), out=(q, s))
            _check_quant(q, s, qr, sr, M, f"rmsnorm K={K} M={M} {pattern} {qd} seed={gen.seed}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", [None, "2_8", "2_10"])
def test_silu_mul_quant_model_shapes(pattern, qd, gen):
    from slidesparse.kernels.reference import silu_mul_quant_ref

    ops = _ops()
    for inter in INTER:
        for M in (3, 1000):
            gu = (torch.randn(M, 2 * inter, device="cuda", generator=gen.g) * 4).to(torch.bfloat16)
            qr, sr = silu_mul_quant_ref(gu, qd, _pat(pattern))
            q, s = _poisoned(M, qr.shape[1], qd)
            ops.silu_mul_quant(gu, qd, _pat(pattern), out=(q, s))
            _check_quant(q, s, qr, sr, M, f"silu I={inter} M={M} {pattern} {qd} seed={gen.seed}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
def test_every_launch_config_is_exact(qd, gen):
    """The tuner's candidate configs all give the reference's bits (a tuned config cannot change
    results): plain quant, RMSNorm and SiLU producers, window-reading and scattered lifts, split rows,
    pair tiles (each warp count: a tile smaller than the threads is laid out differently; each
    unit of groups, and smaller units in the later tiles: SHRINK), INT8 and FP8 (the pair kernel packs FP8 words in its own way)."""
    from slidesparse.kernels import launch
    from slidesparse.kernels import reference as R
    from slidesparse.kernels import triton_kernels as tk
    from slidesparse.kernels.tune import candidate_configs
    from slidesparse.ops import ReferenceOps

    for kernel, K, pattern in (("quant", 2048, None), ("quant", 18944, "2_10"), ("rmsnorm_quant", 3584, "2_8"),
                               ("rmsnorm_quant", 5120, None), ("silu_mul_quant", 18944, "2_10"),
                               ("silu_mul_quant", 13824, None), ("quant", 3072, "2_6"), ("silu_mul_quant", 8192, "2_8")):
        pat = _pat(pattern)
        if kernel == "silu_mul_quant":
            x = _rand_x(64, 2 * K, gen)
            qr, sr = R.silu_mul_quant_ref(x, qd, pat)
            kw = {"producer": tk.SILU_MUL}
        elif kernel == "rmsnorm_quant":
            x = _rand_x(64, K, gen)
            w = (torch.rand(K, device="cuda", generator=gen.g) + 0.5).to(torch.bfloat16)
            qr, sr = R.rmsnorm_quant_ref(x, w, 1e-6, qd, pat)
            kw = {"producer": tk.RMSNORM, "weight": w, "eps": 1e-6}
        else:
            x = _rand_x(64, K, gen)
            qr, sr = ReferenceOps().quant(x, qd, pat)
            kw = {}
        seen = set()
        for cfg in candidate_configs(kernel, K, pattern):
            shape = (cfg["BLOCK_K"], cfg.get("SCATTER", 0), cfg.get("SPLIT", 0), cfg["ROWS"], cfg.get("PERSIST", 0),
                     cfg.get("HOIST_W", 0), cfg.get("BLOCK_G", 0), cfg["num_warps"] if cfg.get("BLOCK_G") else 0,
                     cfg.get("UNIT", 1), cfg.get("SHRINK", 0), cfg.get("MAXNREG", 0))
            if shape in seen:  # warps and window blocks do not change which code runs; keeps compiles few
                continue
            seen.add(shape)
            q, s = _poisoned(64, qr.shape[1], qd)
            launch.quant(x, qd, pat, cfg, out=(q, s), **kw)
            _check_quant(q, s, qr, sr, 64, f"{kernel} K={K} {pattern} {qd} config {cfg}")


@pytest.mark.parametrize("qd", ["int8", "fp8"])
@pytest.mark.parametrize("kernel, K, pattern", [
    ("rmsnorm_quant", 5120, None), ("silu_mul_quant", 13824, None), ("silu_mul_quant", 18944, None),
    ("silu_mul_quant", 8192, None), ("silu_mul_quant", 13824, "2_8"), ("silu_mul_quant", 18944, "2_8"),
    ("rmsnorm_quant", 3072, "2_8"), ("rmsnorm_quant", 3584, "2_8"), ("rmsnorm_quant", 5120, "2_8")])
def test_persistent_default_equals_one_row_per_program(kernel, K, pattern, qd, gen):
    """The persistent schedules (PERSIST; the default for dense RMSNorm K = 5120, SiLU I = 18944 and
    INT8 I = 13824, and for the pair tiles of SiLU 6:8 I = 13824 / 18944 and RMSNorm 6:8 K = 3072 /
    3584 / 5120, the last three and SiLU 18944 in units that shrink along the row;
    forced elsewhere: the path still has to be exact) give the same bits as the same config run one
    row tile per program, and write every element (two different poisons), at an M that is not a
    multiple of the grid; at small M too (fewer row tiles than SMs)."""
    from slidesparse.kernels import launch
    from slidesparse.kernels import triton_kernels as tk
    from slidesparse.kernels.configs import default_config

    pat = _pat(pattern)
    cfg = default_config(kernel, K, qd, pat)
    assert bool(cfg.get("PERSIST")) == (pattern is not None or kernel == "rmsnorm_quant" or K == 18944
                                        or (K == 13824 and qd == "int8"))
    assert bool(cfg.get("BLOCK_G")) == (pattern is not None)
    cfg = {**cfg, "PERSIST": cfg.get("PERSIST") or 1, "MAXNREG": 0}
    plain = {**cfg, "PERSIST": 0, "HOIST_W": 0}
    w = (torch.rand(K, device="cuda", generator=gen.g) + 0.5).to(torch.bfloat16)
    kw = {"producer": tk.RMSNORM, "weight": w, "eps": 1e-5} if kernel == "rmsnorm_quant" else {"producer": tk.SILU_MUL}
    for M in (4096 + 77, 33):
        x = _rand_x(M, 2 * K if kernel == "silu_mul_quant" else K, gen)
        want = _poisoned(M, launch.out_k(K, pat), qd)
        launch.quant(x, qd, pat, plain, out=want, **kw)
        for byte in (0x5A, 0xA5):
            got = _poisoned(M, launch.out_k(K, pat), qd)
            got[0].view(torch.uint8).fill_(byte)
            launch.quant(x, qd, pat, cfg, out=got, **kw)
            torch.cuda.synchronize()
            what = f"{kernel} K={K} {pattern} M={M} {qd} {cfg} poison {byte:#x} seed={gen.seed}"
            assert torch.equal(_bytes(got[0]), _bytes(want[0])), \
                f"{what}: {int((_bytes(got[0]) != _bytes(want[0])).sum())} q bytes differ"
            assert torch.equal(got[1].view(torch.int32), want[1].view(torch.int32)), f"{what}: scales differ"
        assert bool(torch.isfinite(want[1]).all())


def test_persistent_cuda_graph_capture(gen):
    """A persistent launch (SiLU I = 18944 default) captures and replays: the grid depends on M only."""
    from slidesparse.kernels.configs import default_config
    from slidesparse.kernels.reference import silu_mul_quant_ref

    assert default_config("silu_mul_quant", 18944, "fp8", None).get("PERSIST")
    ops = _ops()
    M, inter = 300, 18944
    gu = (torch.randn(M, 2 * inter, device="cuda", generator=gen.g) * 4).to(torch.bfloat16)
    q, s = _poisoned(M, inter, "fp8")
    ops.silu_mul_quant(gu, "fp8", None, out=(q, s))  # compile outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        ops.silu_mul_quant(gu, "fp8", None, out=(q, s))
    gu.copy_((torch.randn(M, 2 * inter, device="cuda", generator=gen.g) * 4).to(torch.bfloat16))
    q.view(torch.uint8).fill_(0x5A)
    s.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    qr, sr = silu_mul_quant_ref(gu, "fp8", None)
    _check_quant(q, s, qr, sr, M, f"persistent graph replay seed={gen.seed}")


def test_cuda_graph_capture(gen):
    """quant + dequant with preallocated outputs can be captured and replayed."""
    from slidesparse.ops import ReferenceOps
    from slidesparse.quant import dequant

    ops = _ops()
    M, K, N, pattern = 256, 3584, 4608, _pat("2_8")
    x = (torch.randn(M, K, device="cuda", generator=gen.g)).to(torch.bfloat16)
    q, s = _poisoned(M, pattern.slid_k(K), "int8")
    acc = torch.randint(-2**20, 2**20, (M, N), device="cuda", dtype=torch.int32, generator=gen.g)
    sb = torch.rand(N, device="cuda", generator=gen.g)
    out = torch.empty(M, N, dtype=torch.bfloat16, device="cuda")
    ops.quant(x, "int8", pattern, out=(q, s))  # compile outside the capture
    ops.dequant(acc, s, sb, None, torch.bfloat16, out=out)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        ops.quant(x, "int8", pattern, out=(q, s))
        ops.dequant(acc, s, sb, None, torch.bfloat16, out=out)
    x.copy_((torch.randn(M, K, device="cuda", generator=gen.g)).to(torch.bfloat16))
    q.view(torch.uint8).fill_(0x5A)
    g.replay()
    torch.cuda.synchronize()
    qr, sr = ReferenceOps().quant(x, "int8", pattern)
    _check_quant(q, s, qr, sr, M, "graph replay")
    assert torch.equal(out, dequant(acc, s[:M], sb, None, torch.bfloat16))


def test_rounding_ties_on_the_hardware_paths():
    """absmax 127 / 448 makes inv exactly 1: q = rint(x) (ties to even) and q = e4m3(x) (every
    midpoint between neighbours, subnormals included) through the GPU's own conversions; dequant's
    bf16 cast at exact ties."""
    from slidesparse.quant import dequant

    ops = _ops()
    ties = torch.arange(-127, 127, dtype=torch.float32, device="cuda") + 0.5
    x = torch.cat([ties, torch.tensor([127.0, -127.0, 0.25, -0.75], device="cuda")])[None, :]
    q, s = ops.quant(x, "int8", None)
    assert float(s[0]) == 1.0 and torch.equal(q[0, :x.shape[1]], torch.round(x[0]).to(torch.int8))

    vals = torch.arange(0, 256, dtype=torch.int32).to(torch.uint8).view(FP8).float()
    pos = torch.unique(vals[torch.isfinite(vals) & (vals >= 0)]).cuda()
    mids = (pos[1:] + pos[:-1]) / 2
    near = torch.cat([torch.nextafter(mids, torch.zeros((), device="cuda")),
                      torch.nextafter(mids, torch.full((), 1e9, device="cuda"))])
    v = torch.cat([pos, mids, near])
    x = torch.cat([v, -v, torch.tensor([448.0], device="cuda")])[None, :]
    q, s = ops.quant(x, "fp8", None)
    assert float(s[0]) == 1.0 and torch.equal(_bytes(q[0, :x.shape[1]]), _bytes(x[0].cpu().to(FP8).cuda()))

    t = [(2 * m + 1) * 2**14 for m in range(128, 256)]
    acc = torch.tensor([t + [a + 1 for a in t] + [a - 1 for a in t]], dtype=torch.int32, device="cuda")
    one = torch.ones(1, device="cuda")
    sb = torch.ones(acc.shape[1], device="cuda")
    assert torch.equal(ops.dequant(acc, one, sb, None, torch.bfloat16), dequant(acc, one, sb, None, torch.bfloat16))


@pytest.mark.parametrize("heads, kv_heads, D", [(28, 4, 128), (32, 8, 64), (40, 8, 128)])
@pytest.mark.parametrize("B, T", [(64, 1), (2, 16)])
def test_rope_cache_model_shapes(heads, kv_heads, D, B, T, gen):
    """The fused RoPE + KV-cache write equals the torch reference bit for bit (decode and prefill)."""
    from slidesparse.kernels import launch
    from slidesparse.ops import rope_cache_reference

    qkv = (torch.randn(B, T, (heads + 2 * kv_heads) * D, device="cuda", generator=gen.g) * 3).to(torch.bfloat16)
    S = 40
    ang = torch.rand(T, D // 2, device="cuda", generator=gen.g) * 1000
    cos, sin = ang.cos(), ang.sin()
    pos = torch.arange(T, device="cuda") + (S - T if T == 1 else 0)
    kc = torch.randn(B, kv_heads, S, D, device="cuda", generator=gen.g).to(torch.bfloat16)
    vc = torch.randn(B, kv_heads, S, D, device="cuda", generator=gen.g).to(torch.bfloat16)
    kr, vr = kc.clone(), vc.clone()
    q_ref = rope_cache_reference(qkv, cos, sin, pos, kr, vr, heads, kv_heads)
    q = launch.rope_cache(qkv, cos, sin, pos, kc, vc, heads, kv_heads)
    assert torch.equal(q.view(torch.int16), q_ref.view(torch.int16)), f"q differs seed={gen.seed}"
    assert torch.equal(kc.view(torch.int16), kr.view(torch.int16)), f"k cache differs seed={gen.seed}"
    assert torch.equal(vc.view(torch.int16), vr.view(torch.int16)), f"v cache differs seed={gen.seed}"
