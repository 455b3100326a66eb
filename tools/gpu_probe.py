"""Temporary probe: correctness + config sweep on a GPU (to be replaced by tools/gpu_kernels.py)."""
import itertools
import json
import sys
import time
import traceback

import torch

from slidesparse.kernels import launch as ln
from slidesparse.kernels import reference as R
from slidesparse.kernels import triton_kernels as tk
from slidesparse.kernels.timing import copy_time_us, rotation_sets, time_us
from slidesparse.ops import ReferenceOps
from slidesparse.pattern import Pattern

dev = torch.device("cuda")
ref = ReferenceOps()
t0 = time.time()
OUT = sys.argv[1]
LOG = open(OUT + "/sweep.jsonl", "w")


def u8(t):
    return t.view(torch.uint8) if t.dtype.itemsize == 1 else t


def check():
    bad = 0
    for K, M, qd, pat, xdt in itertools.product([3584, 200], [17, 300], ["int8", "fp8"], [None, "2_8"],
                                                [torch.bfloat16, torch.float32, torch.float16]):
        x = (torch.randn(M, K, device=dev) * 3).to(xdt)
        x[1] = 0
        x[2] *= 1e-30 if xdt != torch.float16 else 1e-3
        p = None if pat is None else Pattern.parse(pat)
        for name, prod in (("plain", tk.PLAIN), ("rms", tk.RMSNORM), ("silu", tk.SILU_MUL)):
            inp = torch.cat([x, x.flip(1)], 1) if prod == tk.SILU_MUL else x
            w = (torch.rand(K, device=dev) + 0.5).to(xdt)
            for cfg in (dict(BLOCK_K=4096, BLOCK_W=512, ROWS=1, num_warps=8),
                        dict(BLOCK_K=256, BLOCK_W=64, ROWS=2, num_warps=4)):
                q, s = ln.quant(inp, qd, pat, cfg, producer=prod, weight=w, eps=1e-6)
                if prod == tk.PLAIN:
                    qr, sr = ref.quant(x, qd, p)
                elif prod == tk.RMSNORM:
                    qr, sr = R.rmsnorm_quant_ref(x, w, 1e-6, qd, p)
                else:
                    qr, sr = R.silu_mul_quant_ref(inp, qd, p)
                ok = torch.equal(u8(q[:M]), u8(qr)) and torch.equal(s[:M], sr)
                if not ok:
                    bad += 1
                    print("MISMATCH", name, K, M, qd, pat, xdt, cfg["BLOCK_K"], "q", (u8(q[:M]) != u8(qr)).sum().item(),
                          "s", (s[:M] != sr).sum().item())
    print("checks done, bad =", bad, f"{time.time()-t0:.0f}s", flush=True)


_copy = {}


def copy_us(nb):
    key = round(nb / 2**20)
    if key not in _copy:
        _copy[key] = copy_time_us(nb, 5, 30)
    return _copy[key]


def bench(K, M, qd, pat, cfg, prod=tk.PLAIN):
    p = None if pat is None else Pattern.parse(pat)
    kout = ln.out_k(K, p)
    cols = 2 * K if prod == tk.SILU_MUL else K
    inb = M * cols * 2 + (K * 2 if prod == tk.RMSNORM else 0)
    outb = ln.m_pad(M) * (kout + 4)
    n = rotation_sets(inb + outb)
    xs = [torch.randn(M, cols, device=dev).to(torch.bfloat16) for _ in range(n)]
    w = (torch.rand(K, device=dev) + 0.5).to(torch.bfloat16)
    outs = [(torch.empty(ln.m_pad(M), kout, device=dev, dtype=torch.int8 if qd == "int8" else torch.float8_e4m3fn),
             torch.empty(ln.m_pad(M), device=dev)) for _ in range(n)]
    t = time_us(lambda i: ln.quant(xs[i], qd, pat, cfg, producer=prod, weight=w, eps=1e-6, out=outs[i]), n, 5, 30)
    del xs, outs
    c = copy_us(inb + outb)
    return t, c / t * 100


