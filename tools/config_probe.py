#!/usr/bin/env python3
"""Launch-config probe of the quant kernels on a GPU: the default config against its neighbours.

    PYTHONPATH=src python3 tools/config_probe.py OUT_DIR [--cases kernel:K:pattern:dtype,...] [--m 16384,4096]

For each case and M: the default config ('default'; for FP8 also the INT8 default), the non-pair
default at 4-32 warps with and without a register cap for two programs an SM (MAXNREG, 'rNN'),
persistent SiLU variants, and every pair-tile
candidate (tune.pair_candidates) with a register cap where it allows two programs an SM and as
persistent programs (PERSIST 1, 2 under that cap; RMSNorm also 1-3 with the weight hoisted); each first
checked bit-identical to the default's output, then timed against a copy of the same bytes in the
same process (kernels.timing). Prints the default and the best five per case (% of copy bandwidth)
and writes OUT_DIR/probe.csv. Default cases: the lifted 6:8 rows of the built-in models.

    --configs FILE.json   {"rmsnorm_quant:5120:2_8": [{"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1,
                          "num_warps": 4, "BLOCK_G": 512, "SPLIT": 1, "UNIT": 4, "SHRINK": 1,
                          "PERSIST": 3, "HOIST_W": 1}, ...], ...}

times the default against exactly those configs (validated before the GPU is touched) instead.
"""
import argparse
import csv
import json
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools"))
import torch
import lift_variants
from slidesparse.kernels import launch
from slidesparse.kernels.configs import QUANT_KERNELS, default_config, validate_config
from slidesparse.kernels.timing import copy_time_us, require_cuda, time_us
from slidesparse.kernels.tune import pair_candidates
from slidesparse.pattern import Pattern
from slidesparse.quant import parse_qdtype




def config_name(c: dict) -> str:
    """A short label of a config: pair tiles as G<groups>[s]w<warps>u<unit>[x] (x: SHRINK) [rows<n>] [P<n>[h]]
    [r<cap>], the other kernels as K<BLOCK_K>[s] W<BLOCK_W> w<warps> [scatter] [rows<n>] [P<n>[h]] [r<cap>]."""
    if c.get("BLOCK_G"):
        nm = (f"G{c['BLOCK_G']}{'s' if c.get('SPLIT') else ''}w{c['num_warps']}u{c.get('UNIT', 1)}"
              + ("x" if c.get("SHRINK") else ""))
    else:
        nm = (f"K{c['BLOCK_K']}{'s' if c.get('SPLIT') else ''} W{c['BLOCK_W']} w{c['num_warps']}"
              + (" scatter" if c.get("SCATTER") else ""))
    if c.get("ROWS", 1) != 1:
        nm += f" rows{c['ROWS']}"
    if c.get("PERSIST"):
        nm += f" P{c['PERSIST']}{'h' if c.get('HOIST_W') else ''}"
    return nm + (f" r{c['MAXNREG']}" if c.get("MAXNREG") else "")


