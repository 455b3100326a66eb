#!/usr/bin/env python3
"""GPU smoke + speed check of the cuBLASLt / cuSPARSELt backends, in one process (< 5 minutes on an H100).

    python tools/gpu_gemm.py OUTDIR [--model qwen2.5-7b] [--ms 64,4096,16384] [--repeat 20]
                                    [--search search --rounds 5] [--skip-correctness]

Prints: library versions; a correctness summary (INT8 sparse == dense == int32 reference for every
pattern on the model's shapes, FP8 relative errors, every config id on the shared compressed weight,
CUDA-graph replay, poisoned outputs); host time per cached call at M=64; and the speed table: the
sum of the model's four linears per M for INT8->int32 and FP8->bf16, dense (cuBLASLt heuristic
top-1, best of the heuristic's top 32) vs sparse 2:4 / 4:6 / 6:8 / 8:10 (best over every config
id with split-K 1, and at M=64 also split-K -1 (library choice) / 2 / 4 / 8 in modes 1 and 2 on the 3
best ids), with speedups over the best
dense and the ideal L/(L-2). With ``--search DIR`` it then re-times, per shape, the plain search's
winners against the tuning DB's choices on the same operands in ``--rounds`` interleaved rounds, and
prints both speedup tables side by side (is the tuned path at least a plain exhaustive search?).
Host time is measured last, in rounds. Every case catches its own failure, prints it and goes on.
Full numbers: OUTDIR/gemm_speed.csv and OUTDIR/gemm_summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from slidesparse.gemm.plan_cache import SparseConfig  # noqa: E402
from slidesparse.gemm.timing import host_us_per_call, time_calls  # noqa: E402
from slidesparse.gemm.verify import random_2to4, random_q, reference_mm, rel_error  # noqa: E402
from slidesparse.models import get_model  # noqa: E402
from slidesparse.pattern import Pattern  # noqa: E402
from slidesparse.sparsify import lift, prune, slide  # noqa: E402

PATTERNS = ("2_4", "2_6", "2_8", "2_10")
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def gen(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


def correctness(dense, sparse, shapes, summary):
    res = summary.setdefault("correctness", {})

    def case(name, fn):
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            ok, detail = False, f"{type(e).__name__}: {e}"
            traceback.print_exc()
        res[name] = {"ok": bool(ok), "detail": detail}
        log(f"  {'PASS' if ok else 'FAIL'} {name}: {detail}")

    M = 256
    for lin, (n, k) in shapes.items():
        w = random_q(n, k, "int8", "cuda", gen(1))
        x = random_q(M, k, "int8", "cuda", gen(2))
        for pat in PATTERNS:
            def f(w=w, x=x, pat=pat, lin=lin):
                p = Pattern.parse(pat)
                wp = prune(w, p)
                ref = reference_mm(x, wp)
                yd = dense.mm(x, dense.prepare(wp), torch.int32)
                ys = sparse.mm(lift(x, p), sparse.prepare(slide(wp, p)), torch.int32)
                od, os_ = torch.equal(yd, ref), torch.equal(ys, ref)
                return od and os_, f"dense {'==' if od else '!='} ref, sparse {'==' if os_ else '!='} ref"
            case(f"int8 {lin} {pat} M={M}", f)
    for lin in ("qkv", "down"):
        n, k = shapes[lin]
        for pat in ("2_4", "2_8"):
            def f(n=n, k=k, pat=pat):
                p = Pattern.parse(pat)
                wp = prune(random_q(n, k, "fp8", "cuda", gen(3)), p)
                x = random_q(M, k, "fp8", "cuda", gen(4))
                ref = reference_mm(x, wp)
                ed = rel_error(dense.mm(x, dense.prepare(wp), torch.bfloat16), ref)
                es = rel_error(sparse.mm(lift(x, p), sparse.prepare(slide(wp, p)), torch.bfloat16), ref)
                return ed <= 1e-2 and es <= 1e-2, f"rel err dense {ed:.2e}, sparse {es:.2e}"
            case(f"fp8->bf16 {lin} {pat} M={M}", f)

    def every_config():
        n, k = shapes["qkv"]
        p = Pattern.parse("2_8")
        wp = prune(random_q(n, k, "int8", "cuda", gen(5)), p)
        x = random_q(M, k, "int8", "cuda", gen(6))
        ref = reference_mm(x, wp)
        ws = slide(wp, p)
        w = sparse.prepare(ws)
        xl = lift(x, p)
        max_id = sparse.max_config_id(n, ws.shape[1], M, "int8", torch.int32)
        bad, refused = [], []
        for a in range(max_id):
            try:
                y = sparse.mm(xl, w, torch.int32, config=SparseConfig(a))
            except RuntimeError:
                refused.append(a)
                continue
            if not torch.equal(y, ref):
                bad.append(a)
        same = []
        for a in range(max_id):
            if a in refused:
                continue
            try:
                same.append(torch.equal(sparse.compress_with_plan(ws, SparseConfig(a), M, torch.int32), w.data))
            except RuntimeError:
                pass
        summary["config_max_id_qkv_2_8_int8"] = max_id
        return not bad, (f"CONFIG_MAX_ID={max_id}; wrong: {bad}; refused: {refused}; "
                         f"plan-compress bytes == compress2 bytes for {sum(same)}/{len(same)} ids")
    case("every config id exact on the SpMMACompress2 weight", every_config)

    def graph():
        n, k = 2048, 2048
        wsq = random_2to4(n, k, "int8", "cuda", gen(7))
        wdq = random_q(n, k, "int8", "cuda", gen(8))
        wsp, wd = sparse.prepare(wsq), dense.prepare(wdq)
        oks = []
        for m in (64, 40):
            x = random_q(m, k, "int8", "cuda", gen(9))
            os_, od = (torch.empty(m, n, dtype=torch.int32, device="cuda") for _ in range(2))
            sparse.warmup(wsp, [m], torch.int32)
            dense.warmup(wd, [m], torch.int32)
            sparse.mm(x, wsp, torch.int32, os_)
            dense.mm(x, wd, torch.int32, od)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                sparse.mm(x, wsp, torch.int32, os_)
                dense.mm(x, wd, torch.int32, od)
            x.copy_(random_q(m, k, "int8", "cuda", gen(10)))
            os_.fill_(-1)
            od.fill_(-1)
            g.replay()
            torch.cuda.synchronize()
            oks.append(torch.equal(os_, reference_mm(x, wsq)) and torch.equal(od, reference_mm(x, wdq)))
        return all(oks), f"replay == reference at M=64, 40: {oks}"
    case("CUDA graph capture + replay", graph)

    def poison():
        n, k = 1024, 1024
        wsq = random_2to4(n, k, "int8", "cuda", gen(11))
        wsp, wd = sparse.prepare(wsq), dense.prepare(wsq)
        msgs, ok = [], True
        for m in (1, 17, 40, 64, 100):
            x = random_q(m, k, "int8", "cuda", gen(12))
            ref = reference_mm(x, wsq)
            for be, w in ((sparse, wsp), (dense, wd)):
                out = torch.full((m, n), -(2 ** 31), dtype=torch.int32, device="cuda")
                be.mm(x, w, torch.int32, out)
                good = not bool((out == -(2 ** 31)).any()) and torch.equal(out, ref)
                ok &= good
                if not good:
                    msgs.append(f"{be.name} M={m}")
        return ok, "every element written and right" if ok else f"bad: {msgs}"
    case("poisoned outputs (M = 1, 17, 40, 64, 100)", poison)


def host_overhead(dense, sparse, shapes, summary, rounds: int = 7):
    """Host time per cached call at M=64 (qkv): ``rounds`` interleaved measurements of 200 calls each,
    median and min (the host CPU's clock varies, most right after the machine starts); PyTorch's
    ``_cslt_sparse_mm`` on the same weight beside it."""
    n, k = shapes["qkv"]
    ws = random_2to4(n, Pattern.parse("2_8").slid_k(k), "int8", "cuda", gen(1))
    wd = random_q(n, k, "int8", "cuda", gen(2))
    wsp, wdd = sparse.prepare(ws), dense.prepare(wd)
    xs = random_q(64, ws.shape[1], "int8", "cuda", gen(3))
    xd = random_q(64, k, "int8", "cuda", gen(4))
    os_ = torch.empty(64, n, dtype=torch.int32, device="cuda")
    od = torch.empty(64, n, dtype=torch.int32, device="cuda")
    fns = {"cusparselt": lambda: sparse.mm(xs, wsp, torch.int32, os_),
           "cublaslt": lambda: dense.mm(xd, wdd, torch.int32, od),
           "cusparselt_alloc_out": lambda: sparse.mm(xs, wsp, torch.int32)}
    try:  # torch computes W [N, K] @ B [K, M]: B = X^T, checked against our call's result
        wc, xt = torch._cslt_compress(ws), xs.t()
        got = torch._cslt_sparse_mm(wc, xt, out_dtype=torch.int32)
        if not torch.equal(got.t(), sparse.mm(xs, wsp, torch.int32)):
            raise RuntimeError("its result differs from the cuSPARSELt backend's")
        fns["torch_cslt_sparse_mm"] = lambda: torch._cslt_sparse_mm(wc, xt, out_dtype=torch.int32)
    except Exception as e:  # noqa: BLE001 - context only
        log(f"  torch._cslt_sparse_mm not measured: {type(e).__name__}: {e}")
    got: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            got[name].append(host_us_per_call(fn))
    summary["host_us_per_call_M64"] = {name: {"median": statistics.median(v), "min": min(v), "all": v}
                                       for name, v in got.items()}
    log("host time per cached call, M=64 qkv (median / min of %d rounds, target <= 25 us): " % rounds
        + ", ".join(f"{name} {statistics.median(v):.1f} / {min(v):.1f} us" for name, v in got.items()))


def _dense_operands(m, n, k, qd):
    """(x [M, K], w [N, K]) of one dense shape: the search and the head-to-head time the same ones."""
    return random_q(m, k, qd, "cuda", gen(1)), random_q(n, k, qd, "cuda", gen(2))


def _sparse_operands(m, n, k, qd, pat):
    """(slid K, x [M, slid K], 2:4 w [N, slid K]) of one sparse shape, likewise shared."""
    ks = Pattern.parse(pat).slid_k(k)
    return ks, random_q(m, ks, qd, "cuda", gen(3)), random_2to4(n, ks, qd, "cuda", gen(4))


def _time_dense(dense, qd, out_dtype, m, n, k, kw, rec):
    x, wq = _dense_operands(m, n, k, qd)
    w = dense.prepare(wq)
    out = torch.empty(m, n, dtype=out_dtype, device="cuda")
    t1 = statistics.median(time_calls(lambda: dense.mm(x, w, out_dtype, out), **kw))
    rec("cublaslt", "dense", "heuristic#1", t1, k)
    best, best_algo = t1, None
    for i, c in enumerate(dense.candidates(n, k, m, qd, out_dtype, count=32)):
        try:
            t = statistics.median(time_calls(lambda c=c: dense.mm(x, w, out_dtype, out, algo=c["algo"]), **kw))
        except Exception:  # noqa: BLE001 - a candidate that fails is skipped
            continue
        rec("cublaslt", "dense", f"heuristic#{i + 1}", t, k)
        if t < best:
            best, best_algo = t, c["algo"]
    return t1, best, best_algo


def _alpha(n: int, alpha: bool):
    """The per-channel weight scale the INT8 -> bf16 sparse layers pass as cuSPARSELt's alpha vector."""
    return (torch.rand(n, generator=gen(5), device="cuda") * 0.01 + 1e-3) if alpha else None


def _time_sparse(sparse, qd, out_dtype, m, n, k, pat, kw, rec, split_k: bool, alpha: bool = False):
    ks, x, ws = _sparse_operands(m, n, k, qd, pat)
    w = sparse.prepare(ws)
    out = torch.empty(m, n, dtype=out_dtype, device="cuda")
    al = _alpha(n, alpha)
    max_id = sparse.max_config_id(n, ks, m, qd, out_dtype)
    times = {}
    for a in range(max_id):
        cfg = SparseConfig(a)
        try:
            t = statistics.median(time_calls(lambda cfg=cfg: sparse.mm(x, w, out_dtype, out, alpha=al, config=cfg),
                                             **kw))
        except Exception:  # noqa: BLE001 - a config the library refuses is skipped
            continue
        times[cfg] = t
        rec("cusparselt", pat, cfg.label(), t, ks)
    if not times:
        raise RuntimeError(f"none of {max_id} config ids ran")
    best_cfg = min(times, key=times.get)
    best = times[best_cfg]
    best_sk = best
    if split_k:
        for base in sorted(times, key=times.get)[:3]:
            for sk in (-1, 2, 4, 8):
                for mode in (1, 2):
                    cfg = SparseConfig(base.alg_id, sk, mode)
                    try:
                        t = statistics.median(time_calls(
                            lambda cfg=cfg: sparse.mm(x, w, out_dtype, out, alpha=al, config=cfg), **kw))
                    except Exception:  # noqa: BLE001
                        continue
                    rec("cusparselt", pat, cfg.label(), t, ks, "split-k")
                    best_sk = min(best_sk, t)
    return best, best_sk, best_cfg


def head_to_head(dense, sparse, tuned, qd, out_dtype, m, n, k, winners, rounds, kw, rec, sparse_out=None,
                 alpha: bool = False):
    """The plain search's winners against the tuning DB's choices (``tuned``: backends reading search/),
    on the very operands the search timed, re-timed in ``rounds`` interleaved rounds so that drift and
    the search's selection bias (it keeps the minimum of noisy timings) hit neither side alone."""
    dense_t, sparse_t = tuned
    x, wq = _dense_operands(m, n, k, qd)
    out = torch.empty(m, n, dtype=out_dtype, device="cuda")
    w, w_t = dense.prepare(wq), dense_t.prepare(wq)
    algo = winners["dense"]
    so = out_dtype if sparse_out is None else sparse_out
    out_s = out if so == out_dtype else torch.empty(m, n, dtype=so, device="cuda")
    al = _alpha(n, alpha)
    fns = {("dense", "plain"): lambda: dense.mm(x, w, out_dtype, out, algo=algo),
           ("dense", "tuned"): lambda: dense_t.mm(x, w_t, out_dtype, out)}
    src = {"dense": dense_t.plan_info(w_t, m, out_dtype)["source"]}
    for pat in PATTERNS:
        if pat not in winners:
            continue
        _, xs, ws = _sparse_operands(m, n, k, qd, pat)
        wsp, wsp_t = sparse.prepare(ws), sparse_t.prepare(ws)
        cfg = winners[pat]
        fns[(pat, "plain")] = lambda xs=xs, wsp=wsp, cfg=cfg: sparse.mm(xs, wsp, so, out_s, alpha=al, config=cfg)
        fns[(pat, "tuned")] = lambda xs=xs, wsp_t=wsp_t: sparse_t.mm(xs, wsp_t, so, out_s, alpha=al)
        info = sparse_t.plan_info(wsp_t, m, so, alpha_vector=alpha)
        src[pat] = f"{info['source']} {info['config'].label()} (plain: {cfg.label()})"
    times: dict = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            times[key].append(statistics.median(time_calls(fn, **kw)))
    for (what, side), ts in times.items():
        rec("cublaslt" if what == "dense" else "cusparselt", "dense" if what == "dense" else what,
            f"{side}: {src[what]}", statistics.median(ts), k if what == "dense" else Pattern.parse(what).slid_k(k),
            f"head-to-head {side}, {rounds} rounds, spread {(max(ts) - min(ts)) / statistics.median(ts):.3f}")
    return {key: statistics.median(ts) for key, ts in times.items()}


# (name, quantized dtype, dense output, sparse output, sparse alpha vector): view (a)'s same-output pairs,
# and the GEMM part of view (b) for INT8 (dense int32, sparse bf16 with the weight scale as alpha)
VIEW_A = (("INT8->i32", "int8", torch.int32, torch.int32, False), ("FP8->bf16", "fp8", torch.bfloat16,
                                                                    torch.bfloat16, False))
GEMM_PART = (("INT8 i32|bf16a", "int8", torch.int32, torch.bfloat16, True),)


def speed(dense, sparse, shapes, ms, repeat, rows, deadline, tuned=None, rounds=5, cases=VIEW_A):
    from slidesparse.gemm.plan_cache import dtype_name

    table = {}
    kw = {"warmup": 3, "repeat": repeat}
    for case, qd, out_dtype, sparse_out, alpha in cases:
        for m in ms:
            sums: dict = {}
            for lin, (n, k) in shapes.items():
                def rec(backend, pattern, config, us, kk, note="", lin=lin, n=n, m=m, qd=qd, out_dtype=out_dtype,
                        sparse_out=sparse_out, alpha=alpha):
                    o = out_dtype if backend == "cublaslt" else sparse_out
                    rows.append({"qdtype": qd, "out": dtype_name(o) + ("+alpha" if alpha and o != out_dtype else ""),
                                 "M": m, "linear": lin, "N": n, "K": kk,
                                 "backend": backend, "pattern": pattern, "config": config, "us": round(us, 3),
                                 "note": note})
                winners = {}
                try:
                    t1, best, winners["dense"] = _time_dense(dense, qd, out_dtype, m, n, k, kw, rec)
                    sums["dense_top1"] = sums.get("dense_top1", 0.0) + t1
                    sums["dense_best32"] = sums.get("dense_best32", 0.0) + best
                except Exception as e:  # noqa: BLE001 - report and go on
                    log(f"  FAIL dense {qd} M={m} {lin}: {type(e).__name__}: {e}")
                for pat in PATTERNS:
                    try:
                        sk = m <= 64 and time.perf_counter() < deadline
                        best, best_sk, winners[pat] = _time_sparse(sparse, qd, sparse_out, m, n, k, pat, kw, rec, sk,
                                                                   alpha)
                        sums[pat] = sums.get(pat, 0.0) + best
                        if sk:
                            sums[pat + "+sk"] = sums.get(pat + "+sk", 0.0) + best_sk
                    except Exception as e:  # noqa: BLE001
                        log(f"  FAIL sparse {qd} M={m} {lin} {pat}: {type(e).__name__}: {e}")
                if tuned is not None and "dense" in winners:
                    try:
                        h2h = head_to_head(dense, sparse, tuned, qd, out_dtype, m, n, k, winners, rounds, kw, rec,
                                           sparse_out, alpha)
                        for (what, side), t in h2h.items():
                            sums[f"h2h:{what}:{side}"] = sums.get(f"h2h:{what}:{side}", 0.0) + t
                    except Exception as e:  # noqa: BLE001
                        log(f"  FAIL head-to-head {qd} M={m} {lin}: {type(e).__name__}: {e}")
                torch.cuda.empty_cache()
            table[(case, m)] = sums
            log(f"  timed {case} M={m}")
    return table


def print_table(table, shapes):
    print()
    print("Sum of the four linears (us, median per call) and speedup over the best dense (ideal in brackets)")
    hdr = f"{'dtype':<15}{'M':>6}{'dense#1':>10}{'dense32':>10}"
    for pat in PATTERNS:
        hdr += f"{Pattern.parse(pat).paper:>18}"
    print(hdr)
    for (name, m), s in table.items():
        line = f"{name:<15}{m:>6}{s.get('dense_top1', float('nan')):>10.1f}{s.get('dense_best32', float('nan')):>10.1f}"
        base = s.get("dense_best32")
        for pat in PATTERNS:
            p = Pattern.parse(pat)
            t = s.get(pat)
            if t is None or not base:
                line += f"{'n/a':>18}"
            else:
                line += f"{t:>8.1f} {base / t:4.2f}x({p.ideal_speedup:.2f})"
        print(line)
        if any(k.endswith("+sk") for k in s):
            line = f"{'  +split-k':<15}{m:>6}{'':>20}"
            for pat in PATTERNS:
                t = s.get(pat + "+sk")
                line += f"{t:>8.1f} {base / t:4.2f}x      " if t and base else f"{'n/a':>18}"
            print(line)
    if not any(k.startswith("h2h:") for s in table.values() for k in s):
        return
    print()
    print("Head to head, same operands, interleaved rounds: speedup with the plain search's winners on both sides")
    print("vs with the tuning DB's choices on both sides (sum of the four linears, median of the rounds)")
    print(f"{'dtype':<15}{'M':>6}{'side':>7}{'dense us':>10}"
          + "".join(f"{Pattern.parse(p).paper:>9}" for p in PATTERNS))
    for (name, m), s in table.items():
        for side in ("plain", "tuned"):
            base = s.get(f"h2h:dense:{side}")
            if not base:
                continue
            line = f"{name:<15}{m:>6}{side:>7}{base:>10.1f}"
            for pat in PATTERNS:
                t = s.get(f"h2h:{pat}:{side}")
                line += f"{base / t:>9.3f}" if t else f"{'n/a':>9}"
            print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ms", default="64,4096,16384")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=270.0, help="skip the split-K variants past this time")
    ap.add_argument("--search", type=Path, default=None,
                    help="a tuning folder (search/): also re-time its choices head to head with the plain search's")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the head-to-head")
    ap.add_argument("--skip-correctness", action="store_true", help="only the host-time and speed parts")
    ap.add_argument("--gemm-part", action="store_true",
                    help="time view (b)'s INT8 GEMM part (dense int32, sparse bf16 + alpha vector) instead of view (a)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: this script needs a CUDA GPU", file=sys.stderr)
        return 2
    args.outdir.mkdir(parents=True, exist_ok=True)
    from slidesparse.gemm.cublaslt import CublasLtBackend
    from slidesparse.gemm.cusparselt import CusparseLtBackend
    from slidesparse.hw import machine_info

    summary: dict = {"machine": machine_info().to_dict()}
    dense, sparse = CublasLtBackend(), CusparseLtBackend()
    summary["cublaslt"], summary["cusparselt"] = dense.describe(), sparse.describe()
    log(f"GPU {summary['machine']['gpu_full']} cc{summary['machine']['cc']} driver {summary['machine']['driver']}, "
        f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    log(f"cuBLASLt {summary['cublaslt']['version']} {summary['cublaslt'].get('cublaslt_files')}")
    log(f"cuSPARSELt {summary['cusparselt']['version']} (handle {summary['cusparselt']['handle_version']}, "
        f"torch's {summary['cusparselt'].get('torch_cusparselt')}) {summary['cusparselt'].get('cusparselt_files')}"
        + (f"  WARNING: {summary['cusparselt']['warning']}" if "warning" in summary["cusparselt"] else ""))
    shapes = get_model(args.model).linear_shapes()
    if not args.skip_correctness:
        log(f"correctness ({args.model}: {shapes})")
        correctness(dense, sparse, shapes, summary)
    else:
        summary["correctness"] = {}
    tuned = None
    if args.search is not None:
        from slidesparse.gemm.tuning_db import TuningStore

        store = TuningStore(args.search)
        tuned = (CublasLtBackend(tuning=store), CusparseLtBackend(tuning=store))
        log(f"head-to-head against the tuning DB in {store.folder}")
    rows: list[dict] = []
    ms = [int(v) for v in args.ms.split(",")]
    log(f"speed: M = {ms}")
    table = speed(dense, sparse, shapes, ms, args.repeat, rows, T0 + args.budget_s, tuned, args.rounds,
                  GEMM_PART if args.gemm_part else VIEW_A)
    try:  # after the speed part: the host CPU is warm by then
        host_overhead(dense, sparse, shapes, summary)
    except Exception as e:  # noqa: BLE001
        log(f"FAIL host overhead: {type(e).__name__}: {e}")
    with open(args.outdir / "gemm_speed.csv", "w", newline="") as f:
        if rows:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    summary["speed_sums_us"] = {f"{case}_M{m}": s for (case, m), s in table.items()}
    (args.outdir / "gemm_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    ncorrect = sum(v["ok"] for v in summary["correctness"].values())
    print_table(table, shapes)
    host = {k: round(v["median"], 1) for k, v in summary.get("host_us_per_call_M64", {}).items()}
    checked = "skipped" if args.skip_correctness else f"{ncorrect}/{len(summary['correctness'])} passed"
    print(f"\ncorrectness: {checked}; host us/call M=64 (median): {host}; total {time.perf_counter() - T0:.0f}s; "
          f"files in {args.outdir}")
    return 0 if ncorrect == len(summary["correctness"]) else 1


if __name__ == "__main__":
    sys.exit(main())