def sweep(kind, Ks, pats, prod, Ms=(16384,)):
    for K in Ks:
        np2 = 1 << (K - 1).bit_length()
        for M in Ms:
            for pat in pats:
                cands = []
                bks = sorted({b for b in (np2, 4096, 8192, 16384, 32768) if b <= max(np2, 4096) and b >= 2048})
                for bk in bks:
                    for nw in ((8, 16) if bk >= 32768 else (4, 8)):
                        if bk // (32 * nw) > 128 or bk // (32 * nw) < 4:
                            continue
                        for bw in ((256, 1024) if pat else (256,)):
                            cands.append(dict(BLOCK_K=bk, BLOCK_W=bw, ROWS=1, num_warps=nw))
                if K <= 3584 and prod == tk.PLAIN:
                    cands.append(dict(BLOCK_K=np2, BLOCK_W=256, ROWS=2, num_warps=4))
                res = []
                for cfg in cands:
                    try:
                        t, pct = bench(K, M, "int8", pat, cfg, prod)
                    except Exception as e:  # noqa: BLE001
                        print("FAIL", kind, K, M, pat, cfg, repr(e)[:300], flush=True)
                        continue
                    res.append((t, pct, cfg))
                    LOG.write(json.dumps(dict(kind=kind, K=K, M=M, pat=pat, cfg=cfg, us=t, pct=pct)) + "\n")
                    LOG.flush()
                res.sort(key=lambda r: r[0])
                top = "; ".join(f"{r[0]:.0f}us {r[1]:.0f}% bk{r[2]['BLOCK_K']} bw{r[2]['BLOCK_W']} nw{r[2]['num_warps']}"
                                f"{' R' + str(r[2]['ROWS']) if r[2]['ROWS'] > 1 else ''}" for r in res[:3])
                print(f"{kind} K={K} M={M} {pat}: {top}  | worst {res[-1][1]:.0f}%  ({time.time()-t0:.0f}s)", flush=True)


def deq():
    for N in (4608, 37888):
        M = 16384
        n = rotation_sets(M * N * 6)
        accs = [torch.randint(-2**20, 2**20, (M, N), device=dev, dtype=torch.int32) for _ in range(n)]
        outs = [torch.empty(M, N, device=dev, dtype=torch.bfloat16) for _ in range(n)]
        sa = torch.rand(M, device=dev)
        sb = torch.rand(N, device=dev)
        b = torch.rand(N, device=dev)
        c = copy_us(M * N * 6)
        for bm, bn, nw in ((16, 256, 4), (32, 256, 8), (8, 1024, 4), (16, 512, 8), (32, 128, 4), (4, 1024, 4)):
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=nw)
            t = time_us(lambda i: ln.dequant(accs[i], sa, sb, b, torch.bfloat16, cfg, out=outs[i]), n, 5, 30)
            print(f"dequant N={N} M={M} {cfg}: {t:.1f}us {c / t * 100:.0f}%", flush=True)
        del accs, outs


def copies():
    for mb in (64, 1024):
        nb = mb * 2**20
        t = copy_time_us(nb, 5, 30)
        print(f"copy {mb} MB moved: {t:.1f}us {nb / t / 1e6:.0f} GB/s", flush=True)


steps = [check, copies,
         lambda: sweep("quant", [2048, 3584, 8192, 18944], [None, "2_8"], tk.PLAIN),
         lambda: sweep("rms", [3584], [None, "2_8"], tk.RMSNORM),
         lambda: sweep("silu", [18944], [None, "2_8"], tk.SILU_MUL),
         lambda: sweep("quant", [13824], ["2_10"], tk.PLAIN),
         deq]
for f in steps:
    try:
        f()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    sys.stdout.flush()
print(f"total {time.time()-t0:.0f}s")
