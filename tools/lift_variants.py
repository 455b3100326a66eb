#!/usr/bin/env python3
"""Lifted quant kernels on a GPU: the default launch config against pair-tile configs (BLOCK_G).

    PYTHONPATH=src python3 tools/lift_variants.py OUT_DIR [--cases silu:18944:2_8:int8,...] [--m 4096,16384]
                                                  [--threads 8] [--reps 30]

For each case (kernel, K or I, pattern, quantized dtype) and M: times the default config
(``configs.default_config``), the default without pair tiles ('no-pairs'), every pair-tile
candidate (``tune.pair_candidates``) and a device-to-device copy of the same bytes, in one
process on rotated fresh random inputs (``kernels.timing``); each
candidate's output must equal the default's bit for bit, or the candidate is reported as a mismatch
and not timed. Kernels are compiled first in a thread pool (``--threads``). Prints a table (% of copy
bandwidth; best candidate) and writes OUT_DIR/lift_variants.csv. Default cases: the lifted rows the
built-in models run (SiLU at I = 8192 / 13824 / 18944, RMSNorm at K = 2048 / 3072 / 3584 / 5120, plain
quant at K = 3072 / 8192), 6:8 and 8:10, int8.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from slidesparse.bench.quant import quant_bytes  # noqa: E402
from slidesparse.kernels import launch  # noqa: E402
from slidesparse.kernels import triton_kernels as tk  # noqa: E402
from slidesparse.kernels.configs import default_config  # noqa: E402
from slidesparse.kernels.timing import copy_time_us, rotation_sets, time_us  # noqa: E402
from slidesparse.kernels.tune import pair_candidates  # noqa: E402
from slidesparse.pattern import Pattern  # noqa: E402
from slidesparse.quant import torch_qdtype  # noqa: E402

KERNELS = {"quant": ("quant", tk.PLAIN), "rms": ("rmsnorm_quant", tk.RMSNORM), "silu": ("silu_mul_quant", tk.SILU_MUL)}
DEFAULT_CASES = ([f"silu:{i}:{p}:int8" for i in (8192, 13824, 18944) for p in ("2_8", "2_10")]
                 + [f"rms:{k}:{p}:int8" for k in (2048, 3072, 3584, 5120) for p in ("2_8", "2_10")]
                 + [f"quant:{k}:{p}:int8" for k in (3072, 8192) for p in ("2_8", "2_10")])


def make_case(kind: str, K: int, pattern: Pattern, qd: str, M: int, gen):
    kernel, producer = KERNELS[kind]
    cols = 2 * K if producer == tk.SILU_MUL else K
    nbytes = quant_bytes(kernel, K, M, pattern)
    n = rotation_sets(nbytes)
    xs = [(torch.randn(M, cols, device="cuda", generator=gen) + 0.01).to(torch.bfloat16) for _ in range(n)]
    w = (torch.rand(K, device="cuda", generator=gen) + 0.5).to(torch.bfloat16)
    kout = launch.out_k(K, pattern)
    outs = [(torch.empty(launch.m_pad(M), kout, dtype=torch_qdtype(qd), device="cuda"),
             torch.empty(launch.m_pad(M), dtype=torch.float32, device="cuda")) for _ in range(n)]
    kw = {"producer": producer}
    if producer == tk.RMSNORM:
        kw.update(weight=w, eps=1e-6)

    def run(cfg, i):
        return launch.quant(xs[i], qd, pattern, cfg, out=outs[i], **kw)

    return run, n, nbytes, outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help="kind:K:pattern:dtype, comma-separated")
    ap.add_argument("--m", default="16384", help="M values, comma-separated")
    ap.add_argument("--threads", type=int, default=8, help="compile threads")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = [c.split(":") for c in args.cases.split(",") if c]
    ms = [int(m) for m in args.m.split(",")]
    gen = torch.Generator(device="cuda").manual_seed(0)

    # compile every (case, config) first, in threads, on a small M (same specialization as the timed M)
    t0 = time.time()
    jobs = []
    for kind, K, pat, qd in cases:
        p = Pattern.parse(pat)
        run, _, _, _ = make_case(kind, int(K), p, qd, 64, gen)
        for cfg in ([default_config(KERNELS[kind][0], int(K), qd, p), default_config(KERNELS[kind][0], int(K), qd, p,
                                                                                 pairs=False)]
                    + pair_candidates(int(K), p)):
            jobs.append((run, cfg))
    with ThreadPoolExecutor(args.threads) as ex:
        errs = list(ex.map(lambda j: _try(lambda: j[0](j[1], 0)), jobs))
    torch.cuda.synchronize()
    print(f"compiled {len(jobs)} variants in {time.time() - t0:.0f}s ({sum(e is not None for e in errs)} failed)",
          flush=True)

    rows = []
    for kind, K, pat, qd in cases:
        K = int(K)
        p = Pattern.parse(pat)
        for M in ms:
            run, n, nbytes, outs = make_case(kind, K, p, qd, M, gen)
            copy = copy_time_us(nbytes, 5, args.reps)
            base = default_config(KERNELS[kind][0], K, qd, p)
            run(base, 0)
            ref = (outs[0][0].view(torch.uint8).clone(), outs[0][1].clone())
            others = default_config(KERNELS[kind][0], K, qd, p, pairs=False)
            for name, cfg in ([("default", base)] + ([("no-pairs", others)] if others != base else [])
                              + [(f"G{c['BLOCK_G']}{'s' if c['SPLIT'] else ''}w{c['num_warps']}", c)
                                 for c in pair_candidates(K, p)]):
                row = {"kind": kind, "K": K, "pattern": pat, "dtype": qd, "M": M, "variant": name, "config": cfg,
                       "copy_us": round(copy, 2)}
                try:
                    outs[0][0].view(torch.uint8).fill_(0x5A)
                    outs[0][1].fill_(float("nan"))
                    run(cfg, 0)
                    torch.cuda.synchronize()
                    same = torch.equal(outs[0][0].view(torch.uint8), ref[0]) and torch.equal(outs[0][1], ref[1])
                    if not same:
                        row["error"] = "output differs from the default config's"
                    else:
                        us = time_us(lambda i, c=cfg: run(c, i), n, 5, args.reps)
                        row.update(us=round(us, 2), pct=round(100 * copy / us, 1))
                except Exception as e:  # noqa: BLE001 - record and go on
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(row)
            del outs
            torch.cuda.empty_cache()
            case_rows = [r for r in rows if (r["kind"], r["K"], r["pattern"], r["dtype"], r["M"]) == (kind, K, pat, qd, M)]
            ok = [r for r in case_rows if "pct" in r]
            best = max((r for r in ok if r["variant"].startswith("G")), key=lambda r: r["pct"], default=None)
            d = next((r for r in ok if r["variant"] == "default"), None)
            bad = [r["variant"] + ": " + r["error"] for r in case_rows if "error" in r]
            o = next((r for r in ok if r["variant"] == "no-pairs"), None)
            print(f"{kind:6}{K:>7} {pat:5}{qd:5}{M:>7}  default {d['pct'] if d else '-':>6}%  "
                  f"no-pairs {o['pct'] if o else '-':>6}%  best pair "
                  f"{best['pct'] if best else '-':>6}% ({best['variant'] if best else '-'})  all: "
                  + " ".join(f"{r['variant']}={r['pct']}" for r in ok if r["variant"].startswith("G"))
                  + (f"  ERRORS {bad}" if bad else ""), flush=True)

    with open(args.out / "lift_variants.csv", "w", newline="") as f:
        keys = ["kind", "K", "pattern", "dtype", "M", "variant", "us", "copy_us", "pct", "config", "error"]
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    print(f"{torch.cuda.get_device_name()}; total {time.time() - t0:.0f}s; rows in {args.out / 'lift_variants.csv'}")
    return 0


def _try(fn):
    try:
        fn()
        return None
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return "failed"


if __name__ == "__main__":
    sys.exit(main())
