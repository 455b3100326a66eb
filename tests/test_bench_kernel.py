"""`slidesparse bench kernel`: formulas, rows, views, option errors (reference backend on the CPU),
and the real cuBLASLt / cuSPARSELt run (gpu)."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from slidesparse.bench import kernel as kb
from slidesparse.cli import _Group
from slidesparse.commands.bench import bench
from slidesparse.gemm import ReferenceBackend, make_backend
from slidesparse.linear import Epilogue, gemm_epilogue
from slidesparse.ops import ReferenceOps
from slidesparse.pattern import Pattern


def cli():
    return _Group(name="slidesparse", commands={"bench": bench})


def run(args, tmp_path):
    return CliRunner().invoke(cli(), ["bench", "kernel", "--results", str(tmp_path / "res"),
                                      "--search", str(tmp_path / "nosearch"), *args])


def load_rows(root: Path) -> list[dict]:
    return [r for p in sorted(root.rglob("*_kernel.json")) for r in json.loads(p.read_text())["rows"]]


# --- formulas --------------------------------------------------------------------------------
def _row(view, pattern, layer, M, t, N=64, K=64):
    return {"model": "m", "view": view, "dtype": "int8", "pattern": pattern, "layer": layer, "M": M, "N": N,
            "K": K, "time_us": t, "rel_err_vs_int32": "", "check": "", "check_ok": ""}


def test_efficiency_formula_on_a_crafted_example():
    # dense 100 us; 2:4 at 50 us (2x, its ideal); 6:8 at 75 us (1.333x, its ideal 8/6): efficiency 1.0;
    # 8:10 at 90 us (1.111x of an ideal 1.25x): (1.111 / 2) x 2*8/10 = 0.8889
    rows = kb.add_speedups([_row("gemm", "dense", "qkv", 64, 100.0), _row("gemm", "2_4", "qkv", 64, 50.0),
                            _row("gemm", "2_8", "qkv", 64, 75.0), _row("gemm", "2_10", "qkv", 64, 90.0)])
    by = {r["pattern"]: r for r in rows}
    assert by["dense"]["speedup"] == 1.0 and by["dense"]["efficiency_vs_2to4"] == ""
    assert by["2_4"]["speedup"] == 2.0 and by["2_4"]["efficiency_vs_2to4"] == 1.0
    assert by["2_8"]["speedup"] == pytest.approx(4 / 3, abs=1e-4)
    assert by["2_8"]["efficiency_vs_2to4"] == pytest.approx(1.0, abs=1e-4)
    assert by["2_10"]["efficiency_vs_2to4"] == pytest.approx((100 / 90) / 2 * 1.6, abs=1e-4)
    assert by["2_10"]["efficiency_vs_2to4"] == pytest.approx(0.8889, abs=1e-4)
    assert kb.efficiency_vs_2to4(1.5, 1.5, Pattern.parse("6:8")) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="positive"):
        kb.efficiency_vs_2to4(0.0, 2.0, Pattern.parse("6:8"))


def test_speedups_never_mix_views():
    rows = kb.add_speedups([_row("gemm", "dense", "qkv", 64, 100.0), _row("gemm", "2_4", "qkv", 64, 50.0),
                            _row("linear", "dense", "qkv", 64, 400.0), _row("linear", "2_4", "qkv", 64, 300.0),
                            _row("linear", "2_8", "qkv", 64, 350.0)])
    sp = {(r["view"], r["pattern"]): r["speedup"] for r in rows}
    assert sp[("gemm", "2_4")] == 2.0
    assert sp[("linear", "2_4")] == pytest.approx(400 / 300, abs=1e-4)
    eff = {(r["view"], r["pattern"]): r["efficiency_vs_2to4"] for r in rows}
    assert eff[("linear", "2_8")] == pytest.approx((400 / 350) / (400 / 300) * 1.5, abs=1e-4)
    # no gemm-view 2_8 row: nothing borrowed from the other view
    assert ("gemm", "2_8") not in sp


def test_totals_sum_the_layers_per_view_and_m():
    rows = [_row("gemm", "dense", "qkv", 64, 10.0, N=64, K=32), _row("gemm", "dense", "o", 64, 30.0, N=32, K=64),
            _row("linear", "dense", "qkv", 64, 50.0, N=64, K=32), _row("linear", "dense", "o", 64, 70.0, N=32, K=64)]
    for r in rows:
        r.update(p10_us=r["time_us"], p90_us=r["time_us"])
    out = kb.add_totals(rows)
    tot = {r["view"]: r for r in out if r["layer"] == kb.TOTAL}
    assert tot["gemm"]["time_us"] == 40.0 and tot["linear"]["time_us"] == 120.0
    assert tot["gemm"]["tops"] == pytest.approx(2 * 2 * 64 * 64 * 32 / 40e-6 / 1e12, rel=1e-3)
    assert kb.tops(64, 64, 32, 10.0) == pytest.approx(2 * 64 * 64 * 32 / 10e-6 / 1e12)


def test_linear_view_runs_the_layers_epilogue():
    """The linear view uses SlideSparseLinear's own choice (linear.gemm_epilogue), not its own copy."""
    assert gemm_epilogue(ReferenceBackend(sparse=False), "int8") == Epilogue(torch.int32, False)
    assert gemm_epilogue(ReferenceBackend(sparse=True), "int8") == Epilogue(torch.bfloat16, True)
    assert gemm_epilogue(ReferenceBackend(sparse=True), "fp8") == Epilogue(torch.bfloat16, False)


