"""The benchmark pipeline on the CPU reference backend (tiny model): cases, workers, crashes, ledger
resume, status, CLI errors. Worker processes are spawned (each start costs a torch import, ~3 s
here), so every test keeps its matrix small."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slidesparse.pattern import Pattern
from slidesparse.listopts import parse_int_list
from slidesparse.pipeline.cases import BackendPlan, Case, Matrix, resolve_model
from slidesparse.pipeline.ledger import LedgerWarning
from slidesparse.pipeline.runner import PipelineOptions, parse_tasks, resolve_device, run_pipeline
from slidesparse.pipeline.status import claim_run_files
from slidesparse.pipeline.worker import (CRASH_ENV, CaseSession, error_type_of, location_of,
                                         parse_faulthandler)


# --- fake case runners (module level: the spawned workers import them by name) ----------------
def fault_runner(job):
    """M=1 fine; M=2 raises inside slidesparse; M=3 segfaults; M=4 hangs; anything else fine."""
    def measure(M):
        if M == 2:
            Pattern.parse("3:7")  # ValueError raised in slidesparse/pattern.py
        if M == 3:
            os.kill(os.getpid(), signal.SIGSEGV)
        if M == 4:
            time.sleep(120)
        return {"M": M, "fake_runner": True}
    return CaseSession(measure, {"impl": job.plan.impl(job.case.pattern), "ops": "none"})


def slow_runner(job):
    """Every M takes 0.4 s (for interrupting a run in the middle)."""
    def measure(M):
        time.sleep(0.4)
        return {"M": M, "fake_runner": True}
    return CaseSession(measure, {"impl": job.plan.impl(job.case.pattern), "ops": "none"})


# --- helpers --------------------------------------------------------------------------------
def opts(tmp_path, **kw):
    base = dict(tasks=(6,), models=["tiny"], dtypes=["int8"], patterns=["6:8"], prefill_m=[16, 32],
                decode_m=[2, 4], prefill_repeat=2, prefill_warmup=1, decode_steps=3, decode_warmup=1,
                results=str(tmp_path / "results"), device="cpu", timeout=120, setup_timeout=120)
    base.update(kw)
    return PipelineOptions(**base)


def ledger_lines(run):
    return [json.loads(x) for x in Path(run.ledger_path).read_text().splitlines()]


def result_rows(results: Path, stage: str):
    """Every results JSON under results/<stage>: rows per file, checked against its CSV."""
    out = {}
    for j in (results / stage).rglob("*.json"):
        rows = json.loads(j.read_text())["rows"]
        with open(j.with_suffix(".csv"), newline="") as f:
            crow = list(csv.DictReader(f))
        assert len(crow) == len(rows), j
        assert [int(r["M"]) for r in crow] == [r["M"] for r in rows]
        out[str(j.relative_to(results))] = rows
    return out


# --- pure parts (no worker) ------------------------------------------------------------------
def test_case_ids_round_trip():
    c = Case("decode", "qwen2.5-7b", "int8", "6:8")
    assert c.id == "decode/qwen2.5-7b/INT8/cusparselt/2_8" and c.backend == "cusparselt"
    d = Case("prefill", "llama3.2-1b", "fp8", None)
    assert d.id == "prefill/llama3.2-1b/FP8E4M3/cublaslt" and d.pattern_label == "dense"
    for case in (c, d):
        assert Case.parse(case.id) == case
    assert c.file_stem == "decode__qwen2.5-7b__INT8__cusparselt__2_8"


@pytest.mark.parametrize("bad", ["decode/x/INT8", "decode/x/INT4/cublaslt", "decode/x/INT8/cublaslt/2_8",
                                 "decode/x/INT8/cusparselt", "train/x/INT8/cublaslt", "decode/x/INT8/cusparselt/3_7"])
def test_bad_case_ids(bad):
    with pytest.raises(ValueError):
        Case.parse(bad)


def test_matrix_order_and_models(tmp_path):
    m = Matrix.build(["tiny"], ["int8", "fp8", "int8"], ["2:4", "2_8", "6:8"], "16,32,16", [2])
    assert m.qdtypes == ("int8", "fp8") and [p.label for p in m.patterns] == ["2_4", "2_8"]
    assert m.prefill_m == (16, 32)
    ids = [c.id for c in m.cases("prefill")]
    assert ids[:3] == ["prefill/tiny/INT8/cublaslt", "prefill/tiny/INT8/cusparselt/2_4",
                       "prefill/tiny/INT8/cusparselt/2_8"] and len(ids) == 6
    d = tmp_path / "MyModel"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert resolve_model(str(d)).kind == "local" and resolve_model(str(d)).name == "mymodel"
    assert resolve_model("Qwen/Qwen2.5-7B").kind == "hf" and resolve_model("Qwen/Qwen2.5-7B").name == "qwen2.5-7b"
    assert resolve_model("TINY").kind == "builtin"
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model("no-such-model")
    with pytest.raises(ValueError, match="share the name"):
        Matrix.build(["tiny", "Tiny"], ["int8"], [], [1], [1])
    with pytest.raises(ValueError, match="positive"):
        parse_int_list("16,0", "prefill M values")


def test_parse_tasks_and_device():
    assert parse_tasks("1,5-7") == (1, 5, 6, 7)
    assert parse_tasks([7, 6]) == (6, 7)
    for bad in ("8", "0", "2-1", "x", ""):
        with pytest.raises(ValueError):
            parse_tasks(bad)
    assert resolve_device("auto", False) == ("cpu", True)
    assert resolve_device("auto", True) == ("cuda:0", False)
    assert resolve_device("cuda:1", True) == ("cuda:1", False)
    assert resolve_device("cpu", True) == ("cpu", True)
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_device("cuda", False)
    with pytest.raises(ValueError, match="auto, cpu"):
        resolve_device("gpu", True)
    plan = BackendPlan(reference=False, device="cuda:0")
    assert plan.impl(None) == "cublaslt" and plan.impl(Pattern(8)) == "cusparselt"


def test_locations_prefer_slidesparse_frames():
    import slidesparse

    pkg = Path(slidesparse.__file__).parent
    eng = str(pkg / "engine.py")
    harness = str(pkg / "pipeline" / "worker.py")
    assert location_of([("/x/torch/nn/functional.py", 5), (eng, 12), ("/x/torch/_ops.py", 9)]) \
        == "slidesparse/engine.py:12"
    assert location_of([(harness, 3), ("/elsewhere/lib.py", 7)]) == "/elsewhere/lib.py:7"
    assert error_type_of(RuntimeError("x")) == "RuntimeError"
    import torch
    assert error_type_of(torch.OutOfMemoryError("x")) == "torch.OutOfMemoryError"
    dump = (f'worker main thread 0x00007f0000000001\nFatal Python error: Segmentation fault\n\n'
            f'Thread 0x00007f0000000002 (most recent call first):\n  File "{harness}", line 40 in watchdog\n\n'
            f'Current thread 0x00007f0000000001 (most recent call first):\n'
            f'  File "/x/torch/_ops.py", line 9 in __call__\n  File "{eng}", line 77 in forward\n'
            f'  File "{harness}", line 200 in case_worker_main\n')
    assert parse_faulthandler(dump) == ("Fatal Python error: Segmentation fault", "slidesparse/engine.py:77")
    tb = f'Traceback (most recent call last):\n  File "{harness}", line 5, in main\n    x()\n' \
         f'  File "{eng}", line 9, in x\n    raise E\nValueError: no\n'
    assert parse_faulthandler(tb) == (None, "slidesparse/engine.py:9")


def test_run_case_bookkeeping(monkeypatch, tmp_path):
    """Which M a failure is charged to, from scripted worker lives (no process is started)."""
    import slidesparse.pipeline.worker as w

    lives = iter([
        [("ready", {}), ("start", 1), ("done", 1, {"M": 1}, 0.1), ("died", -11, "")],  # dies between M=1 and M=2
        [("ready", {}), ("start", 3), ("timeout", 5.0, "")],                          # M=3 hangs
        [("died", -6, "Fatal Python error: Aborted\n")],                               # setup dies: M=4, 5 fail
    ])
    monkeypatch.setattr(w, "_supervise", lambda *a, **k: iter(next(lives)))
    job = w.CaseJob(case=Case("prefill", "tiny", "int8", None), ms=(1, 2, 3, 4), runner=None,
                    plan=None, settings=None, model=None, log_path=str(tmp_path / "x.log"))
    evs = [e for e in w.run_case(job, timeout=1, setup_timeout=1) if e.kind in ("done", "failed")]
    got = [(e.kind, e.M, e.error.error_type if e.error else None) for e in evs]
    assert got == [("done", 1, None), ("failed", 2, "Signal SIGSEGV"), ("failed", 3, "Timeout"),
                   ("failed", 4, "Signal SIGABRT")]
    assert "after M=1, before the next M" in evs[1].error.message
    assert "during setup" in evs[3].error.message and "Aborted" in evs[3].error.message


def test_run_files_are_unique(tmp_path):
    a, b = claim_run_files(tmp_path), claim_run_files(tmp_path)
    assert a[0] != b[0] and a[1] != b[1] and a[2] != b[2]
    assert a[2].name == f"pipeline_{a[0]}_status.json"


# --- whole runs -------------------------------------------------------------------------------
def test_pipeline_end_to_end_then_resume(tmp_path):
    """Tasks 5, 6, 7 on the reference backend; then a rerun does nothing (and survives a torn ledger)."""
    res = tmp_path / "results"
    run = run_pipeline(opts(tmp_path, tasks=(5, 6, 7)))
    assert run.exit_code == 0
    st = json.loads(run.status_path.read_text())
    assert st["schema"] == 1 and st["finished"] and st["reference_backend"] is True
    assert st["machine"]["gpu"] == "CPU" and st["hwtag"].startswith("CPU_") and "INT8" not in st["hwtag"]
    assert st["matrix"]["models"] == ["tiny"] and st["matrix"]["patterns"] == ["2_8"]
    assert {n: t["status"] for n, t in st["tasks"].items()} == {
        "1": "SKIPPED", "2": "SKIPPED", "3": "SKIPPED", "4": "SKIPPED", "5": "SUCCESS", "6": "SUCCESS",
        "7": "SUCCESS"}
    assert "not selected" in st["tasks"]["3"]["reason"]
    check = st["tasks"]["5"]["details"]["checks"]
    assert len(check) == 1 and check[0]["identical"] and check[0]["rel_err"] == 0.0  # INT8 is exact
    assert check[0]["fast_gemm_out"] == "bfloat16+alpha" and 0 < check[0]["fast_rel_l2"] <= check[0]["fast_tolerance"]
    assert any(i["kind"] == "reference-backend" for i in st["known_issues"])
    assert set(st["cases"]) == {"prefill/tiny/INT8/cublaslt", "prefill/tiny/INT8/cusparselt/2_8",
                                "decode/tiny/INT8/cublaslt", "decode/tiny/INT8/cusparselt/2_8"}
    for cid, c in st["cases"].items():
        assert c["status"] == "SUCCESS" and c["failed_m"] == []
        assert c["done_m"] == ([16, 32] if cid.startswith("prefill") else [2, 4])
        assert (res / c["log"]).exists()
    lines = ledger_lines(run)
    assert len(lines) == 8 and all(e["status"] == "done" for e in lines)
    assert {e["impl"] for e in lines} == {"reference-dense", "reference-sparse"}
    rows = result_rows(res, "prefill") | result_rows(res, "decode")
    assert len(rows) == 4
    for path, rs in rows.items():
        assert [r["M"] for r in rs] in ([16, 32], [2, 4])
        for r in rs:
            assert r["tokens_per_s"] > 0 and r["reference_backend"] is True and r["method"] == "e2e"
            assert r["hwtag"].startswith("CPU_INT8_") and r["run"] == run.run_id
            assert r["impl"] == ("reference-sparse" if "cusparselt" in path else "reference-dense")
            # the engine's GEMM output: INT8 sparse layers take the bf16 + alpha epilogue
            assert r["gemm_out"] == ("bfloat16+alpha" if "cusparselt" in path else "int32")
    assert "prefill/CPU_INT8_" in "\n".join(rows) and "/cusparselt/2_8/tiny_prefill.json" in "\n".join(rows)
    assert run.log_path.read_text().count("done") >= 8

    # a torn last ledger line (as after a power cut) is ignored with a warning; nothing is rerun
    before = Path(run.ledger_path).read_bytes()
    with open(run.ledger_path, "ab") as f:
        f.write(b'{"case": "prefill/tiny/INT8/cublaslt", "M": 64, "sta')
    with pytest.warns(LedgerWarning):
        again = run_pipeline(opts(tmp_path, tasks=(6, 7)))
    assert again.exit_code == 0
    assert Path(run.ledger_path).read_bytes().startswith(before)
    assert len([ln for ln in Path(run.ledger_path).read_text().splitlines() if ln.strip()]) == 9  # + torn
    st2 = json.loads(again.status_path.read_text())
    assert all(c["resumed_m"] == c["done_m"] for c in st2["cases"].values())
    assert any(i["kind"] == "ledger-unreadable-line" for i in st2["known_issues"])
    assert all(r["run"] == run.run_id for rs in result_rows(res, "prefill").values() for r in rs)

    # --fresh ignores the ledger: the dense prefill case runs again, its rows are replaced (same key)
    fresh = run_pipeline(opts(tmp_path, tasks=(6,), patterns=[], fresh=True))
    assert fresh.exit_code == 0
    new = [json.loads(x) for x in Path(run.ledger_path).read_text().splitlines()[9:]]
    assert [(e["case"], e["M"], e["status"]) for e in new] == [
        ("prefill/tiny/INT8/cublaslt", 16, "done"), ("prefill/tiny/INT8/cublaslt", 32, "done")]
    rows = result_rows(res, "prefill")
    dense = next(rs for path, rs in rows.items() if "cublaslt" in path)
    assert [r["M"] for r in dense] == [16, 32] and {r["run"] for r in dense} == {fresh.run_id}


def test_injected_crash_then_retry_failed(tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_ENV, "prefill/*/INT8/cusparselt/*")
    first = run_pipeline(opts(tmp_path))
    assert first.exit_code == 1
    st = json.loads(first.status_path.read_text())
    assert st["tasks"]["6"]["status"] == "FAILED" and st["tasks"]["7"]["status"] == "SKIPPED"
    dense, sparse = st["cases"]["prefill/tiny/INT8/cublaslt"], st["cases"]["prefill/tiny/INT8/cusparselt/2_8"]
    assert dense["status"] == "SUCCESS" and dense["done_m"] == [16, 32]
    assert sparse["status"] == "FAILED" and sparse["failed_m"] == [16, 32] and sparse["done_m"] == []
    failed = [e for e in ledger_lines(first) if e["status"] == "failed"]
    assert [e["M"] for e in failed] == [16, 32]
    for e in failed:
        assert e["error_type"] == "Signal SIGABRT"
        assert e["location"].startswith("slidesparse/pipeline/worker.py:")  # where the abort was injected
        assert "before the first M" in e["message"]
    assert not list((tmp_path / "results" / "prefill").glob("*/cusparselt/2_8/*.json"))  # no row for a failure

    monkeypatch.delenv(CRASH_ENV)
    # without --retry-failed the failed (case, M) are skipped and reported: no worker runs
    skip = run_pipeline(opts(tmp_path))
    assert skip.exit_code == 1 and len(ledger_lines(skip)) == 4
    st = json.loads(skip.status_path.read_text())
    assert st["cases"]["prefill/tiny/INT8/cusparselt/2_8"]["skipped_failed_m"] == [16, 32]
    assert "not retried" in st["tasks"]["6"]["reason"]
    # --retry-failed reruns exactly the failed ones
    retry = run_pipeline(opts(tmp_path, retry_failed=True))
    assert retry.exit_code == 0
    lines = ledger_lines(retry)
    assert len(lines) == 6
    assert [(e["case"], e["M"], e["status"]) for e in lines[4:]] == [
        ("prefill/tiny/INT8/cusparselt/2_8", 16, "done"), ("prefill/tiny/INT8/cusparselt/2_8", 32, "done")]
    st = json.loads(retry.status_path.read_text())
    sparse = st["cases"]["prefill/tiny/INT8/cusparselt/2_8"]
    assert sparse["status"] == "SUCCESS" and sparse["failures"] == [] and sparse["done_m"] == [16, 32]


@pytest.mark.slow
def test_exception_segfault_timeout_each_fail_one_m(tmp_path):
    """One case, M = 1..5: an exception, a segfault and a hang each fail only their M; fresh workers
    take the rest."""
    run = run_pipeline(opts(tmp_path, patterns=[], prefill_m=[1, 2, 3, 4, 5], timeout=2.0),
                       case_runners={"prefill": fault_runner})
    assert run.exit_code == 1
    by_m = {e["M"]: e for e in ledger_lines(run)}
    assert [by_m[m]["status"] for m in (1, 2, 3, 4, 5)] == ["done", "failed", "failed", "failed", "done"]
    assert by_m[2]["error_type"] == "ValueError" and by_m[2]["location"].startswith("slidesparse/pattern.py:")
    assert "cannot parse sparsity pattern" in by_m[2]["message"]
    assert by_m[3]["error_type"] == "Signal SIGSEGV" and "M=3" in by_m[3]["message"]
    assert by_m[3]["location"].startswith("test_pipeline.py:")  # the os.kill line: innermost frame
    assert by_m[4]["error_type"] == "Timeout" and by_m[4]["location"].startswith("test_pipeline.py:")
    assert by_m[4]["duration_s"] >= 2.0
    rows = result_rows(tmp_path / "results", "prefill")
    assert [r["M"] for rs in rows.values() for r in rs] == [1, 5]
    st = json.loads(run.status_path.read_text())
    case = st["cases"]["prefill/tiny/INT8/cublaslt"]
    assert case["status"] == "FAILED" and case["failed_m"] == [2, 3, 4] and case["done_m"] == [1, 5]
    assert {f["M"]: f["error_type"] for f in case["failures"]} == {2: "ValueError", 3: "Signal SIGSEGV",
                                                                  4: "Timeout"}
    log = (tmp_path / "results" / case["log"]).read_text()
    assert "starting M=3" in log and "Fatal Python error: Segmentation fault" in log


def test_sigint_marks_interrupted_and_resumes(tmp_path):
    o = opts(tmp_path, tasks=(6, 7), patterns=[], prefill_m=[1, 2, 3, 4, 5, 6, 7, 8])

    def interrupt_when_two_lines():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = list((tmp_path / "results" / "logs").glob("ledger_*.jsonl"))
            if files and len(files[0].read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    t = threading.Thread(target=interrupt_when_two_lines, daemon=True)
    t.start()
    run = run_pipeline(o, case_runners={"prefill": slow_runner, "decode": slow_runner})
    t.join()
    assert run.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    st = json.loads(run.status_path.read_text())
    assert st["finished"] and st["tasks"]["6"]["status"] == "INTERRUPTED"
    assert st["tasks"]["7"]["status"] == "SKIPPED" and "interrupted" in st["tasks"]["7"]["reason"]
    assert st["cases"]["prefill/tiny/INT8/cublaslt"]["status"] == "INTERRUPTED"
    done_before = ledger_lines(run)
    assert 2 <= len(done_before) < 8 and all(e["status"] == "done" for e in done_before)

    rerun = run_pipeline(opts(tmp_path, tasks=(6,), patterns=[], prefill_m=[1, 2, 3, 4, 5, 6, 7, 8]),
                         case_runners={"prefill": slow_runner})
    assert rerun.exit_code == 0
    lines = ledger_lines(rerun)
    assert lines[:len(done_before)] == done_before
    assert sorted(e["M"] for e in lines) == [1, 2, 3, 4, 5, 6, 7, 8]  # each M exactly once


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(tmp_path):
    """SIGKILL the CLI in the middle; the rerun repeats no finished (case, M) and every file is whole."""
    res = tmp_path / "results"
    cmd = [sys.executable, "-c", "from slidesparse.commands.pipeline import pipeline; "
           "pipeline(prog_name='slidesparse pipeline')", "--tasks", "6", "--models", "tiny", "--dtypes", "int8",
           "--patterns", "none", "--prefill-m", ",".join(str(8 * i) for i in range(1, 13)), "--prefill-repeat", "2",
           "--results", str(res), "--device", "cpu"]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            files = list((res / "logs").glob("ledger_*.jsonl")) if (res / "logs").exists() else []
            if files and files[0].read_text().count("\n") >= 1:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ledger = next((res / "logs").glob("ledger_*.jsonl"))
    killed = ledger.read_bytes()
    first = [json.loads(x) for x in killed.decode().splitlines()]  # whole lines only
    assert 1 <= len(first) < 12
    status1 = next((res / "logs").glob("pipeline_*_status.json"))
    assert json.loads(status1.read_text())["finished"] is None  # killed: never finished
    rows1 = result_rows(res, "prefill")
    runs1 = {(r["case"], r["M"]): r["run"] for rs in rows1.values() for r in rs}
    assert {(e["case"], e["M"]) for e in first} <= set(runs1)  # every ledger 'done' has its row

    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    final = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert ledger.read_bytes().startswith(killed)
    keys = [(e["case"], e["M"]) for e in final]
    assert len(keys) == len(set(keys)) == 12 and all(e["status"] == "done" for e in final)
    for p in (res / "logs").glob("*.json"):
        json.loads(p.read_text())
    rows = result_rows(res, "prefill")
    assert [len(rs) for rs in rows.values()] == [12]
    for rs in rows.values():
        for r in rs:
            if (r["case"], r["M"]) in {(e["case"], e["M"]) for e in first}:
                assert r["run"] == runs1[(r["case"], r["M"])]  # measured once, before the kill
    st2 = json.loads(sorted((res / "logs").glob("pipeline_*_status.json"))[-1].read_text())
    assert st2["cases"]["prefill/tiny/INT8/cublaslt"]["resumed_m"] == sorted(e["M"] for e in first)


def test_download_and_convert_tasks(tmp_path, monkeypatch):
    """Task 1 fetches an HF repo id (the hub call stubbed), task 2 converts it (dense + pattern); a
    rerun keeps the converted checkpoints; a repo id that was never downloaded is one clear error."""
    import hf_fixtures

    import slidesparse.pipeline.runner as runner_mod
    import slidesparse.pipeline.tasks as tasks_mod
    from slidesparse.checkpoint import CONFIG_NAME, default_out_dir

    hub = hf_fixtures.build(tmp_path / "hub" / "snapshot")
    calls = []

    def fake_snapshot(repo_id, cache_dir, *, local_only):
        calls.append((repo_id, local_only))
        return hub

    monkeypatch.setattr(tasks_mod, "hf_snapshot", fake_snapshot)
    ck = tmp_path / "ck"
    o = opts(tmp_path, tasks=(1, 2), models=["acme/TinyHF"], checkpoints=str(ck), download_dir=str(tmp_path / "dl"))
    run = run_pipeline(o)
    assert run.exit_code == 0, run.status["tasks"]
    t = run.status["tasks"]
    assert t["1"]["status"] == "SUCCESS" and calls == [("acme/TinyHF", False)]
    assert t["2"]["status"] == "SUCCESS" and "2 converted" in t["2"]["reason"]
    for p in (None, "6:8"):
        assert (default_out_dir("tinyhf", p, "int8", root=ck) / CONFIG_NAME).exists()
    again = run_pipeline(o)
    assert again.status["tasks"]["2"]["reason"].startswith("0 converted, 2 already present")

    def no_snapshot(repo_id, cache_dir, *, local_only):
        raise OSError("offline")

    monkeypatch.setattr(tasks_mod, "hf_snapshot", no_snapshot)
    failed = run_pipeline(o)
    assert failed.exit_code == 1 and "offline" in failed.status["tasks"]["1"]["reason"]
    monkeypatch.setattr(runner_mod, "hf_snapshot", no_snapshot)
    with pytest.raises(FileNotFoundError, match="not downloaded"):
        run_pipeline(opts(tmp_path, tasks=(6,), models=["acme/TinyHF"]))


# --- the CLI ----------------------------------------------------------------------------------
def _group():
    from slidesparse.cli import _Group
    from slidesparse.commands.pipeline import decode_cmd, pipeline, prefill_cmd

    g = _Group(name="slidesparse")
    for c in (pipeline, prefill_cmd, decode_cmd):
        g.add_command(c)
    return g


@pytest.mark.parametrize("args, match", [
    (["--tasks", "9"], "out of range"),
    (["--tasks", "1,x"], "tasks must be"),
    (["--prefill-m", "16,0"], "positive"),
    (["--decode-m", "abc"], "positive integers"),
    (["--patterns", "3:7"], "cannot parse sparsity pattern"),
    (["--dtypes", "int4"], "int4"),
    (["--models", "no-such-model"], "unknown model"),
    (["--models", "./missing/dir"], "unknown model"),
    (["--retry-failed", "--fresh"], "exclude each other"),
    (["--device", "tpu"], "device must be"),
])
def test_bad_options_one_clear_error(tmp_path, args, match):
    res = tmp_path / "results"
    r = CliRunner().invoke(_group(), ["pipeline", "--results", str(res), "--device", "cpu", *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.stderr
    assert not res.exists()  # nothing written


def test_help_documents_fault_injection():
    for name in ("pipeline", "prefill", "decode-e2e"):
        r = CliRunner().invoke(_group(), [name, "--help"])
        assert r.exit_code == 0 and "SLIDESPARSE_CRASH_CASE" in r.output and "ledger" in r.output


def test_decode_command_runs_task_7_only(tmp_path):
    res = tmp_path / "results"
    r = CliRunner().invoke(_group(), ["decode-e2e", "--models", "tiny", "--dtypes", "int8", "--patterns", "none",
                                      "--m", "2", "--steps", "2", "--warmup", "1", "--results", str(res),
                                      "--device", "cpu"])
    assert r.exit_code == 0, r.output
    st = json.loads(next((res / "logs").glob("pipeline_*_status.json")).read_text())
    assert [n for n, t in st["tasks"].items() if t["status"] != "SKIPPED"] == ["7"]
    assert list(st["cases"]) == ["decode/tiny/INT8/cublaslt"]
    assert st["argv"][0] == "slidesparse"
    rows = result_rows(res, "decode")
    assert [r["M"] for rs in rows.values() for r in rs] == [2]
    assert "reference backend" in r.output.lower()
