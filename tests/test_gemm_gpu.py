"""GPU tests of the cuBLASLt / cuSPARSELt backends (skipped without CUDA).

Run on the GPU box:  pytest -q -s -m gpu tests/test_gemm_gpu.py
"""

from __future__ import annotations

import threading

import pytest
import torch

from slidesparse.models import DEFAULT_MODELS, get_model
from slidesparse.pattern import Pattern
from slidesparse.sparsify import lift, prune, slide

pytestmark = pytest.mark.gpu

PATTERNS = ("2_4", "2_6", "2_8", "2_10")


@pytest.fixture(scope="module")
def dense():
    from slidesparse.gemm.cublaslt import CublasLtBackend
    be = CublasLtBackend()
    yield be
    be.close()


@pytest.fixture(scope="module")
def sparse():
    from slidesparse.gemm.cusparselt import CusparseLtBackend
    be = CusparseLtBackend()
    yield be
    be.close()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device="cuda").manual_seed(seed)


def _rand(rows, cols, qdtype, seed):
    from slidesparse.gemm.verify import random_q
    return random_q(rows, cols, qdtype, "cuda", _gen(seed))


def _ref(x, w):
    from slidesparse.gemm.verify import reference_mm
    return reference_mm(x, w)


def test_versions_and_single_cusparselt_copy(dense, sparse):
    d, s = dense.describe(), sparse.describe()
    print("\ncuBLASLt:", d["version"], d.get("cublaslt_files"))
    print("cuSPARSELt:", s["version"], "handle", s["handle_version"], s.get("cusparselt_files"),
          "torch's:", s.get("torch_cusparselt"))
    assert d["version"].count(".") == 2 and s["version"].count(".") == 2
    assert "warning" not in s, s["warning"]
    if s.get("torch_cusparselt"):
        assert s["torch_cusparselt"] == s["version"]


@pytest.mark.parametrize("model", DEFAULT_MODELS)
def test_int8_sparse_equals_dense_equals_reference(dense, sparse, model):
    """cusparselt(lift(x), slide(prune(w))) == cublaslt(x, prune(w)) == int32 reference, every pattern."""
    shapes = get_model(model).linear_shapes()
    M = 128
    for i, (lin, (n, k)) in enumerate(shapes.items()):
        w = _rand(n, k, "int8", 10 + i)
        x = _rand(M, k, "int8", 20 + i)
        for pat in PATTERNS:
            p = Pattern.parse(pat)
            wp = prune(w, p)
            ref = _ref(x, wp)
            yd = dense.mm(x, dense.prepare(wp), torch.int32)
            assert torch.equal(yd, ref), f"{model} {lin} {pat}: dense != reference"
            sw = sparse.prepare(slide(wp, p))
            ys = sparse.mm(lift(x, p), sw, torch.int32)
            assert torch.equal(ys, ref), f"{model} {lin} {pat}: sparse != reference"
            yb = sparse.mm(lift(x, p), sw, torch.bfloat16)  # INT8 -> bf16: the int32 result rounded once or twice
            assert torch.allclose(yb.float(), ref.float(), rtol=2 ** -7, atol=0), f"{model} {lin} {pat}: bf16 out"


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_fp8_relative_error(dense, sparse, out_dtype):
    from slidesparse.gemm.verify import rel_error
    M = 256
    for i, (lin, (n, k)) in enumerate(get_model("qwen2.5-7b").linear_shapes().items()):
        w = _rand(n, k, "fp8", 30 + i)
        x = _rand(M, k, "fp8", 40 + i)
        for pat in ("2_4", "2_8"):
            p = Pattern.parse(pat)
            wp = prune(w, p)
            ref = _ref(x, wp)
            ed = rel_error(dense.mm(x, dense.prepare(wp), out_dtype), ref)
            es = rel_error(sparse.mm(lift(x, p), sparse.prepare(slide(wp, p)), out_dtype), ref)
            assert ed <= 1e-2 and es <= 1e-2, f"{lin} {pat} {out_dtype}: dense {ed:.2e}, sparse {es:.2e}"