class _FakeBackends:
    def __init__(self, dense, sparse):
        self.d, self.s = dense, sparse

    def get(self, sparse, qdtype):
        return (self.s if sparse else self.d), "fake"


@pytest.mark.parametrize("ops_kind", ["reference", "triton"])
def test_linear_view_alpha_path_and_its_error(ops_kind):
    """The sparse INT8 linear row runs bf16 out of the GEMM with the weight scale as alpha; its error
    against the int32 path is reported, small and non-zero; the dense int32 row's is exactly 0."""
    cfg = kb.make_config(models="tiny", ms="16", dtypes="int8", patterns="2:4,6:8", views="linear",
                         backend="reference", warmup=0, repeat=1)
    bk = _FakeBackends(ReferenceBackend(sparse=False), ReferenceBackend(sparse=True))
    if ops_kind == "triton":
        from slidesparse.kernels import TritonOps
        ops = TritonOps(search_dir=None)
    else:
        ops = ReferenceOps()
    shape = kb.Shape("qkv", 64, 96, True)
    wts = kb._prepare(cfg, bk, "int8", shape, seed=3)
    rows = {r["pattern"]: r for r in kb._linear_cases(cfg, bk, ops, "int8", shape, 16, wts, seed=4)}
    assert rows["dense"]["gemm_out"] == "int32" and rows["dense"]["rel_err_vs_int32"] == 0.0
    for p in ("2_4", "2_8"):
        assert rows[p]["gemm_out"] == "bfloat16" and rows[p]["alpha_scale"] is True
        assert 0.0 < rows[p]["rel_err_vs_int32"] < 1e-2
        assert rows[p]["view"] == "linear" and rows[p]["time_us"] > 0
    for r in rows.values():  # the GEMM step alone, timed apart from the layer
        assert 0 < r["gemm_part_us"]


