#!/usr/bin/env python3
"""Where one decode step's GPU time goes: dense vs sparse engines of one model (run on a GPU).

    PYTHONPATH=src python3 tools/profile_decode.py --model qwen2.5-7b --dtype int8 \\
        --patterns dense,2:4,6:8 --m 64 [--search search] [--steps 10]

Builds each engine (synthetic seeded weights, as ``bench decode``), prefills 16 tokens, runs a few
warm-up decode steps, then profiles ``--steps`` eager decode steps (torch.profiler, CUDA activity;
no CUDA graph, so launch gaps are not in the kernel times) and prints per kernel: calls per step and
GPU microseconds per step, grouped into GEMM / quant (Triton) / dequant (Triton) / other, plus the
sum. Engines are built and freed one at a time.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def group(name: str) -> str:
    n = name.lower()
    if "dequant" in n:
        return "dequant"
    if "quant_kernel" in n:
        return "quant"
    if any(s in n for s in ("gemm", "xmma", "cutlass", "sm90_", "sparse", "matmul", "spmma")):
        return "gemm"
    if any(s in n for s in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--dtype", default="int8", choices=("int8", "fp8"))
    ap.add_argument("--patterns", default="dense,2:4,6:8", help="comma list; 'dense' = the cuBLASLt baseline")
    ap.add_argument("--m", type=int, default=64, help="decode batch")
    ap.add_argument("--search", default="search", help="tuning DB root (GEMM algorithms, kernel configs)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=12, help="kernels listed per engine")
    args = ap.parse_args()

    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from slidesparse.engine import EngineSpec, build_engine  # noqa: PLC0415
    from slidesparse.gemm import make_backend  # noqa: PLC0415
    from slidesparse.kernels import TritonOps  # noqa: PLC0415
    from slidesparse.models import get_model  # noqa: PLC0415
    from slidesparse.pattern import Pattern  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU", file=sys.stderr)
        return 2
    cfg = get_model(args.model)
    totals = {}
    for pat in [p.strip() for p in args.patterns.split(",") if p.strip()]:
        p = None if pat == "dense" else Pattern.parse(pat)
        backend = make_backend("cusparselt" if p else "cublaslt", search=args.search)
        eng = build_engine(cfg, EngineSpec(args.dtype, p, sparse=True), backend, TritonOps(search_dir=args.search),
                           device="cuda", dtype=torch.bfloat16, seed=0)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            eng.setup_cache(args.m, 16 + 5 + args.steps + 1)
            eng.prefill(torch.randint(0, cfg.vocab, (args.m, 16), generator=gen).cuda())
            tok = torch.randint(0, cfg.vocab, (args.m, 1), generator=gen).cuda()
            pos = torch.tensor([16], device="cuda", dtype=torch.int64)
            for _ in range(5):
                eng.decode_step(tok, pos)
                pos.add_(1)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.steps):
                    eng.decode_step(tok, pos)
                    pos.add_(1)
                torch.cuda.synchronize()
        per = []
        for ev in prof.key_averages():
            t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
            if t > 0 and ev.count > 0:
                per.append((t / args.steps, ev.count / args.steps, ev.key))
        per.sort(reverse=True)
        groups = defaultdict(float)
        for t, _, name in per:
            groups[group(name)] += t
        total = sum(groups.values())
        totals[pat] = (total, dict(groups))
        label = f"{args.model} {args.dtype.upper()} {pat} M={args.m}"
        print(f"\n{label}: {total:.1f} us of kernels per decode step "
              f"({', '.join(f'{g} {v:.1f}' for g, v in sorted(groups.items(), key=lambda kv: -kv[1]))})")
        for t, c, name in per[:args.top]:
            print(f"  {t:9.1f} us  {c:6.1f}x  [{group(name)}] {name[:110]}")
        del eng, backend
        torch.cuda.empty_cache()
    if "dense" in totals:
        base = totals["dense"][0]
        print("\nkernel time per step vs dense: " + ", ".join(f"{k} {v[0] / base:.3f}" for k, v in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