def load_configs(path) -> dict:
    """--configs: a JSON object {"kernel:K:pattern": [config, ...]} (pattern 'dense' or a label like
    2_8) -> {(kernel, K, label or None): [(name, config), ...]}; each config validated as a tuned one
    would be (configs.validate_config), so a typo fails here, before the GPU."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path} must hold a non-empty JSON object {{\"kernel:K:pattern\": [config, ...]}}")
    out = {}
    for key, cfgs in data.items():
        parts = key.split(":")
        if len(parts) != 3 or parts[0] not in QUANT_KERNELS or not parts[1].isdigit():
            raise ValueError(f"key {key!r} is not kernel:K:pattern with kernel one of {', '.join(QUANT_KERNELS)}")
        label = None if parts[2] == "dense" else Pattern.parse(parts[2]).label
        if not isinstance(cfgs, list) or not cfgs:
            raise ValueError(f"{key}: want a non-empty list of configs")
        valid = [validate_config(parts[0], c, f"{key}[{i}]") for i, c in enumerate(cfgs)]
        out[(parts[0], int(parts[1]), label)] = [(config_name(c), c) for c in valid]
    return out


def cands(kernel, K, pat, qd, explicit=None):
    """(name, config) pairs to time for one case, the default first (the bit-identity reference);
    with ``explicit`` (a list from ``load_configs``) those configs instead of the built-in neighbours."""
    p = None if pat is None else Pattern.parse(pat)
    out = [("default", default_config(kernel, K, qd, p))]
    if explicit is not None:
        base = validate_config(kernel, out[0][1])
        return out + [(n, c) for n, c in explicit if c != base]
    if qd == "fp8" and default_config(kernel, K, "int8", p) != out[0][1]:
        out.append(("int8-default", default_config(kernel, K, "int8", p)))

    def add(name, cfg):
        if all(cfg != c for _, c in out):
            out.append((name, cfg))

    base = {k: v for k, v in default_config(kernel, K, qd, p, pairs=False).items() if k not in ("PERSIST", "HOIST_W")}
    for nw in (4, 8, 16, 32):
        b = {**base, "num_warps": nw}
        add(f"base w{nw}", b)
        if nw < 32 and 65536 // (64 * nw) <= 255:  # a register cap for two programs an SM
            add(f"base w{nw} r{65536 // (64 * nw)}", {**b, "MAXNREG": 65536 // (64 * nw)})
    if kernel == "silu_mul_quant" and (p is None or launch.tiling(K, launch.out_k(K, p), p.window, base)[4]):
        add("persist1 w16", {**base, "num_warps": 16, "PERSIST": 1})
        add("persist2 w16 r64", {**base, "num_warps": 16, "PERSIST": 2, "MAXNREG": 64})
        add("persist1 w32", {**base, "num_warps": 32, "PERSIST": 1})
    if p is not None and p.window in (6, 8, 10):
        for c in pair_candidates(K, p):
            cap = 65536 // (64 * c["num_warps"])
            # with a register cap for two programs an SM; as persistent programs (the next row
            # tile's loads in flight): one an SM, or two under the cap
            variants = [c] + ([{**c, "MAXNREG": cap}] if 8 <= c["num_warps"] < 32 else []) + [
                {**c, "PERSIST": 1}, {**c, "PERSIST": 2, "MAXNREG": cap if cap < 255 else 0}]
            if kernel == "rmsnorm_quant":  # the weight loaded once a program, 1-3 programs an SM
                variants += [{**c, "PERSIST": pp, "HOIST_W": 1} for pp in (1, 2, 3)]
            for v in variants:
                add(config_name(v), v)
    return out


def make_case(kernel, K, pat, qd, M, gen):
    """lift_variants.make_case for a kernel name and a pattern label (None: dense)."""
    kind = {"quant": "quant", "rmsnorm_quant": "rms", "silu_mul_quant": "silu"}[kernel]
    return lift_variants.make_case(kind, K, None if pat is None else Pattern.parse(pat), qd, M, gen)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", help="kernel:K:pattern:dtype, comma-separated (pattern 'dense' or a label like 2_8)",
                    default=",".join(
        [f"silu_mul_quant:{i}:2_8:{q}" for q in ("int8", "fp8") for i in (8192, 13824, 18944)]
        + [f"rmsnorm_quant:{k}:2_8:{q}" for q in ("int8", "fp8") for k in (2048, 3072, 3584, 5120)]
        + [f"quant:{k}:2_8:{q}" for q in ("int8", "fp8") for k in (2048, 3072, 3584, 5120, 8192)]))
    ap.add_argument("--m", default="16384,4096", help="M values, comma-separated")
    ap.add_argument("--reps", type=int, default=30, help="timed runs a config (median)")
    ap.add_argument("--configs", type=Path, help="JSON {\"kernel:K:pattern\": [config, ...]}: time the default and "
                    "these configs for each case of that kernel, K and pattern (any dtype), not the built-in "
                    "neighbours; every case needs an entry")
    a = ap.parse_args()
    try:
        cases = [(k, int(K), None if p == "dense" else Pattern.parse(p).label, q)
                 for k, K, p, q in (c.split(":") for c in a.cases.split(","))]
        for k, K, p, q in cases:
            if k not in QUANT_KERNELS:
                raise ValueError(f"kernel {k!r} is not one of {', '.join(QUANT_KERNELS)}")
            parse_qdtype(q)  # names the dtype that is wrong
    except ValueError as e:
        ap.error(f"--cases: {e} (want kernel:K:pattern:dtype, e.g. silu_mul_quant:13824:2_8:int8)")
    explicit = None
    if a.configs is not None:
        try:
            explicit = load_configs(a.configs)
        except ValueError as e:
            ap.error(f"--configs: {e}")
        missing = sorted({f"{k}:{K}:{p or 'dense'}" for k, K, p, _ in cases} - {f"{k}:{K}:{p or 'dense'}"
                                                                               for k, K, p in explicit})
        if missing:
            ap.error(f"--configs has no entry for {', '.join(missing)}")
    require_cuda()
    a.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    t0 = time.time()
    jobs = []
    for k, K, p, q in cases:
        run, *_ = make_case(k, K, p, q, 64, gen)
        jobs += [(run, cfg) for _, cfg in cands(k, K, p, q, explicit and explicit[(k, K, p)])]
    def go(j):
        try:
            j[0](j[1], 0)
        except Exception:
            traceback.print_exc()
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(go, jobs))
    torch.cuda.synchronize()
    print(f"compiled {len(jobs)} in {time.time() - t0:.0f}s", flush=True)
    rows = []
    for k, K, p, q in cases:
        for M in [int(m) for m in a.m.split(",")]:
            run, n, nbytes, outs = make_case(k, K, p, q, M, gen)
            copy = copy_time_us(nbytes, 5, a.reps)
            res = []
            ref = None
            for name, cfg in cands(k, K, p, q, explicit and explicit[(k, K, p)]):
                r = {"kernel": k, "K": K, "pattern": p or "dense", "dtype": q, "M": M, "variant": name, "config": cfg}
                try:
                    outs[0][0].view(torch.uint8).fill_(0x5A)
                    outs[0][1].fill_(float("nan"))
                    run(cfg, 0)
                    torch.cuda.synchronize()
                    got = (outs[0][0].view(torch.uint8).clone(), outs[0][1].clone())
                    if ref is None:
                        ref = got
                    elif not (torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])):
                        r["error"] = "MISMATCH vs default"
                    if "error" not in r:
                        us = time_us(lambda i, c=cfg: run(c, i), n, 5, a.reps)
                        r.update(us=round(us, 2), pct=round(100 * copy / us, 1))
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {str(e)[:150]}"
                rows.append(r)
                res.append(r)
            del outs
            torch.cuda.empty_cache()
            ok = sorted((r for r in res if "pct" in r), key=lambda r: -r["pct"])
            get = {r["variant"]: r.get("pct", r.get("error")) for r in res}
            print(f"{k[:4]} {K:>6} {p or 'dense':5} {q:4} {M:>6} default {get['default']} | "
                  + " ".join(f"{r['variant']}={r['pct']}" for r in ok[:5])
                  + "".join(f" !{r['variant']}:{r['error']}" for r in res if "error" in r), flush=True)
    with open(a.out / "probe.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["kernel", "K", "pattern", "dtype", "M", "variant", "us", "pct", "config",
                                          "error"])
        w.writeheader()
        w.writerows(rows)
    print(torch.cuda.get_device_name(), f"{time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