def _sparse_problem(n=4608, k=3584, m=256, pattern="2_8", seed=5):
    p = Pattern.parse(pattern)
    wp = prune(_rand(n, k, "int8", seed), p)
    x = _rand(m, k, "int8", seed + 1)
    return slide(wp, p), lift(x, p), _ref(x, wp)


def test_every_config_id_runs_exactly_on_the_shared_compressed_weight(sparse):
    """The one SpMMACompress2 copy is right for every config id (and a few split-K variants)."""
    from slidesparse.gemm.plan_cache import SparseConfig
    ws, xl, ref = _sparse_problem()
    w = sparse.prepare(ws)
    max_id = sparse.max_config_id(ws.shape[0], ws.shape[1], xl.shape[0], "int8", torch.int32)
    assert max_id >= 1
    bad = []
    cfgs = [SparseConfig(a) for a in range(max_id)] + [SparseConfig(a, -1, mode) for a in (0, max_id - 1)
                                                        for mode in (1, 2)]
    cfgs += [SparseConfig(0, sk, mode) for sk in (2, 4) for mode in (1, 2)]  # refused by 0.8 on sm90
    ran = 0
    for cfg in cfgs:
        out = torch.full((xl.shape[0], ws.shape[0]), -(2 ** 31), dtype=torch.int32, device="cuda")
        try:
            sparse.mm(xl, w, torch.int32, out, config=cfg)
        except RuntimeError as e:  # a config the library refuses for this shape is not a wrong result
            print(f"\n{cfg.label()}: refused ({e})")
            continue
        ran += 1
        if not torch.equal(out, ref):
            bad.append(cfg.label())
    print(f"\nCONFIG_MAX_ID={max_id}, {ran} of {len(cfgs)} configs ran")
    assert ran >= max_id + 4 and not bad, f"wrong results for {bad}"  # every id, and split-K -1 in both modes


def test_compress2_bytes_equal_plan_compress_for_every_config(sparse):
    from slidesparse.gemm.plan_cache import SparseConfig
    ws, xl, _ = _sparse_problem(n=1024, k=2048, m=64)
    shared = sparse.prepare(ws).data
    max_id = sparse.max_config_id(1024, 2048, 64, "int8", torch.int32)
    differ = []
    for a in range(max_id):
        try:
            per = sparse.compress_with_plan(ws, SparseConfig(a), 64, torch.int32)
        except RuntimeError:
            continue
        if per.numel() != shared.numel() or not torch.equal(per, shared):
            differ.append(a)
    assert not differ, f"plan-based compression differs from SpMMACompress2 for config ids {differ}"


def test_m65536_qwen7b(dense, sparse):
    """M = 65536 on Qwen2.5-7B's shapes (gate_up output: 2.5e9 elements > 2^31)."""
    from slidesparse.gemm.verify import rel_error
    M = 65536
    p = Pattern.parse("2_8")
    for i, (lin, (n, k)) in enumerate(get_model("qwen2.5-7b").linear_shapes().items()):
        for qd, out_dtype in (("int8", torch.int32), ("fp8", torch.bfloat16)):
            wp = prune(_rand(n, k, qd, 50 + i), p)
            x = _rand(M, k, qd, 60 + i)
            ref = _ref(x, wp)
            y = dense.mm(x, dense.prepare(wp), out_dtype)
            if qd == "int8":
                assert torch.equal(y, ref), f"{lin} dense int8 M=65536"
            else:
                assert rel_error(y, ref) <= 1e-2, f"{lin} dense fp8 M=65536"
            del y
            xl = lift(x, p)
            del x
            y = sparse.mm(xl, sparse.prepare(slide(wp, p)), out_dtype)
            if qd == "int8":
                assert torch.equal(y, ref), f"{lin} sparse int8 M=65536"
            else:
                assert rel_error(y, ref) <= 1e-2, f"{lin} sparse fp8 M=65536"
            del y, ref, xl
            torch.cuda.empty_cache()