# --- the command on the reference backend -------------------------------------------------------
def test_cli_reference_writes_rows(tmp_path):
    r = run(["--backend", "reference", "--m", "16,32", "--patterns", "2:4,6:8", "--warmup", "0", "--repeat", "1"],
            tmp_path)
    assert r.exit_code == 0, r.output
    printed = r.output
    assert "NOT GPU numbers" in printed
    assert "tiny INT8 view=gemm" in printed and "tiny FP8 view=linear" in printed
    root = tmp_path / "res" / "kernel"
    tags = sorted(p.name for p in root.iterdir())
    assert len(tags) == 2 and all(t.startswith("CPU_") for t in tags)
    for t in tags:
        assert (root / t / "cublaslt" / "tiny_kernel.csv").is_file()
        for p in ("2_4", "2_8"):
            assert (root / t / "cusparselt" / p / "tiny_kernel.json").is_file()
    rows = load_rows(root)
    # 2 dtypes x 2 views x 3 roles x 2 M x (4 linears + total)
    assert len(rows) == 2 * 2 * 3 * 2 * 5
    assert {r["view"] for r in rows} == {"gemm", "linear"}
    assert all(r["impl"].startswith("reference-") and r["reference_backend"] is True for r in rows)
    assert all(r["time_us"] > 0 and "layer" in r for r in rows)
    # speedups: against the dense row of the same view, layer and M
    dense = {(r["dtype"], r["view"], r["layer"], r["M"]): r["time_us"] for r in rows if r["pattern"] == "dense"}
    for r in rows:
        assert r["speedup"] == pytest.approx(dense[(r["dtype"], r["view"], r["layer"], r["M"])] / r["time_us"],
                                             rel=2e-3)
        if r["pattern"] == "2_4":
            assert r["efficiency_vs_2to4"] == 1.0
    # totals: the four linears summed
    for tot in (r for r in rows if r["layer"] == "total"):
        parts = [r for r in rows if r["layer"] != "total" and all(
            r[k] == tot[k] for k in ("dtype", "view", "pattern", "M"))]
        assert len(parts) == 4
        assert tot["time_us"] == pytest.approx(sum(p["time_us"] for p in parts), abs=0.01)
    # gemm view: same output dtype on both sides, checked against the reference (INT8 exactly)
    for r in rows:
        if r["view"] == "gemm":
            assert r["gemm_out"] == ("int32" if r["dtype"] == "int8" else "bfloat16")
            assert r["check_ok"] is True
            if r["dtype"] == "int8" and r["layer"] != "total":
                assert r["check"] == "exact"
    lin8 = [r for r in rows if r["view"] == "linear" and r["dtype"] == "int8" and r["layer"] != "total"]
    assert all(r["rel_err_vs_int32"] == 0.0 for r in lin8 if r["pattern"] == "dense")
    assert all(0 < r["rel_err_vs_int32"] < 1e-2 for r in lin8 if r["pattern"] != "dense")
    assert all(r["rel_err_vs_int32"] == "" for r in rows if r["dtype"] == "fp8")
    # the linear view's GEMM part: timed per layer, summed in the totals, its speedup vs dense's part
    lin = [r for r in rows if r["view"] == "linear"]
    assert all(r["gemm_part_us"] > 0 for r in lin) and all(r["gemm_part_us"] == "" for r in rows
                                                             if r["view"] == "gemm")
    for tot in (r for r in lin if r["layer"] == "total"):
        parts = [r for r in lin if r["layer"] != "total" and all(r[k] == tot[k] for k in ("dtype", "pattern", "M"))]
        assert tot["gemm_part_us"] == pytest.approx(sum(p["gemm_part_us"] for p in parts), abs=0.01)
        d = next(r for r in lin if r["layer"] == "total" and r["pattern"] == "dense"
                 and r["dtype"] == tot["dtype"] and r["M"] == tot["M"])
        assert tot["gemm_part_speedup"] == pytest.approx(d["gemm_part_us"] / tot["gemm_part_us"], rel=2e-3)
    assert "tiny INT8 view=linear/gemm-part" in printed


