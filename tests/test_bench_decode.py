"""bench: the timer, the result files and `slidesparse bench linears` on the reference backend."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from slidesparse.bench import linear_decode as ld
from slidesparse.bench import results as res
from slidesparse.bench.timing import Timing, summarize, time_fn
from slidesparse.cli import _Group
from slidesparse.commands.bench import bench
from slidesparse.hw import MachineInfo
from slidesparse.pattern import Pattern

ROOT = Path(__file__).resolve().parents[1]


# --- timing ----------------------------------------------------------------------------------
def test_summarize_percentiles():
    t = summarize([5, 1, 4, 2, 3, 6, 7, 8, 9, 10], "perf-counter")
    assert t.median_us == 5.5 and t.runs == 10
    assert t.p10_us == pytest.approx(1.9) and t.p90_us == pytest.approx(9.1)
    assert t.spread == pytest.approx((9.1 - 1.9) / 5.5)
    one = summarize([3.0], "x")
    assert one.median_us == one.p10_us == one.p90_us == 3.0
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([], "x")


def test_time_fn_cpu_rotates_inputs_and_counts_runs():
    seen = []
    t = time_fn(lambda a: seen.append(a), [(0,), (1,), (2,)], warmup=2, repeat=7, device="cpu")
    assert isinstance(t, Timing) and t.runs == 7 and t.method == "perf-counter"
    assert seen == [0, 1] + [0, 1, 2, 0, 1, 2, 0]  # warm-up, then the timed runs in rotation
    assert 0 <= t.p10_us <= t.median_us <= t.p90_us


def test_time_fn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="repeat >= 1"):
        time_fn(lambda: None, [()], warmup=0, repeat=0, device="cpu")
    with pytest.raises(ValueError, match="warmup >= 0"):
        time_fn(lambda: None, [()], warmup=-1, repeat=1, device="cpu")
    with pytest.raises(ValueError, match="at least one input"):
        time_fn(lambda: None, [], warmup=0, repeat=1, device="cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        time_fn(lambda: None, [()], warmup=0, repeat=1, device="cpu", cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [False, True])
def test_time_fn_cuda(graph):
    a = [(torch.randn(256, 256, device="cuda"),) for _ in range(3)]
    outs = []
    t = time_fn(lambda x: outs.append(x @ x), a, warmup=3, repeat=20, device="cuda", cuda_graph=graph)
    assert t.runs == 20 and t.method == ("cuda-graph" if graph else "cuda-events")
    assert 0 < t.p10_us <= t.median_us <= t.p90_us


# --- result files ----------------------------------------------------------------------------
def test_backend_folders_and_paths(tmp_path):
    assert res.backend_folder(None) == "cublaslt"
    assert res.backend_folder("6:8") == res.backend_folder(Pattern(8)) == "cusparselt/2_8"
    c, j = res.result_files(tmp_path, "decode", "H100_cc90_INT8_py312_cu130_x86_64", "2:4", "qwen2.5-7b")
    assert c == tmp_path / "decode/H100_cc90_INT8_py312_cu130_x86_64/cusparselt/2_4/qwen2.5-7b_decode.csv"
    assert j.suffix == ".json" and j.parent == c.parent
    with pytest.raises(ValueError, match="unknown result stage"):
        res.result_dir(tmp_path, "train", "tag", None)
    with pytest.raises(ValueError, match="one folder name"):
        res.result_dir(tmp_path, "decode", "a/b", None)
    with pytest.raises(ValueError, match="plain file-name"):
        res.result_files(tmp_path, "decode", "tag", None, "../x")


def test_append_rows_rewrites_csv_and_json(tmp_path):
    c, j = tmp_path / "d" / "m_decode.csv", tmp_path / "d" / "m_decode.json"
    res.append_rows(c, j, [{"model": "m", "M": 64, "latency_us": 1.5}])
    res.append_rows(c, j, [{"model": "m", "M": 128, "latency_us": 2.5, "extra": "x"}])
    rows = json.loads(j.read_text())["rows"]
    assert [r["M"] for r in rows] == [64, 128] and rows[0]["latency_us"] == 1.5
    with open(c) as f:
        got = list(csv.DictReader(f))
    assert [r["M"] for r in got] == ["64", "128"]
    assert got[0]["extra"] == "" and got[1]["extra"] == "x"  # columns are the union
    assert sorted(p.name for p in c.parent.iterdir()) == ["m_decode.csv", "m_decode.json"]  # no temp files


def test_append_rows_replaces_same_key(tmp_path):
    c, j = tmp_path / "a.csv", tmp_path / "a.json"
    res.append_rows(c, j, [{"M": 1, "v": 1}, {"M": 2, "v": 2}], key=["M"])
    res.append_rows(c, j, [{"M": 2, "v": 20}], key=["M"])
    assert [(r["M"], r["v"]) for r in res.read_rows(j)] == [(1, 1), (2, 20)]
    with pytest.raises(ValueError, match="lacks key column"):
        res.append_rows(c, j, [{"v": 3}], key=["M"])


def test_append_rows_is_atomic_on_failure(tmp_path, monkeypatch):
    c, j = tmp_path / "a.csv", tmp_path / "a.json"
    res.append_rows(c, j, [{"M": 1}])
    before_j, before_c = j.read_text(), c.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(res.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        res.append_rows(c, j, [{"M": 2}])
    assert j.read_text() == before_j and c.read_text() == before_c
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]


def test_append_rows_writes_both_files_before_renaming(tmp_path, monkeypatch):
    """The JSON and its CSV are both written (temp files) before the first rename, so a kill can
    leave them a row apart only between two renames (the pipeline's kill -9 test once hit the CSV
    write)."""
    c, j = tmp_path / "a.csv", tmp_path / "a.json"
    seen = []
    real = res.os.replace

    def spy(src, dst):
        seen.append((Path(dst).name, len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")])))
        real(src, dst)

    monkeypatch.setattr(res.os, "replace", spy)
    res.append_rows(c, j, [{"M": 1}])
    assert seen == [("a.json", 2), ("a.csv", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]


def test_rows_must_hold_relative_paths_and_scalars(tmp_path):
    c, j = tmp_path / "a.csv", tmp_path / "a.json"
    with pytest.raises(ValueError, match="absolute path"):
        res.append_rows(c, j, [{"log_path": "/tmp/x.log"}])
    with pytest.raises(ValueError, match="must be a scalar"):
        res.append_rows(c, j, [{"m": [1, 2]}])
    res.append_rows(c, j, [{"log_path": "decode/x.log"}])
    assert not (tmp_path / "b.json").exists()


def test_corrupt_results_file_is_a_clear_error(tmp_path):
    j = tmp_path / "a.json"
    j.write_text("{not json")
    with pytest.raises(ValueError, match="not a results file"):
        res.append_rows(tmp_path / "a.csv", j, [{"M": 1}])
    assert j.read_text() == "{not json"


def test_provenance_columns(tmp_path):
    p = res.provenance()
    assert p["v_torch"] == torch.__version__ and "v_python" in p
    assert p["time_utc"].endswith("Z")
    assert p["commit"]
    assert res.git_commit(str(tmp_path)) == "unknown"  # not a git checkout


# --- backend plan ----------------------------------------------------------------------------
def test_plan_without_cuda_is_reference():
    plan = ld.plan_backends("auto", cuda_available=False)
    assert plan.is_reference and plan.device.type == "cpu"
    assert plan.dense().name == "reference-dense" and plan.sparse().name == "reference-sparse"
    assert ld.default_model(plan) == ["tiny"]
    assert ld.default_runs(plan) == ld.DEFAULT_RUNS["cpu"]
    with pytest.raises(ValueError, match="unknown backend"):
        ld.plan_backends("cutlass")


def test_plan_auto_with_cuda_fails_loudly_without_gpu_backends(monkeypatch):
    def no_backend(name, **kw):
        raise ImportError(f"no module named slidesparse.gemm.{name}")

    monkeypatch.setattr(ld, "make_backend", no_backend)
    with pytest.raises(RuntimeError, match="--backend reference"):
        ld.plan_backends("auto", cuda_available=True)


def test_reference_on_a_gpu_machine_is_tagged_cpu(monkeypatch):
    gpu = MachineInfo(gpu="H100", gpu_full="NVIDIA H100 80GB HBM3", cc="90", memory_gb=79.2, cuda="13.0",
                      driver="580.1", python="3.12", arch="x86_64", torch="2.11.0+cu130")
    monkeypatch.setattr(ld, "machine_info", lambda: gpu)
    plan = ld.plan_backends("reference", cuda_available=True)
    assert plan.machine.tag("int8") == "CPU_INT8_py312_cpu_x86_64"


# --- run_decode on the reference backend ------------------------------------------------------
def fake_model(shapes):
    return SimpleNamespace(name="fake", linear_shapes=lambda: dict(shapes))


def test_run_decode_reference(tmp_path):
    plan = ld.plan_backends("reference")
    out = ld.run_decode(models=["tiny"], qdtypes=["int8", "fp8"], patterns=[Pattern(4), Pattern(8)], ms=[1, 3],
                        plan=plan, warmup=0, repeat=2, results=str(tmp_path), seed=1)
    rows = out["rows"]
    assert len(rows) == 2 * 3 * 2  # dtypes x (dense + 2 patterns) x M
    assert len(out["files"]) == 2 * 3
    for r in rows:
        assert r["impl"] == ("reference-dense" if r["pattern"] == "dense" else "reference-sparse")
        assert r["backend"] == ("cublaslt" if r["pattern"] == "dense" else "cusparselt")
        assert r["reference_backend"] is True and r["runs"] == 2
        assert r["latency_us"] == pytest.approx(sum(r[f"{n}_us"] for n in ("qkv", "o", "gate_up", "down")),
                                                abs=0.01)
        assert r["tokens_per_s"] == pytest.approx(r["M"] / r["latency_us"] * 1e6, rel=1e-3)
        if r["pattern"] == "dense":
            assert r["speedup"] == 1.0
        # the layers' epilogue is recorded: sparse INT8 writes bf16 with the weight scale as alpha
        want = {("int8", True): "bfloat16+alpha", ("int8", False): "int32"}.get((r["dtype"], r["pattern"] != "dense"),
                                                                                 "bfloat16")
        assert r["gemm_out"] == want, r
    tag = plan.machine.tag("int8")
    assert tag.startswith("CPU_INT8_")
    sparse = tmp_path / "decode" / tag / "cusparselt" / "2_8" / "tiny_decode.json"
    got = json.loads(sparse.read_text())["rows"]
    assert {r["M"] for r in got} == {1, 3} and {r["pattern_paper"] for r in got} == {"6:8"}
    # a rerun supersedes the same cases instead of appending duplicates
    ld.run_decode(models=["tiny"], qdtypes=["int8"], patterns=[Pattern(8)], ms=[3], plan=plan, warmup=0,
                  repeat=1, results=str(tmp_path))
    got = json.loads(sparse.read_text())["rows"]
    assert sorted((r["M"], r["runs"]) for r in got) == [(1, 2), (3, 1)]


def test_run_decode_ragged_shapes(tmp_path, monkeypatch):
    shapes = {"qkv": (48, 40), "o": (40, 40), "gate_up": (64, 40), "down": (40, 36)}
    monkeypatch.setattr(ld, "get_model", lambda name: fake_model(shapes))
    out = ld.run_decode(models=["fake"], qdtypes=["int8"], patterns=[Pattern(10)], ms=[2], plan=ld.plan_backends("reference"),
                        warmup=0, repeat=1, results=str(tmp_path))
    assert {r["pattern"] for r in out["rows"]} == {"dense", "2_10"}


def test_build_layers_sparse_equals_dense_on_pruned(monkeypatch):
    """The sparse layers hold the dense layers' weights, pruned and slid: same output on 2:4 data."""
    cfg = fake_model({"qkv": (32, 64), "o": (32, 32), "gate_up": (64, 32), "down": (32, 64)})
    dense = ld.build_layers(cfg, "int8", None, ld.make_backend("reference"), torch.device("cpu"), seed=5)
    sparse = ld.build_layers(cfg, "int8", Pattern(4), ld.make_backend("reference", sparse=True),
                             torch.device("cpu"), seed=5)
    for name in dense:
        wd, ws = dense[name].gemm_weight.data, sparse[name].gemm_weight.data
        assert bool(((ws == wd) | (ws == 0)).all())  # 2:4 lift/slide is the identity: a pruned copy
        assert int((ws != 0).sum()) * 2 <= ws.numel()