@pytest.mark.parametrize("m", [64, 40])
def test_cuda_graph_capture_and_replay(dense, sparse, m):
    ws, _, _ = _sparse_problem(n=2048, k=2048, m=16)
    wd = dense.prepare(_rand(2048, 2048, "int8", 7))
    wsp = sparse.prepare(ws)
    xd = _rand(m, 2048, "int8", 8)
    xs = _rand(m, ws.shape[1], "int8", 9)
    od = torch.empty(m, 2048, dtype=torch.int32, device="cuda")
    os_ = torch.empty(m, 2048, dtype=torch.int32, device="cuda")
    dense.warmup(wd, [m], torch.int32)
    sparse.warmup(wsp, [m], torch.int32)
    dense.mm(xd, wd, torch.int32, od)  # first eager calls outside capture
    sparse.mm(xs, wsp, torch.int32, os_)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        dense.mm(xd, wd, torch.int32, od)
        sparse.mm(xs, wsp, torch.int32, os_)
    for seed in (11, 12):
        xd.copy_(_rand(m, 2048, "int8", seed))
        xs.copy_(_rand(m, ws.shape[1], "int8", seed + 100))
        od.fill_(-1)
        os_.fill_(-1)
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(od, dense.mm(xd, wd, torch.int32)), "dense replay != eager"
        assert torch.equal(os_, sparse.mm(xs, wsp, torch.int32)), "sparse replay != eager"


@pytest.mark.parametrize("m", [1, 17, 40, 64, 100])
def test_poisoned_outputs_fully_written(dense, sparse, m):
    ws, _, _ = _sparse_problem(n=1024, k=1024, m=16)
    wd_q = _rand(1024, 1024, "int8", 3)
    wd, wsp = dense.prepare(wd_q), sparse.prepare(ws)
    xd, xs = _rand(m, 1024, "int8", 4), _rand(m, ws.shape[1], "int8", 5)
    for be, w, x, wq in ((dense, wd, xd, wd_q), (sparse, wsp, xs, ws)):
        ref = _ref(x, wq)
        out = torch.full((m, 1024), -(2 ** 31), dtype=torch.int32, device="cuda")
        be.mm(x, w, torch.int32, out)
        assert not bool((out == -(2 ** 31)).any()), f"{be.name} M={m}: unwritten int32 outputs"
        assert torch.equal(out, ref), f"{be.name} M={m}"
        y = be.mm(x, w, torch.int32)  # out=None path (sparse: a view of a padded allocation)
        assert y.shape == (m, 1024) and y.is_contiguous() and torch.equal(y, ref)
    xf = _rand(m, ws.shape[1], "fp8", 6)
    wf = sparse.prepare(prune(_rand(1024, ws.shape[1], "fp8", 7), "2_4"))
    out = torch.full((m, 1024), float("nan"), dtype=torch.bfloat16, device="cuda")
    sparse.mm(xf, wf, torch.bfloat16, out)
    assert not bool(out.isnan().any()), f"sparse fp8 M={m}: unwritten bf16 outputs"


def test_alpha_vector_scaling(sparse):
    ws, xl, ref = _sparse_problem(n=1024, k=2048, m=64)
    w = sparse.prepare(ws)
    scale = torch.rand(1024, device="cuda", generator=_gen(1)) * 1e-3 + 1e-4
    y = sparse.mm(xl, w, torch.bfloat16, alpha=scale)
    expect = ref.double() * scale.double()
    assert torch.allclose(y.double(), expect, rtol=2 ** -7, atol=0)
    with pytest.raises(ValueError, match="float output"):
        sparse.mm(xl, w, torch.int32, alpha=scale)
    with pytest.raises(ValueError, match="N=1024"):
        sparse.mm(xl, w, torch.bfloat16, alpha=scale[:10])