def test_cli_reference_square_mode_and_rerun_replaces_rows(tmp_path):
    args = ["--backend", "reference", "--mode", "square", "--m", "32,64", "--dtype", "int8", "--patterns", "2:4",
            "--view", "gemm", "--warmup", "0", "--repeat", "1"]
    assert run(args, tmp_path).exit_code == 0
    r = run(args, tmp_path)
    assert r.exit_code == 0, r.output
    rows = load_rows(tmp_path / "res" / "kernel")
    assert len(rows) == 2 * 2  # (dense, 2:4) x 2 sizes, the rerun replaced the first run's rows
    assert all(r["M"] == r["N"] == r["K"] and r["layer"] == "square" and r["model"] == "square" for r in rows)
    assert {r["view"] for r in rows} == {"gemm"}


@pytest.mark.parametrize("args, message", [
    (["--backend", "reference", "--mode", "square", "--m", "48"], "multiples of 32"),
    (["--backend", "reference", "--model", "qwen2.5-7b"], "only on the tiny"),
    (["--backend", "reference", "--view", "gemm,fast"], "unknown view"),
    (["--backend", "reference", "--patterns", "3:4"], "pattern"),
    (["--backend", "reference", "--dtype", "int4"], "int4"),
    (["--backend", "reference", "--mode", "square", "--model", "tiny"], "--model applies to --mode model"),
    (["--backend", "reference", "--m", "0"], "positive"),
    (["--backend", "reference", "--model", "no-such-model"], "unknown model"),
])
def test_bad_options_one_error_nothing_written(tmp_path, args, message):
    r = run(args, tmp_path)
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert r.output.count("error") <= 1
    assert not (tmp_path / "res").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_says_it_needs_a_gpu(tmp_path):
    r = run(["--m", "64"], tmp_path)
    assert r.exit_code == 2
    assert "needs a CUDA GPU for real numbers" in r.output and "--backend reference" in r.output
    assert not (tmp_path / "res").exists()


def test_make_backend_search_param():
    assert make_backend("reference", sparse=True, search="search").sparse
    with pytest.raises(ValueError, match="unknown GEMM backend"):
        make_backend("nope", search="search")


# --- GPU ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_make_backend_search_gives_gpu_backends_a_store(tmp_path):
    for name in ("cublaslt", "cusparselt"):
        b = make_backend(name, search=tmp_path)
        assert b.tuning is not None and b.tuning.search_dir == tmp_path
        assert make_backend(name).tuning is None


@pytest.mark.gpu
def test_gpu_kernel_bench_tiny(tmp_path):
    r = run(["--model", "tiny", "--m", "64,100", "--patterns", "2:4,6:8", "--warmup", "2", "--repeat", "5"],
            tmp_path)
    assert r.exit_code == 0, r.output
    assert "warning: no cublaslt" in r.output  # no tuning DB: the heuristic, said once
    rows = load_rows(tmp_path / "res" / "kernel")
    assert len(rows) == 2 * 2 * 3 * 2 * 5
    assert {r["impl"] for r in rows} == {"cublaslt", "cusparselt"}
    assert all(r["timer"] == "cuda-events" and r["time_us"] > 0 for r in rows)
    for r in rows:
        if r["view"] == "gemm" and r["layer"] != "total":
            assert r["check_ok"] is True, r
            if r["dtype"] == "int8":
                assert r["check"] == "exact"  # sparse (slid) == dense == the int32 reference
        if r["view"] == "linear" and r["dtype"] == "int8" and r["layer"] != "total":
            if r["pattern"] == "dense":
                assert r["gemm_out"] == "int32" and r["rel_err_vs_int32"] == 0.0
            else:
                assert r["gemm_out"] == "bfloat16" and r["alpha_scale"] is True
                assert 0 <= r["rel_err_vs_int32"] < 1e-2


@pytest.mark.gpu
def test_gpu_kernel_bench_square(tmp_path):
    r = run(["--mode", "square", "--m", "256", "--patterns", "2:4,8:10", "--warmup", "2", "--repeat", "5"], tmp_path)
    assert r.exit_code == 0, r.output
    rows = load_rows(tmp_path / "res" / "kernel")
    assert len(rows) == 2 * 2 * 3
    assert all(r["check_ok"] is True for r in rows if r["view"] == "gemm")