def test_run_decode_rejects_bad_m(tmp_path):
    with pytest.raises(ValueError, match="positive integers"):
        ld.run_decode(models=["tiny"], qdtypes=["int8"], patterns=[], ms=[0], plan=ld.plan_backends("reference"),
                      warmup=0, repeat=1, results=str(tmp_path))


# --- the CLI ---------------------------------------------------------------------------------
def cli():
    return _Group(name="slidesparse", commands={"bench": bench})


def test_cli_decode_reference(tmp_path):
    r = CliRunner().invoke(cli(), ["bench", "linears", "--backend", "reference", "--dtype", "int8",
                                   "--patterns", "6:8,2_10", "--m", "2,4", "--warmup", "0", "--repeat", "1",
                                   "--results", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    assert "NOT GPU numbers" in r.output and "tiny" in r.output
    assert "6:8 (2_8)" in r.output and "8:10 (2_10)" in r.output
    assert "decode/CPU_INT8_" in r.output
    files = sorted(p.relative_to(tmp_path / "res").as_posix() for p in (tmp_path / "res").rglob("*.csv"))
    tag = ld.plan_backends("reference").machine.tag("int8")
    assert files == [f"decode/{tag}/cublaslt/tiny_decode.csv", f"decode/{tag}/cusparselt/2_10/tiny_decode.csv",
                     f"decode/{tag}/cusparselt/2_8/tiny_decode.csv"]


@pytest.mark.parametrize("args, message", [
    (["--m", "0"], "positive integers"),
    (["--m", "a,b"], "positive integers"),
    (["--patterns", "3:8"], "accepted forms"),
    (["--dtype", "fp16"], "accepted: int8, fp8"),
    (["--model", "no-such-model"], "unknown model"),
    (["--patterns", ","], "at least one pattern"),
    (["--backend", "cutlass"], "Invalid value for '--backend'"),
])
def test_cli_decode_bad_input(tmp_path, args, message):
    r = CliRunner().invoke(cli(), ["bench", "linears", "--backend", "reference", "--results", str(tmp_path), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cli_cuda_graph_needs_cuda(tmp_path):
    r = CliRunner().invoke(cli(), ["bench", "linears", "--cuda-graph", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "--cuda-graph" in r.output


# --- the Makefile's not-built-yet targets ----------------------------------------------------
LATER_TARGETS = [("tune-coarse", "tune coarse"), ("tune-fine", "tune fine"), ("bench-kernel", "bench kernel"),
                 ("bench-quant", "bench quant"), ("bench-prefill", "bench prefill"), ("pipeline", "pipeline"),
                 ("report", "report")]  # smoke-gpu runs tools/smoke_gpu.py, not a CLI command (test_deploy)


def _venv_with_cli() -> Path:
    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "slidesparse").exists():
        pytest.skip("the slidesparse console script is not installed in this environment")
    return venv


def test_make_unbuilt_target_says_so():
    """The first later target whose command does not exist yet fails with the not-built-yet line."""
    venv = _venv_with_cli()
    from slidesparse.cli import main  # noqa: PLC0415

    unbuilt = [(t, w) for t, w in LATER_TARGETS
               if "No such command" in CliRunner().invoke(main, [*w.split(), "--help"]).output]
    if not unbuilt:
        pytest.skip("every later command exists now")
    target = unbuilt[0][0]
    # -o: treat the install stamp as up to date, so this test never installs anything
    p = subprocess.run(["make", "-s", "-o", str(venv / ".slidesparse-install-stamp"), f"VENV={venv}", target],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "MAKEFLAGS": ""})
    assert p.returncode != 0
    assert f"{target}: not built yet (issue:" in p.stderr


def test_make_help_lists_targets():
    _venv_with_cli()
    h = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert h.returncode == 0
    for target in ("install", "test", "convert", "bench-decode", "docker-build", *(t for t, _ in LATER_TARGETS)):
        assert f"  {target} " in h.stdout