@pytest.mark.parametrize("pattern", ["2:4", "6:8"])
def test_linear_int8_sparse_epilogue_bf16_alpha(sparse, pattern):
    """SlideSparseLinear's default sparse INT8 epilogue on cuSPARSELt (bf16 + weight scale as alpha):
    the GEMM output is alpha[n] * the exact int32 result within one bf16 rounding, the layer is close
    to the exact int32 layer, and it can be captured in a CUDA graph."""
    from torch import nn

    from slidesparse.kernels import TritonOps
    from slidesparse.linear import Epilogue, SlideSparseLinear

    torch.manual_seed(3)
    lin = nn.Linear(3584, 4608, bias=True).cuda()
    ops = TritonOps(search_dir=None)
    kw = {"qdtype": "int8", "pattern": pattern, "ops": ops}
    fast = SlideSparseLinear.from_linear(lin, backend=sparse, **kw)
    exact = SlideSparseLinear.from_linear(lin, backend=sparse, acc_dtype=torch.int32, **kw)
    assert fast.epilogue == Epilogue(torch.bfloat16, True)
    x = torch.randn(40, 3584, device="cuda").to(torch.bfloat16)
    q, _ = ops.quant(x, "int8", fast.pattern)
    acc = sparse.mm(q, fast.gemm_weight, torch.bfloat16, alpha=fast.weight_scale).float()
    want = sparse.mm(q, fast.gemm_weight, torch.int32).double() * fast.weight_scale.double()
    assert bool(((acc.double() - want).abs() <= want.abs() * 2 ** -8 + 1e-30).all())  # one bf16 rounding
    y, ref = fast(x), exact(x)
    err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
    assert 0 < err < 5e-3, err
    xs = x.clone()
    fast(xs)  # plans built outside capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fast(xs)
    xs.copy_(torch.randn(40, 3584, device="cuda").to(torch.bfloat16))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, fast(xs))


def test_library_prune_check_rejects_dense_weight(sparse):
    w = _rand(64, 64, "int8", 1)
    w[w == 0] = 1  # no zeros at all: certainly not 2:4
    with pytest.raises(ValueError, match="prune check"):
        sparse.prune_check(w)
    with pytest.raises(ValueError, match="not 2:4"):
        sparse.prepare(w)


def test_host_overhead_per_cached_call(dense, sparse):
    from slidesparse.gemm.timing import host_us_per_call
    n, k = get_model("qwen2.5-7b").linear_shapes()["qkv"]
    p = Pattern.parse("2_8")
    wq = prune(_rand(n, k, "int8", 1), p)
    wd, wsp = dense.prepare(wq), sparse.prepare(slide(wq, p))
    x = _rand(64, k, "int8", 2)
    xl = lift(x, p)
    od = torch.empty(64, n, dtype=torch.int32, device="cuda")
    os_ = torch.empty(64, n, dtype=torch.int32, device="cuda")
    hs = host_us_per_call(lambda: sparse.mm(xl, wsp, torch.int32, os_))
    hd = host_us_per_call(lambda: dense.mm(x, wd, torch.int32, od))
    print(f"\nhost time per cached call at M=64: cusparselt {hs:.1f} us, cublaslt {hd:.1f} us (target <= 25 us)")
    assert hs < 100 and hd < 100


def test_threads_get_their_own_handles(sparse):
    ws, xl, ref = _sparse_problem(n=1024, k=1024, m=64)
    w = sparse.prepare(ws)
    errors, outs = [], {}

    def work(i):
        try:
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                y = None
                for _ in range(20):
                    y = sparse.mm(xl, w, torch.int32)
                s.synchronize()
                outs[i] = y
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert all(torch.equal(outs[i], ref) for i in range(3))
    assert len(sparse._ctxs.all()) >= 3  # one context per thread that ran


