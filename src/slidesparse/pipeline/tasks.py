"""The seven pipeline tasks (as the seed's) and the engine case runner of tasks 6 and 7.

    1 download      huggingface_hub.snapshot_download of every model given as a Hugging Face repo id
                    into the download directory; SKIPPED for built-in models and local directories
    2 convert       checkpoint.convert_checkpoint of every model with a real checkpoint (local / hf)
                    to dense + each pattern, per dtype, into <checkpoints>/<model>-SlideSparse-<2_L|dense>-<dtype>
                    (existing outputs are kept). Built-in models: SKIPPED — the benchmark engine
                    runs seeded synthetic weights of the architecture, whose timing does not depend
                    on the values, so there is nothing to convert. (The engine always times
                    synthetic weights; converted checkpoints are for serving.)
    3 tune-coarse   cuBLASLt on the dense (N, K) + the dense Triton quant/dequant kernels, 4 tune-fine:
                    cuSPARSELt on the slid (N, K') + the lifting quant kernels (``tune_stage``:
                    gemm.tuning + kernels.tune_kernel), in a worker process, one M list for both,
                    into the tuning DBs under --search (resumable: present entries are skipped).
                    On the reference backend: SKIPPED, 'reference backend: no GPU library to tune'.
    5 quick-check   per model x dtype x pattern: the dense engine on the PRUNED weights
                    (EngineSpec(qdtype, pattern, sparse=False)) vs the sparse engine (sparse=True),
                    same seed, same tokens; prefill logits at one M compared. The check uses the
                    first ``check_layers`` decoder layers (default 2: exactness is per linear, depth
                    adds nothing but time). Criteria (see INT8_TOL / FP8_*): INT8 exact up to the
                    GEMM's int32 results (max-relative error < 1e-2) on the int32 epilogue, and the
                    benchmarked bf16 + alpha epilogue within INT8_FAST_TOL; FP8 relative L2 error within
                    2x its noise floor, measured by a third engine (dense, same pruned weights,
                    torch reference GEMM). Numbers are recorded in the status JSON (task 5 details).
    6 prefill, 7 decode: one case worker per (model, dtype, role) — see ``open_engine_case`` and
                    pipeline.runner.

A task returns a :class:`TaskOutcome`: status SUCCESS | FAILED | SKIPPED, a reason, details.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cases import BackendPlan, BenchSettings, Matrix, ModelSource
from .worker import CaseJob, CaseSession, call_isolated

TASK_NAMES = {1: "download", 2: "convert", 3: "tune-coarse", 4: "tune-fine", 5: "quick-check",
              6: "prefill", 7: "decode"}
ALL_TASKS = tuple(TASK_NAMES)
# Quick-check criteria. INT8: the sparse GEMM's int32 results equal the dense one's, so the logits
# agree exactly (bit-identical on the reference and on an H100): max |diff| / max |logit| < 1e-2.
# FP8: float32 sums run in another order, and the per-token FP8 requantization (3 mantissa bits)
# turns a last-bit difference of one activation into a 6-12 % step of that element, which the
# layers amplify. So FP8 is judged against its own noise floor, measured in the same run: a third
# engine, dense on the same pruned weights with the torch reference GEMM (only the summation order
# differs). Pass: relative L2 error sparse-vs-dense <= max(FP8_MIN_TOL, FP8_FLOOR_FACTOR x floor).
# Measured on an H100 (2026-11-25, M=512): llama3.2-1b and qwen2.5-7b, 2:4 and 6:8, 2 layers:
# sparse-vs-dense 0.068-0.081, floor 0.062-0.074; llama3.2-1b 6:8, all 16 layers: 0.103 vs 0.103;
# INT8 bit-identical in every case. A wrong slide/lift gives errors of order 1.
INT8_TOL = 1e-2
# The engine's sparse INT8 layers run the bf16 + alpha epilogue (linear.gemm_epilogue): one extra bf16
# rounding per linear (0.28 % relative L2 on one layer, the bf16 output rounding itself is 0.17 %),
# which the requantization amplifies like FP8's: 2.7-3.0 % on the tiny model's logits. Checked with
# relative L2 <= INT8_FAST_TOL: below the FP8 pass level above, while a wrong scale or layout is order 1.
INT8_FAST_TOL = 0.1
FP8_MIN_TOL, FP8_FLOOR_FACTOR = 1e-2, 2.0
NO_GPU_TUNE = "reference backend: no GPU library to tune"
HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]


@dataclass
class TaskOutcome:
    status: str            # SUCCESS | FAILED | SKIPPED
    reason: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class TaskContext:
    """What tasks 1-5 need from the runner."""

    matrix: Matrix
    plan: BackendPlan
    settings: BenchSettings
    download_dir: Path
    checkpoints_dir: Path
    search_dir: Path
    logs_dir: Path         # <results>/logs/tasks_<hwtag>/
    setup_timeout: float | None
    check_m: int
    check_layers: int
    log: Callable[[str], None]
    progress: Callable[[str, int, int], None] = lambda text, done, total: None


# --- the engine case runner (tasks 6 and 7) ---------------------------------------------------
def open_engine_case(job: CaseJob) -> CaseSession:
    """Build the case's engine once (in the worker); ``measure(M)`` times prefill or decode at M."""
    import torch  # noqa: PLC0415 - workers only

    from ..bench.e2e import bench_decode, bench_prefill  # noqa: PLC0415
    from ..engine import EngineSpec, build_engine, prefill_batch  # noqa: PLC0415
    from ..models import check_gemm_shapes  # noqa: PLC0415

    case, plan, st = job.case, job.plan, job.settings
    cfg = job.model.config()
    if not plan.reference:
        check_gemm_shapes(cfg, case.pattern)
    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = plan.make_backend(case.pattern)
    ops = plan.make_ops()
    t = time.perf_counter()
    engine = build_engine(cfg, EngineSpec(case.qdtype, case.pattern, sparse=True), backend, ops, device=device,
                          dtype=torch.bfloat16, seed=st.seed)
    build_s = time.perf_counter() - t
    info = {"impl": backend.name, "ops": getattr(ops, "name", type(ops).__name__), "build_s": round(build_s, 3)}
    gemm_out = engine.layers[0].qkv.epilogue.label  # every linear of one engine has the same epilogue

    def measure(M: int) -> dict:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if case.stage == "prefill":
            r = bench_prefill(engine, M, warmup=st.prefill_warmup, repeat=st.prefill_repeat, seed=st.seed)
            seqs, seq_len = prefill_batch(M)
            extra = {"seqs": seqs, "seq_len": seq_len, "warmup": st.prefill_warmup}
        else:
            r = bench_decode(engine, M, prompt_len=st.decode_prompt_len, steps=st.decode_steps,
                             warmup=st.decode_warmup, cuda_graphs=st.cuda_graphs, seed=st.seed)
            extra = {"prompt_len": st.decode_prompt_len, "warmup": st.decode_warmup}
        row = r.row()
        row.update(extra, gemm_out=gemm_out)
        if device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
            torch.cuda.empty_cache()
        return row

    return CaseSession(measure, info)


