"""CPU tests of the GPU GEMM backends' machinery: tuning DB, plan-cache keys, shape checks, imports."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from slidesparse.gemm.plan_cache import (
    LruCache, SparseConfig, dense_plan_key, dtype_name, name_dtype, pad_m, sparse_plan_key,
)
from slidesparse.gemm.tuning_db import (
    FORMAT_VERSION, TuningDB, TuningMissWarning, TuningStore, check_versions, db_filename, decode_algo,
    encode_algo,
)

HAS_CUDA = torch.cuda.is_available()
ALGO = encode_algo(bytes(range(64)))


def _sparse_cfg(alg, us=1.0):
    return {"alg_id": alg, "split_k": 1, "split_k_mode": 0, "workspace": 0, "us": us}


def _db(tmp_path, library="cusparselt", qdtype="int8"):
    return TuningStore(tmp_path, hwtag="H100_cc90_py312_cu130_x86_64").db(library, qdtype)


# --- tuning DB ------------------------------------------------------------------------------
def test_lookup_by_m_bucket(tmp_path):
    db = _db(tmp_path)
    for m, alg in ((64, 1), (256, 2), (4096, 3)):
        db.put(4608, 3584, "int32", m, _sparse_cfg(alg))
    assert db.lookup(4608, 3584, "int32", 8)["alg_id"] == 1       # below the smallest -> smallest
    assert db.lookup(4608, 3584, "int32", 64)["alg_id"] == 1      # exact
    assert db.lookup(4608, 3584, "int32", 65)["alg_id"] == 2      # smallest tuned M >= 65
    assert db.lookup(4608, 3584, "int32", 256)["m_tuned"] == 256
    assert db.lookup(4608, 3584, "int32", 1000)["alg_id"] == 3
    assert db.lookup(4608, 3584, "int32", 32768)["alg_id"] == 3   # above the largest -> largest (8x)
    assert db.bucket(4608, 3584, "int32", 1000) == 4096


def test_a_tuned_m_too_far_away_is_a_miss(tmp_path):
    """A config tuned at M=64 must not run an M=32768 problem (3x slower on an H100): heuristic + warning."""
    from slidesparse.gemm.tuning_db import MAX_M_RATIO, TuningMissWarning

    db = _db(tmp_path)
    db.put(3584, 28416, "bfloat16", 64, _sparse_cfg(5))
    assert db.bucket(3584, 28416, "bfloat16", 64 * MAX_M_RATIO) == 64
    assert db.bucket(3584, 28416, "bfloat16", 64 * MAX_M_RATIO + 16) is None
    assert db.bucket(3584, 28416, "bfloat16", 1) == 64  # M=1 runs padded to 16: 4x away
    with pytest.warns(TuningMissWarning, match=r"nearest to M=32768 was tuned at M=64 .*--m covering 32768"):
        assert db.lookup(3584, 28416, "bfloat16", 32768) is None
    db.put(3584, 28416, "bfloat16", 32768, _sparse_cfg(6))
    assert db.lookup(3584, 28416, "bfloat16", 32768)["alg_id"] == 6
    # tuned {64, 32768}: M = 256 is served by 64 (4x below), not by 32768 (128x above)
    assert db.lookup(3584, 28416, "bfloat16", 256)["alg_id"] == 5
    assert db.bucket(3584, 28416, "bfloat16", 2048) is None and db.bucket(3584, 28416, "bfloat16", 4096) == 32768


def test_roundtrip_through_file_and_atomic_write(tmp_path):
    db = _db(tmp_path)
    db.put(4608, 3584, "int32", 64, _sparse_cfg(7), [_sparse_cfg(7, 1.0), _sparse_cfg(3, 1.2)], candidates=10)
    db.meta["m_list"] = [64]
    path = db.save()
    assert path == tmp_path / "H100_cc90_py312_cu130_x86_64" / "cusparselt_INT8.json"
    assert [p.name for p in path.parent.iterdir()] == ["cusparselt_INT8.json"]  # no temp file left behind
    again = TuningDB.load(path, "cusparselt", "int8")
    assert again.lookup(4608, 3584, "int32", 10)["alg_id"] == 7
    assert [c["alg_id"] for c in again.top(4608, 3584, "int32", 64)] == [7, 3]
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT_VERSION and data["meta"]["qdtype"] == "int8"
    assert data["entries"]["4608,3584,int32"]["by_m"]["64"]["candidates"] == 10


def test_miss_warns_once_per_key(tmp_path):
    db = _db(tmp_path)
    db.put(4608, 3584, "int32", 64, _sparse_cfg(1))
    with pytest.warns(TuningMissWarning, match="N=1024, K=2048") as rec:
        assert db.lookup(1024, 2048, "int32", 64) is None
        assert db.lookup(1024, 2048, "int32", 4096) is None      # same key: no second warning
        assert db.lookup(1024, 2048, "bfloat16", 64) is None     # other out dtype: its own warning
    assert len(rec) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert db.lookup(1024, 2048, "int32", 64) is None        # still silent for the warned key
        assert db.lookup(4608, 3584, "int32", 64) is not None


def test_missing_file_is_an_empty_db(tmp_path):
    db = TuningDB.load(tmp_path / "nope.json", "cublaslt", "fp8")
    assert len(db) == 0 and db.bucket(16, 16, "bfloat16", 1) is None
    assert db_filename("cublaslt", "fp8") == "cublaslt_FP8E4M3.json"


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"format": 99, "meta": {}, "entries": {}}', "format 99"),
    ('{"format": 1, "meta": {"library": "cublaslt", "qdtype": "int8"}, "entries": {}}', "expected 'cusparselt'"),
    ('{"format": 1, "meta": {"library": "cusparselt", "qdtype": "int8"}, "entries": {"1,2,int32": {}}}', "by_m"),
    ('{"format": 1, "meta": {"library": "cusparselt", "qdtype": "int8"}, '
     '"entries": {"1,2,int32": {"n": 1, "k": 2, "out": "int32", "by_m": {"x": {}}}}}', "positive integers"),
    ('{"format": 1, "meta": {"library": "cusparselt", "qdtype": "int8"}, '
     '"entries": {"1,2,int32": {"n": 1, "k": 2, "out": "int32", "by_m": {"64": {"best": {"alg_id": "a"}}}}}}',
     "alg_id"),
    ('{"format": 1, "meta": {"library": "cusparselt", "qdtype": "int8"}, '
     '"entries": {"9,2,int32": {"n": 1, "k": 2, "out": "int32", "by_m": {}}}}', "does not match"),
])
def test_corrupt_db_file_gives_a_clear_error(tmp_path, content, match):
    path = tmp_path / "cusparselt_INT8.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as ei:
        TuningDB.load(path, "cusparselt", "int8")
    assert str(path) in str(ei.value)


def test_corrupt_cublaslt_algo(tmp_path):
    path = tmp_path / "cublaslt_INT8.json"
    bad = {"format": 1, "meta": {"library": "cublaslt", "qdtype": "int8"},
           "entries": {"16,16,int32": {"n": 16, "k": 16, "out": "int32",
                                       "by_m": {"64": {"best": {"algo": ALGO[:-8], "workspace": 0}}}}}}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="algo"):
        TuningDB.load(path, "cublaslt", "int8")


def test_algo_base64_roundtrip():
    raw = bytes(range(64))
    assert decode_algo(encode_algo(raw)) == raw
    with pytest.raises(ValueError, match="64"):
        encode_algo(b"short")
    with pytest.raises(ValueError, match="base64"):
        decode_algo("@@@")


def test_put_validates_configs(tmp_path):
    db = _db(tmp_path, "cublaslt")
    with pytest.raises(ValueError, match="workspace"):
        db.put(16, 16, "int32", 64, {"algo": ALGO})
    with pytest.raises(ValueError, match="output dtype"):
        db.put(16, 16, "int64", 64, {"algo": ALGO, "workspace": 0})
    db.put(16, 16, "int32", 64, {"algo": ALGO, "workspace": 0})
    assert db.has(16, 16, "int32", 64) and not db.has(16, 16, "int32", 128)


def test_stale_versions_message(tmp_path):
    db = _db(tmp_path)
    db.meta["versions"] = {"cusparselt": "0.7.1"}
    assert "0.7.1 -> 0.8.0" in check_versions(db, {"cusparselt": "0.8.0"})
    assert check_versions(db, {"cusparselt": "0.7.1"}) is None
    assert check_versions(db, {"cublaslt": "13.1.0"}) is None


def test_resume_skips_present_entries(tmp_path, monkeypatch):
    """The tuning loop skips (N, K, M) already in the DB without touching the GPU."""
    from slidesparse.gemm import tuning

    db = _db(tmp_path)
    db.put(64, 64, "int32", 64, _sparse_cfg(1))
    db.put(64, 64, "int32", 128, _sparse_cfg(2))

    class FakeBackend:  # every M is present, so nothing may be called
        def _pad(self, m):
            raise AssertionError("a present entry was re-tuned")

    monkeypatch.setattr(tuning, "_meta", lambda *a, **k: None)
    s = tuning.tune_cusparselt([(64, 64)], [64, 128], "int8", torch.int32, db=db, backend=FakeBackend())
    assert s.skipped == [(64, 64, 64), (64, 64, 128)] and not s.tuned and not s.failed


def test_sparse_candidates_enumeration():
    from slidesparse.gemm.tuning import sparse_candidates

    c = sparse_candidates(3, split_ks=(1, 2), split_k_modes=(1, 2))
    assert c[:3] == [SparseConfig(0, 1, 0), SparseConfig(0, 2, 1), SparseConfig(0, 2, 2)]
    assert len(c) == 9 and len(set(c)) == 9
    d = sparse_candidates(2)  # defaults: 1, -1 (library heuristic), 2, 4, 8; modes for every value but 1
    assert SparseConfig(1, -1, 2) in d and SparseConfig(0, 1, 0) in d and len(d) == 2 * (1 + 4 * 2)


# --- plan-cache keys and the LRU ---------------------------------------------------------------
def test_plan_keys():
    assert pad_m(1) == 16 and pad_m(16) == 16 and pad_m(17) == 32 and pad_m(65536) == 65536
    with pytest.raises(ValueError):
        pad_m(0)
    k1 = sparse_plan_key(4608, 5376, 1, "int8", torch.int32)
    assert k1 == sparse_plan_key(4608, 5376, 16, "int8", torch.int32)          # same padded M, same plan
    assert k1 != sparse_plan_key(4608, 5376, 17, "int8", torch.int32)
    assert k1 != sparse_plan_key(4608, 5376, 1, "int8", torch.bfloat16)
    assert k1 != sparse_plan_key(4608, 5376, 1, "int8", torch.int32, alpha_vector=True)
    assert k1 != sparse_plan_key(4608, 5376, 1, "int8", torch.int32, config=SparseConfig(0))
    assert sparse_plan_key(1, 1, 1, "int8", torch.int32, config=SparseConfig(3, 2, 1))[-1] == (3, 2, 1)
    assert dense_plan_key(16, 32, 5, "fp8", torch.bfloat16) != dense_plan_key(16, 32, 6, "fp8", torch.bfloat16)
    assert SparseConfig(4, 2, 1).label() == "alg4/sk2/mode1" and SparseConfig(0).label() == "alg0"


def test_lru_evicts_and_destroys():
    gone = []
    c = LruCache(2, on_evict=gone.append)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1           # refreshes 'a'
    c.put("c", 3)                    # evicts the least recently used: 'b'
    assert gone == [2] and "b" not in c and len(c) == 2
    c.put("a", 10)                   # replacing destroys the old value
    assert gone == [2, 1]
    c.clear()
    assert sorted(gone) == [1, 2, 3, 10] and len(c) == 0
    with pytest.raises(ValueError):
        LruCache(0)


def test_dtype_names():
    assert dtype_name(torch.bfloat16) == "bfloat16" and name_dtype("bf16") == torch.bfloat16
    assert name_dtype("torch.int32") == torch.int32
    with pytest.raises(ValueError, match="output dtype"):
        name_dtype("int64")
    with pytest.raises(ValueError, match="output dtype"):
        dtype_name(torch.int64)


# --- shape / dtype validation (runs without a GPU) ---------------------------------------------
def test_sparse_weight_validation():
    from slidesparse.gemm.cusparselt import validate_sparse_weight
    from slidesparse.gemm.verify import random_2to4

    w = random_2to4(64, 64, "int8", "cpu")
    validate_sparse_weight(w)  # fine
    validate_sparse_weight(random_2to4(32, 96, "fp8", "cpu"))
    with pytest.raises(ValueError, match="multiples of 32"):
        validate_sparse_weight(random_2to4(48, 64, "int8", "cpu"))       # N % 32
    with pytest.raises(ValueError, match="multiples of 32"):
        validate_sparse_weight(random_2to4(64, 48, "int8", "cpu"))       # K % 32
    with pytest.raises(ValueError, match="int8 or float8"):
        validate_sparse_weight(w.to(torch.int16))
    with pytest.raises(ValueError, match="2-D"):
        validate_sparse_weight(w[0])
    bad = w.clone()
    bad[5, 8:12] = torch.tensor([1, 2, 3, 0], dtype=torch.int8)
    with pytest.raises(ValueError, match=r"row 5, columns 8\.\.11"):
        validate_sparse_weight(bad)


def test_dense_weight_validation():
    from slidesparse.gemm.cublaslt import validate_dense_weight
    from slidesparse.gemm.verify import random_q

    validate_dense_weight(random_q(48, 16, "int8", "cpu"))
    validate_dense_weight(random_q(16, 48, "fp8", "cpu"))
    for n, k in ((24, 32), (32, 40), (0, 32)):
        with pytest.raises(ValueError, match="multiples of 16"):
            validate_dense_weight(torch.zeros(n, k, dtype=torch.int8))
    with pytest.raises(ValueError, match="int8 or float8"):
        validate_dense_weight(torch.zeros(32, 32, dtype=torch.float16))
    with pytest.raises(ValueError, match="2-D"):
        validate_dense_weight(torch.zeros(32, dtype=torch.int8))


def test_random_2to4_is_2to4_and_nonzero():
    from slidesparse.gemm.verify import random_2to4
    from slidesparse.sparsify import is_2to4

    for qd in ("int8", "fp8"):
        w = random_2to4(32, 64, qd, "cpu", torch.Generator().manual_seed(0))
        assert is_2to4(w)
        assert int((w.view(torch.uint8) != 0).sum()) > 32 * 64 // 4  # about half kept, never all zero


def test_reference_mm_cpu_int8_exact():
    from slidesparse.gemm.verify import matches, random_q, reference_mm

    x, w = random_q(20, 64, "int8", "cpu"), random_q(32, 64, "int8", "cpu")
    ref = reference_mm(x, w, chunk=7)
    assert torch.equal(ref, (x.long() @ w.long().T).int())
    assert matches(ref, ref)[0]
    bad = ref.clone()
    bad[0, 0] += 1
    ok, why = matches(bad, ref)
    assert not ok and "1 of" in why


def test_rel_error_catches_nan():
    from slidesparse.gemm.verify import rel_error

    ref = torch.ones(4, 4)
    assert rel_error(ref, ref) == 0.0
    out = ref.clone()
    out[1, 1] = float("nan")
    assert rel_error(out, ref) == float("inf")


# --- imports and construction on a CPU box -----------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("name", ["cublaslt", "cusparselt"])
def test_gpu_backends_import_on_cpu_and_fail_clearly_at_construction(name):
    import importlib

    from slidesparse.gemm import make_backend

    importlib.import_module(f"slidesparse.gemm.{name}")  # import never needs CUDA
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        make_backend(name)


def test_libs_report_without_gpu_libraries():
    from slidesparse.gemm import libs

    assert isinstance(libs.loaded_copies("libdefinitely_not_loaded"), list)
    assert libs.loaded_copies("libdefinitely_not_loaded") == []
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="CUDA GPU"):
            libs.require_cuda("x")


def test_base_checks_reject_dtype_mismatch():
    """The shared input checks the GPU backends call first (exercised through the reference backend)."""
    from slidesparse.gemm import ReferenceBackend
    from slidesparse.gemm.verify import random_2to4, random_q

    be = ReferenceBackend(sparse=True)
    w = be.prepare(random_2to4(32, 64, "int8", "cpu"))
    with pytest.raises(ValueError, match="dtype"):
        be.mm(random_q(4, 64, "fp8", "cpu"), w, torch.int32)
    with pytest.raises(ValueError, match="K=64"):
        be.mm(random_q(4, 32, "int8", "cpu"), w, torch.int32)
    with pytest.raises(ValueError, match="output dtype"):
        be.mm(random_q(4, 64, "int8", "cpu"), w, torch.float32)


# --- the tune command ---------------------------------------------------------------------------
def _cli():
    from slidesparse.cli import _Group
    from slidesparse.commands.tune import tune

    grp = _Group()
    grp.add_command(tune)
    return grp


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU error")
@pytest.mark.parametrize("sub", ["coarse", "fine"])
def test_tune_without_cuda_is_one_clear_error(sub, tmp_path):
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["tune", sub, "--shape", "64,64", "--m", "64", "--search", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "CUDA" in r.output
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("args, match", [
    (["coarse", "--shape", "64,64", "--m", "0"], "positive"),
    (["coarse", "--shape", "64,64", "--m", "a,b"], "integers"),
    (["coarse", "--shape", "64"], "N,K"),
    (["coarse"], "--model or --shape"),
    (["coarse", "--model", "no-such-model"], "unknown model"),
    (["coarse", "--shape", "64,64", "--dtype", "int4"], "int8, fp8"),
    (["coarse", "--shape", "64,64", "--dtype", "int8", "--out-dtype", "bfloat16"], "cannot write"),
    (["fine", "--shape", "64,64", "--patterns", "3:5"], "pattern"),
    (["fine", "--shape", "64,64", "--split-k", "1,0"], "--split-k"),
    (["fine", "--shape", "64,64", "--split-k", "1,-2"], "--split-k"),
])
def test_tune_argument_errors(args, match):
    from click.testing import CliRunner

    r = CliRunner().invoke(_cli(), ["tune", *args])
    assert r.exit_code == 2, r.output
    assert match in r.output


def test_tune_shapes_from_models():
    from slidesparse.commands.tune import resolve_shapes

    nk = resolve_shapes(["tiny"], ["4608,3584"])
    assert (4608, 3584) in nk and len(nk) == len(set(nk))
    assert all(k % 32 == 0 for _, k in nk)


@pytest.mark.parametrize("sub, extra, patterns", [("coarse", [], [None]), ("fine", ["--patterns", "6:8,8:10"], ["2_8", "2_10"])])
def test_tune_also_tunes_the_models_kernels(sub, extra, patterns, monkeypatch, tmp_path):
    """coarse: dense quant kernels + dequant; fine: the lifting kernels per pattern; for --model sizes."""
    from click.testing import CliRunner

    import slidesparse.commands.tune as ct
    import slidesparse.kernels.tune as kt
    from slidesparse.models import get_model

    calls = []
    monkeypatch.setattr(ct, "_require_gpu", lambda: None)
    monkeypatch.setattr(ct, "_run", lambda *a, **k: None)  # the GEMM part has its own tests
    monkeypatch.setattr(kt, "tune_kernel", lambda kernel, ks, ms, dt, p, **kw: calls.append(
        (kernel, tuple(ks), tuple(ms), str(dt), None if p is None else p.label, str(kw["search_dir"]))))
    args = ["tune", sub, "--model", "tiny", "--dtype", "int8", "--m", "64,256", "--search", str(tmp_path), *extra]
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0, r.output
    cfg = get_model("tiny")
    want = []
    for p in patterns:
        want += [("rmsnorm_quant", (cfg.hidden,), (64, 256), "int8", p, str(tmp_path)),
                 ("quant", (cfg.heads * cfg.head_dim,), (64, 256), "int8", p, str(tmp_path)),
                 ("silu_mul_quant", (cfg.intermediate,), (64, 256), "int8", p, str(tmp_path))]
    ns = tuple(sorted({n for n, _ in cfg.linear_shapes().values()}))
    # dequant on what the engine's GEMM writes: int32 dense, bf16 for sparse INT8's alpha epilogue
    acc = "torch.int32" if sub == "coarse" else "torch.bfloat16"
    want.append(("dequant", ns, (64, 256), acc, None, str(tmp_path)))
    assert calls == want
    assert "kernel sets tuned" in r.output

    calls.clear()
    r = CliRunner().invoke(_cli(), args + ["--no-kernels"])
    assert r.exit_code == 0 and calls == []
    r = CliRunner().invoke(_cli(), ["tune", sub, "--shape", "64,64", "--m", "64", "--search", str(tmp_path)])
    assert r.exit_code == 0 and calls == [] and "skipped" in r.output


def test_tune_auto_out_dtypes_cover_both_views_and_the_engine():
    """auto: sparse INT8 tunes int32 (the GEMM-alone view) and bfloat16 (the engine's epilogue)."""
    from slidesparse.commands.tune import _out_dtypes

    assert _out_dtypes("cusparselt", "int8", "auto") == [torch.int32, torch.bfloat16]
    assert _out_dtypes("cublaslt", "int8", "auto") == [torch.int32]
    assert _out_dtypes("cusparselt", "fp8", "auto") == [torch.bfloat16]
    assert _out_dtypes("cublaslt", "fp8", "auto") == [torch.bfloat16]


def test_reference_alpha_vector_and_its_errors():
    """The reference sparse backend emulates cuSPARSELt's alpha vector (D = alpha[n] * acc, one rounding);
    the dense one has none, and bad alpha arguments are one clear error each."""
    from slidesparse.gemm import ReferenceBackend
    from slidesparse.sparsify import prune

    g = torch.Generator().manual_seed(0)
    wq = prune(torch.randint(-127, 128, (8, 32), dtype=torch.int8, generator=g), "2_4")
    x = torch.randint(-127, 128, (3, 32), dtype=torch.int8, generator=g)
    sp, dn = ReferenceBackend(sparse=True), ReferenceBackend(sparse=False)
    assert sp.alpha_vector and not dn.alpha_vector
    w = sp.prepare(wq)
    alpha = torch.rand(8, generator=g) + 0.5
    acc = sp.mm(x, w, torch.int32)
    assert torch.equal(sp.mm(x, w, torch.bfloat16, alpha=alpha), (acc.float() * alpha).to(torch.bfloat16))
    with pytest.raises(ValueError, match="float output"):
        sp.mm(x, w, torch.int32, alpha=alpha)
    with pytest.raises(ValueError, match="float32 vector of N=8"):
        sp.mm(x, w, torch.bfloat16, alpha=alpha[:4])
    with pytest.raises(ValueError, match="float32 vector of N=8"):
        sp.mm(x, w, torch.bfloat16, alpha=alpha.double())
    with pytest.raises(ValueError, match="no alpha vector on a dense backend"):
        dn.mm(x, dn.prepare(wq), torch.int32, alpha=alpha)