def test_time_calls_inside_and_after_inference_mode():
    """The cached L2-flush buffer works in and out of inference mode, whichever came first (a tune after a
    benchmark in one process once rejected every candidate: zero_() on an inference tensor)."""
    from slidesparse.gemm import timing

    timing._FLUSH.clear()
    x = torch.randn(256, 256, device="cuda")
    with torch.inference_mode():
        assert len(timing.time_calls(lambda: x @ x, warmup=1, repeat=3, flush_l2=True)) == 3
    assert len(timing.time_calls(lambda: x @ x, warmup=1, repeat=3, flush_l2=True)) == 3


def test_tuning_roundtrip(tmp_path):
    """tune both libraries on one small shape, then the backends pick the tuned algorithms up."""
    from slidesparse.gemm.cublaslt import CublasLtBackend
    from slidesparse.gemm.cusparselt import CusparseLtBackend
    from slidesparse.gemm.tuning import tune_cublaslt, tune_cusparselt
    from slidesparse.gemm.tuning_db import TuningStore

    store = TuningStore(tmp_path, hwtag="TEST")
    s1 = tune_cublaslt([(1024, 1024)], [64, 256], "int8", torch.int32, db=store.db("cublaslt", "int8"),
                       max_candidates=8, warmup=2, repeat=5)
    s2 = tune_cusparselt([(1024, 1024)], [64, 256], "int8", torch.int32, db=store.db("cusparselt", "int8"),
                         split_ks=(1, 2), warmup=2, repeat=5)
    assert len(s1.tuned) == 2 and len(s2.tuned) == 2, (s1, s2)
    assert (tmp_path / "TEST" / "cublaslt_INT8.json").exists()
    # resume: everything is already there
    s3 = tune_cusparselt([(1024, 1024)], [64, 256], "int8", torch.int32,
                         db=TuningStore(tmp_path, hwtag="TEST").db("cusparselt", "int8"))
    assert len(s3.skipped) == 2 and not s3.tuned
    fresh = TuningStore(tmp_path, hwtag="TEST")
    d, s = CublasLtBackend(tuning=fresh), CusparseLtBackend(tuning=fresh)
    wq = prune(_rand(1024, 1024, "int8", 1), "2_4")
    x = _rand(100, 1024, "int8", 2)
    wd, wsp = d.prepare(wq), s.prepare(wq)
    assert d.plan_info(wd, 100, torch.int32)["source"] == "tuned(M=256)"
    assert s.plan_info(wsp, 100, torch.int32)["source"] == "tuned(M=256)"
    ref = _ref(x, wq)
    assert torch.equal(d.mm(x, wd, torch.int32), ref) and torch.equal(s.mm(x, wsp, torch.int32), ref)
    # INT8 -> bf16 is tuned as the linear layers run it: with the alpha vector
    s4 = tune_cusparselt([(1024, 1024)], [256], "int8", torch.bfloat16, db=fresh.db("cusparselt", "int8"),
                         split_ks=(1,), warmup=2, repeat=5)
    assert len(s4.tuned) == 1, s4
    entry = next(e for e in fresh.db("cusparselt", "int8").entries.values() if e["out"] == "bfloat16")
    assert entry["by_m"]["256"]["best"]["alpha_vector"] is True
    s2b = CusparseLtBackend(tuning=TuningStore(tmp_path, hwtag="TEST"))
    wsp2 = s2b.prepare(wq)
    assert s2b.plan_info(wsp2, 100, torch.bfloat16, alpha_vector=True)["source"] == "tuned(M=256)"
    scale = torch.full((1024,), 0.5, device="cuda")
    y = s2b.mm(x, wsp2, torch.bfloat16, alpha=scale)
    assert torch.allclose(y.double(), ref.double() * 0.5, rtol=2 ** -8, atol=0)
    s2b.close()
    d.close()
    s.close()