# --- 1 download -----------------------------------------------------------------------------
def hf_snapshot(repo_id: str, cache_dir: Path, *, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    return Path(snapshot_download(repo_id=repo_id, cache_dir=str(cache_dir), allow_patterns=HF_PATTERNS,
                                  local_files_only=local_only))


def task_download(ctx: TaskContext) -> tuple[TaskOutcome, Matrix]:
    """Returns the outcome and the matrix with downloaded paths filled in."""
    matrix = ctx.matrix
    notes, failed, fetched = [], [], []
    for m in matrix.models:
        if m.kind == "builtin":
            notes.append(f"{m.name}: built-in architecture (seeded synthetic weights), nothing to download")
            continue
        if m.kind == "local":
            notes.append(f"{m.name}: local directory {m.path}")
            continue
        ctx.log(f"download {m.spec} -> {ctx.download_dir}")
        try:
            path = hf_snapshot(m.spec, ctx.download_dir, local_only=False)
        except Exception as e:  # noqa: BLE001 - network / auth / repo errors: the task fails, the run goes on
            failed.append(f"{m.spec}: {type(e).__name__}: {e}")
            continue
        matrix = matrix.replace_model(m.with_path(path))
        fetched.append(f"{m.spec} -> {path}")
    details = {"downloaded": fetched, "notes": notes}
    if failed:
        return TaskOutcome("FAILED", "; ".join(failed), details), matrix
    if not fetched:
        return TaskOutcome("SKIPPED", "no model to download: " + "; ".join(notes), details), matrix
    return TaskOutcome("SUCCESS", f"{len(fetched)} model(s) downloaded", details), matrix


# --- 2 convert ------------------------------------------------------------------------------
def task_convert(ctx: TaskContext) -> TaskOutcome:
    from ..checkpoint import CONFIG_NAME, convert_checkpoint, default_out_dir  # noqa: PLC0415

    todo, notes = [], []
    for m in ctx.matrix.models:
        if not m.has_checkpoint:
            notes.append(f"{m.name}: built-in model, conversion of synthetic weights is not needed for timing")
            continue
        if m.path is None:
            notes.append(f"{m.name}: not downloaded")
            continue
        for qd in ctx.matrix.qdtypes:
            for p in ctx.matrix.roles():
                todo.append((m, qd, p, default_out_dir(m.name, p, qd, root=ctx.checkpoints_dir)))
    if not todo:
        return TaskOutcome("SKIPPED", "; ".join(notes) or "no model to convert")
    done, kept, failed = [], [], []
    for i, (m, qd, p, out) in enumerate(todo, 1):
        label = f"{m.name} {qd} {p.label if p else 'dense'}"
        ctx.progress(f"convert {label}", i - 1, len(todo))
        if (out / CONFIG_NAME).exists():
            kept.append(str(out))
            continue
        ctx.log(f"convert {label} -> {out}")
        res = call_isolated(convert_checkpoint,
                            {"source": m.path, "out_dir": str(out), "pattern": p.label if p else "dense",
                             "qdtype": qd, "seed": ctx.settings.seed, "device": ctx.plan.device},
                            log_path=ctx.logs_dir / "task2_convert.log", timeout=None)
        if res.ok:
            done.append(str(out))
        else:
            e = res.error
            failed.append(f"{label}: {e.error_type}: {e.message} [{e.location}]")
            ctx.log(f"convert {label} FAILED: {e.error_type}: {e.message} at {e.location}")
    ctx.progress("convert", len(todo), len(todo))
    details = {"converted": done, "existing": kept, "failed": failed, "notes": notes}
    if failed:
        return TaskOutcome("FAILED", f"{len(failed)} of {len(todo)} conversions failed: " + "; ".join(failed),
                           details)
    return TaskOutcome("SUCCESS", f"{len(done)} converted, {len(kept)} already present", details)


# --- 3 / 4 tuning ---------------------------------------------------------------------------
def _unique(items):
    out = []
    for it in items:
        if it not in out:
            out.append(it)
    return out


def tune_stage(stage: str, models: list[ModelSource], qdtypes: list[str], patterns: list, m_list: list[int],
               search_dir: str, device: str, progress: Callable | None = None) -> dict:
    """Tasks 3 (stage 'coarse': cuBLASLt on the dense (N, K) + the dense Triton quant kernels +
    dequant) and 4 ('fine': cuSPARSELt on every pattern's slid (N, K') + the lifting quant kernels +
    dequant), over one M list, into the tuning DBs under ``search_dir`` (runs in a worker).

    The GEMMs are tuned for the output dtype the engine runs (the backend's first legal one), the
    Triton kernels for the K each engine linear feeds them: rmsnorm_quant K = hidden (qkv, gate_up),
    quant K = heads*head_dim (o), silu_mul_quant I = intermediate (down), dequant every N.
    Resumable: both tuners skip what the DB already holds."""
    import torch  # noqa: PLC0415

    from ..gemm.tuning import tune_cublaslt, tune_cusparselt  # noqa: PLC0415
    from ..gemm.tuning_db import TuningStore  # noqa: PLC0415
    from ..kernels import model_kernel_jobs, tune_model_kernels  # noqa: PLC0415
    from ..linear import gemm_epilogue  # noqa: PLC0415
    from ..ops import gemm_k  # noqa: PLC0415

    torch.cuda.set_device(torch.device(device))
    sparse = stage == "fine"
    if sparse:
        from ..gemm.cusparselt import CusparseLtBackend as Backend  # noqa: PLC0415
        roles = list(patterns)
    else:
        from ..gemm.cublaslt import CublasLtBackend as Backend  # noqa: PLC0415
        roles = [None]
    be = Backend()
    lib = be.name
    cfgs = [m.config() for m in models]
    shapes = _unique((n, p.slid_k(k) if p is not None else gemm_k(k, None))
                     for c in cfgs for n, k in c.linear_shapes().values() for p in roles)
    store = TuningStore(search_dir)
    total = len(qdtypes) * (len(shapes) + len(model_kernel_jobs(cfgs, roles)) + 1)
    done, summary = 0, {"library": lib, "shapes": [list(s) for s in shapes], "m_list": list(m_list),
                        "gemm": {}, "kernels": []}
    tune = tune_cusparselt if sparse else tune_cublaslt
    for qd in qdtypes:
        out_dtype = gemm_epilogue(be, qd).out_dtype  # what the engine's linears run (sparse INT8: bf16)
        db = store.db(lib, qd)
        res = {"out_dtype": str(out_dtype).replace("torch.", ""), "tuned": 0, "present": 0, "failed": []}
        for n, k in shapes:
            if progress is not None:
                progress(done, total, f"{lib} {qd} N={n} K={k}")
            s = tune([(n, k)], m_list, qd, out_dtype, db=db, backend=be)
            res["tuned"] += len(s.tuned)
            res["present"] += len(s.skipped)
            res["failed"] += [f"N={fn} K={fk} M={fm}: {why}" for fn, fk, fm, why in s.failed]
            done += 1
        summary["gemm"][qd] = res

        def step(text: str) -> None:
            nonlocal done
            if progress is not None:
                progress(done, total, text)
            done += 1

        summary["kernels"] += tune_model_kernels(cfgs, roles, qd, out_dtype, m_list, search_dir=search_dir,
                                                 progress=step)
    return summary


def task_tune(ctx: TaskContext, task: int) -> TaskOutcome:
    if ctx.plan.reference:
        return TaskOutcome("SKIPPED", NO_GPU_TUNE)
    stage = "coarse" if task == 3 else "fine"
    if stage == "fine" and not ctx.matrix.patterns:
        return TaskOutcome("SKIPPED", "no sparse pattern in the matrix: nothing for cuSPARSELt to tune")
    m_list = sorted(set(ctx.matrix.prefill_m) | set(ctx.matrix.decode_m))
    kwargs = {"stage": stage, "models": list(ctx.matrix.models), "qdtypes": list(ctx.matrix.qdtypes),
              "patterns": list(ctx.matrix.patterns), "m_list": m_list, "search_dir": str(ctx.search_dir),
              "device": ctx.plan.device}
    ctx.log(f"task {task}: tune {stage} over M = {m_list} -> {ctx.search_dir}")
    res = call_isolated(tune_stage, kwargs, log_path=ctx.logs_dir / f"task{task}_{TASK_NAMES[task]}.log",
                        timeout=None, progress_kw="progress",
                        on_progress=lambda done, total, text: ctx.progress(text, done, total))
    if not res.ok:
        e = res.error
        return TaskOutcome("FAILED", f"{e.error_type}: {e.message} [{e.location}]",
                           {"error_type": e.error_type, "location": e.location})
    summ = res.value
    failed = [f"{qd}: {f}" for qd, r in summ["gemm"].items() for f in r["failed"]]
    tuned = sum(r["tuned"] for r in summ["gemm"].values())
    present = sum(r["present"] for r in summ["gemm"].values())
    reason = (f"{summ['library']}: {tuned} (N, K, M) tuned, {present} already in the DB; "
              f"{len(summ['kernels'])} Triton kernel sets tuned ({res.duration_s:.0f}s)")
    if failed:
        return TaskOutcome("FAILED", f"{len(failed)} (N, K, M) found no working algorithm (the library "
                                     f"heuristic runs there): {'; '.join(failed[:5])}; {reason}", summ)
    return TaskOutcome("SUCCESS", reason, summ)


# --- 5 quick check --------------------------------------------------------------------------
def quick_check(models: list[ModelSource], qdtypes: list[str], patterns: list, M: int, layers: int,
                plan: BackendPlan, seed: int, progress: Callable | None = None) -> list[dict]:
    """Sparse engine vs dense engine on the pruned weights: prefill logits at M (runs in a worker)."""
    import torch  # noqa: PLC0415

    from ..engine import EngineSpec, build_engine, prefill_batch  # noqa: PLC0415
    from ..gemm import make_backend  # noqa: PLC0415

    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ops = plan.make_ops()
    B, T = prefill_batch(M)
    total = len(models) * len(qdtypes) * len(patterns)
    out, n = [], 0
    for src in models:
        cfg = src.config()
        used = cfg.layers if layers <= 0 else min(layers, cfg.layers)
        cfg_used = dataclasses.replace(cfg, layers=used)
        tokens = torch.randint(0, cfg.vocab, (B, T), generator=torch.Generator().manual_seed(seed)).to(device)
        for qd in qdtypes:
            for p in patterns:
                logits, impls = [], []
                # dense, sparse (INT8: on the exact int32 epilogue), then FP8: the noise-floor engine
                # (dense, torch reference GEMM); INT8: the sparse engine on its benchmarked epilogue
                runs = [(False, None, None), (True, None, torch.int32 if qd == "int8" else None)]
                runs.append((False, "reference", None) if qd == "fp8" else (True, None, None))
                for sparse, override, acc in runs:
                    backend = (make_backend("reference", sparse=False) if override
                               else plan.make_backend(p if sparse else None))
                    eng = build_engine(cfg_used, EngineSpec(qd, p, sparse=sparse, acc_dtype=acc), backend, ops,
                                       device=device, dtype=torch.bfloat16, seed=seed)
                    if sparse and acc is None:
                        fast_out = eng.layers[0].qkv.epilogue.label
                    eng.setup_cache(B, T)
                    logits.append(eng.prefill(tokens).float().cpu())
                    impls.append(backend.name)
                    del eng
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                ref, got = logits[0], logits[1]
                diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
                rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
                rel_l2 = _rel_l2(got, ref)
                finite = bool(all(torch.isfinite(t).all() for t in logits))
                rec = {"model": src.name, "dtype": qd, "pattern": p.label, "pattern_paper": p.paper, "M": M,
                       "layers": used, "layers_total": cfg.layers, "max_abs_diff": diff, "max_abs_ref": scale,
                       "rel_err": rel, "rel_l2": rel_l2, "identical": bool(torch.equal(ref, got)),
                       "impl_dense": impls[0], "impl_sparse": impls[1]}
                if qd == "int8":
                    fast = _rel_l2(logits[2], ref)
                    rec.update(metric="rel_err", tolerance=INT8_TOL, fast_gemm_out=fast_out, fast_rel_l2=fast,
                               fast_tolerance=INT8_FAST_TOL,
                               passed=finite and rel <= INT8_TOL and fast <= INT8_FAST_TOL)
                else:
                    floor = _rel_l2(logits[2], ref)
                    tol = max(FP8_MIN_TOL, FP8_FLOOR_FACTOR * floor)
                    rec.update(metric="rel_l2", noise_floor_rel_l2=floor, impl_floor=impls[2], tolerance=tol,
                               passed=finite and rel_l2 <= tol)
                out.append(rec)
                n += 1
                if progress is not None:
                    progress(n, total, f"{src.name} {qd} {p.label}")
    return out


def _rel_l2(got, ref) -> float:
    num, den = (got - ref).double().norm().item(), ref.double().norm().item()
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def task_quick_check(ctx: TaskContext) -> TaskOutcome:
    if not ctx.matrix.patterns:
        return TaskOutcome("SKIPPED", "no sparse pattern in the matrix: nothing to compare with dense")
    kwargs = {"models": list(ctx.matrix.models), "qdtypes": list(ctx.matrix.qdtypes),
              "patterns": list(ctx.matrix.patterns), "M": ctx.check_m, "layers": ctx.check_layers,
              "plan": ctx.plan, "seed": ctx.settings.seed}
    res = call_isolated(quick_check, kwargs, log_path=ctx.logs_dir / "task5_quick_check.log",
                        timeout=ctx.setup_timeout, progress_kw="progress",
                        on_progress=lambda done, total, text: ctx.progress(f"check {text}", done, total))
    if not res.ok:
        e = res.error
        return TaskOutcome("FAILED", f"{e.error_type}: {e.message} [{e.location}]",
                           {"error_type": e.error_type, "location": e.location})
    checks = res.value
    for c in checks:
        ctx.log(f"check {c['model']} {c['dtype']} {c['pattern_paper']} ({c['pattern']}) M={c['M']} "
                f"layers {c['layers']}/{c['layers_total']}: rel err {c['rel_err']:.3g}, rel L2 {c['rel_l2']:.3g} "
                + (f"(FP8 noise floor {c['noise_floor_rel_l2']:.3g}) " if "noise_floor_rel_l2" in c else "")
                + (f"[{c['fast_gemm_out']} epilogue: rel L2 {c['fast_rel_l2']:.3g} <= {c['fast_tolerance']:.3g}] "
                   if "fast_rel_l2" in c else "")
                + f"({c['metric']} <= {c['tolerance']:.3g}), max |diff| {c['max_abs_diff']:.3g}, "
                f"identical={c['identical']} -> "
                f"{'pass' if c['passed'] else 'FAIL'}")
    bad = [c for c in checks if not c["passed"]]
    details = {"checks": checks}
    if bad:
        what = ", ".join(f"{c['model']} {c['dtype']} {c['pattern']} ({c['metric']} {c[c['metric']]:.3g} vs "
                         f"{c['tolerance']:.3g}" + (f"; {c['fast_gemm_out']} epilogue rel L2 {c['fast_rel_l2']:.3g} "
                                                   f"vs {c['fast_tolerance']:.3g}" if "fast_rel_l2" in c else "")
                         + ")" for c in bad)
        return TaskOutcome("FAILED", f"{len(bad)} of {len(checks)} sparse-vs-dense checks over tolerance: {what}",
                           details)
    worst = max(c["rel_err"] for c in checks)
    worst_l2 = max(c["rel_l2"] for c in checks)
    same = sum(c["identical"] for c in checks)
    return TaskOutcome("SUCCESS", f"{len(checks)} checks passed at M={ctx.check_m} (worst rel err {worst:.3g}, "
                                  f"worst rel L2 {worst_l2:.3g}, {same} bit-identical)", details)
