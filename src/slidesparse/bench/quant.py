"""The quant-kernel benchmark: each Triton activation kernel against a device-to-device copy of the
same bytes, on the GPU.

Per case (kernel, dtype, pattern, K or N, M): median GPU time (CUDA events, warm-up, inputs rotated
over enough sets to defeat L2, fresh random non-zero data; the calls are queued behind a spin kernel
so the host's launch time stays out of it; it is reported on its own as ``host_us``), bytes moved
(read + written), GB/s, the copy's time and GB/s for the same byte count measured in the same run, the ratio kernel/copy
bandwidth, and for a lifted quant the lift overhead time(quant+lift)/time(quant) next to the byte
ratio bytes(quant+lift)/bytes(quant) (lifting is "free" when the two ratios match).

Rows go to ``<results>/quant/<hwtag>/quant_<dtype>.{csv,json}`` (hwtag with the dtype part).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..pattern import Pattern
from ..quant import parse_qdtype, torch_qdtype

KERNEL_NAMES = ("quant", "rmsnorm_quant", "silu_mul_quant", "dequant")
DEFAULT_M = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
ACC_FOR = {"int8": torch.int32, "fp8": torch.bfloat16}  # what the GEMM hands to dequant


@dataclass(frozen=True)
class Shapes:
    """Which sizes each kernel runs at: quant at every K, rmsnorm at the hidden sizes, silu at the
    intermediate sizes (K = I, input [M, 2I]), dequant at every N (out features)."""

    quant_k: tuple[int, ...]
    rms_k: tuple[int, ...]
    silu_i: tuple[int, ...]
    dequant_n: tuple[int, ...]


def model_shapes(models: Iterable[str]) -> Shapes:
    from ..models import get_model  # noqa: PLC0415

    qk, rk, si, dn = set(), set(), set(), set()
    for name in models:
        cfg = get_model(name)
        shapes = cfg.linear_shapes()
        for n, k in shapes.values():
            qk.add(k)
            dn.add(n)
        rk.add(shapes["qkv"][1])
        si.add(shapes["down"][1])
    return Shapes(tuple(sorted(qk)), tuple(sorted(rk)), tuple(sorted(si)), tuple(sorted(dn)))


def quant_bytes(kernel: str, K: int, M: int, pattern: Pattern | None, x_itemsize: int = 2) -> int:
    """Bytes a quant kernel must move: its input once, q [M_pad, gemm_k] and scale [M_pad] once."""
    from ..kernels.launch import m_pad, out_k  # noqa: PLC0415

    cols = 2 * K if kernel == "silu_mul_quant" else K
    read = M * cols * x_itemsize + (K * x_itemsize if kernel == "rmsnorm_quant" else 0)
    return read + m_pad(M) * (out_k(K, pattern) + 4)


def dequant_bytes(N: int, M: int, acc: torch.dtype, out_itemsize: int = 2) -> int:
    return M * N * (acc.itemsize + out_itemsize) + M * 4 + N * 8  # + scale_a, scale_b, bias


def _case_quant(ops, kernel: str, K: int, M: int, qd: str, pattern: Pattern | None, device, gen):
    from ..kernels.launch import m_pad, out_k  # noqa: PLC0415
    from ..kernels.timing import rotation_sets  # noqa: PLC0415

    cols = 2 * K if kernel == "silu_mul_quant" else K
    nbytes = quant_bytes(kernel, K, M, pattern)
    n = rotation_sets(nbytes, device)
    xs = [(torch.randn(M, cols, device=device, generator=gen) + 0.01).to(torch.bfloat16) for _ in range(n)]
    w = (torch.rand(K, device=device, generator=gen) + 0.5).to(torch.bfloat16)
    outs = [(torch.empty(m_pad(M), out_k(K, pattern), dtype=torch_qdtype(qd), device=device),
             torch.empty(m_pad(M), dtype=torch.float32, device=device)) for _ in range(n)]
    if kernel == "quant":
        fn = lambda i: ops.quant(xs[i], qd, pattern, out=outs[i])  # noqa: E731
    elif kernel == "rmsnorm_quant":
        fn = lambda i: ops.rmsnorm_quant(xs[i], w, 1e-6, qd, pattern, out=outs[i])  # noqa: E731
    else:
        fn = lambda i: ops.silu_mul_quant(xs[i], qd, pattern, out=outs[i])  # noqa: E731
    return fn, n, nbytes


def _case_dequant(ops, N: int, M: int, acc_dt: torch.dtype, device, gen):
    from ..kernels.timing import rotation_sets  # noqa: PLC0415

    nbytes = dequant_bytes(N, M, acc_dt)
    n = rotation_sets(nbytes, device)
    if acc_dt == torch.int32:
        accs = [torch.randint(-2**20, 2**20, (M, N), device=device, dtype=torch.int32, generator=gen)
                for _ in range(n)]
    else:
        accs = [(torch.randn(M, N, device=device, generator=gen) * 100).to(acc_dt) for _ in range(n)]
    sa = torch.rand(M, device=device, generator=gen) * 1e-2 + 1e-4
    sb = torch.rand(N, device=device, generator=gen) * 1e-2 + 1e-4
    bias = torch.randn(N, device=device, generator=gen)
    outs = [torch.empty(M, N, dtype=torch.bfloat16, device=device) for _ in range(n)]
    return (lambda i: ops.dequant(accs[i], sa, sb, bias, torch.bfloat16, out=outs[i])), n, nbytes


def run_quant_bench(*, shapes: Shapes, m_list: Sequence[int], qdtypes: Sequence[str],
                    patterns: Sequence[Pattern | None], kernels: Sequence[str] = ("quant", "dequant"),
                    warmup: int = 5, repeat: int = 50, search_dir: str | Path | None = "search",
                    seed: int = 0, on_case: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every case; returns result rows (see module docstring). Needs CUDA."""
    from ..hw import machine_info  # noqa: PLC0415
    from ..kernels.ops import TritonOps  # noqa: PLC0415
    from ..kernels.timing import copy_time_us, require_cuda, time_gpu_host  # noqa: PLC0415

    device = require_cuda()
    for k in kernels:
        if k not in KERNEL_NAMES:
            raise ValueError(f"unknown kernel {k!r}; known: {', '.join(KERNEL_NAMES)}")
    if not m_list or min(m_list) < 1:
        raise ValueError(f"M values must be positive, got {list(m_list)}")
    ops = TritonOps(search_dir=search_dir)
    info = machine_info()
    gen = torch.Generator(device=device).manual_seed(seed)
    copy_cache: dict[int, float] = {}
    rows: list[dict] = []

    def copy_us(nbytes: int) -> float:
        if nbytes not in copy_cache:
            copy_cache[nbytes] = copy_time_us(nbytes, warmup, repeat, device)
        return copy_cache[nbytes]

    def record(kernel, qd, pattern, K, N, M, timing, nbytes, cfg, plain_row=None):
        us, host_us = timing
        c = copy_us(nbytes)
        row = {"kernel": kernel, "dtype": qd, "pattern": "dense" if pattern is None else pattern.label,
               "paper": "" if pattern is None else pattern.paper, "K": K, "N": N, "M": M,
               "us": round(us, 3), "host_us": round(host_us, 1), "bytes": nbytes, "gbps": round(nbytes / us / 1e3, 1),
               "copy_us": round(c, 3), "copy_gbps": round(nbytes / c / 1e3, 1),
               "pct_of_copy": round(100.0 * c / us, 1), "lift_ratio": "", "byte_ratio": "",
               "config": json.dumps(cfg, sort_keys=True), "gpu": info.gpu, "hwtag": info.tag(qd)}
        if plain_row is not None:
            row["lift_ratio"] = round(us / plain_row["us"], 3)
            row["byte_ratio"] = round(nbytes / plain_row["bytes"], 3)
        rows.append(row)
        if on_case:
            on_case(f"{kernel} {qd} {row['pattern']} K={K} N={N} M={M}: {us:.1f} us, "
                    f"{row['pct_of_copy']:.0f}% of copy")
        return row

    for qd in (parse_qdtype(d) for d in qdtypes):
        for kernel in kernels:
            if kernel == "dequant":
                acc_dt = ACC_FOR[qd]
                for N in shapes.dequant_n:
                    for M in m_list:
                        fn, n, nbytes = _case_dequant(ops, N, M, acc_dt, device, gen)
                        timing = time_gpu_host(fn, n, warmup, repeat)
                        record(kernel, qd, None, "", N, M, timing, nbytes, ops.config("dequant", N, M, acc_dt, None))
                        del fn
                continue
            ks = {"quant": shapes.quant_k, "rmsnorm_quant": shapes.rms_k, "silu_mul_quant": shapes.silu_i}[kernel]
            for K in ks:
                for M in m_list:
                    plain = None
                    for pattern in patterns:
                        fn, n, nbytes = _case_quant(ops, kernel, K, M, qd, pattern, device, gen)
                        cfg = ops.config(kernel, K, M, qd, pattern)
                        timing = time_gpu_host(fn, n, warmup, repeat)
                        row = record(kernel, qd, pattern, K, "", M, timing, nbytes, cfg,
                                     plain if pattern is not None else None)
                        if pattern is None:
                            plain = row
                        del fn
                torch.cuda.empty_cache()
    return rows


def write_rows(rows: Sequence[dict], results: str | Path) -> list[Path]:
    """Merge rows into ``<results>/quant/<hwtag>/quant_<dtype>.{csv,json}``; returns the CSV paths."""
    from .results import append_rows, provenance  # noqa: PLC0415

    prov = provenance()
    by_file: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_file.setdefault((r["hwtag"], r["dtype"]), []).append({**r, **prov})
    paths = []
    for (tag, qd), rs in by_file.items():
        d = Path(results) / "quant" / tag
        csv_path, json_path = d / f"quant_{qd}.csv", d / f"quant_{qd}.json"
        append_rows(csv_path, json_path, rs, key=("kernel", "dtype", "pattern", "K", "N", "M"))
        paths.append(csv_path)
    return paths


TARGET_MIN_M = 4096    # the bandwidth target counts large-M cases only (small M is launch-bound)
TARGET_PCT = 85.0      # % of the copy's bandwidth each kernel should reach
TARGET_LIFT_SLACK = 1.05  # quant+lift time / quant time within this factor of the byte ratio


def target_lines(rows: Sequence[dict], min_m: int = TARGET_MIN_M, pct: float = TARGET_PCT,
                 slack: float = TARGET_LIFT_SLACK) -> list[str]:
    """The bandwidth target, per kernel, over the rows at M >= ``min_m``: how many cases reach ``pct``
    % of copy bandwidth, and how many lift ratios stay within ``slack`` x their byte ratio; then each
    case that misses. Empty when no row has M >= ``min_m``."""
    big = [r for r in rows if int(r["M"]) >= min_m]
    out = []
    for kernel in dict.fromkeys(r["kernel"] for r in big):
        ks = [r for r in big if r["kernel"] == kernel]
        slow = [r for r in ks if float(r["pct_of_copy"]) < pct]
        lifts = [r for r in ks if r["lift_ratio"] != ""]
        over = [r for r in lifts if float(r["lift_ratio"]) > slack * float(r["byte_ratio"])]
        line = f"{kernel}: {len(ks) - len(slow)} of {len(ks)} cases at >= {pct:g}% of copy (M >= {min_m})"
        if lifts:
            line += f"; lift ratio within {slack:g}x the byte ratio: {len(lifts) - len(over)} of {len(lifts)}"
        out.append(line)
        for r in slow:
            out.append(f"  below: {_case(r)} {float(r['pct_of_copy']):.1f}%")
        for r in over:
            out.append(f"  lift over: {_case(r)} {float(r['lift_ratio']):.3f} > "
                       f"{slack * float(r['byte_ratio']):.3f}")
    return out


def _case(r: dict) -> str:
    kn = r["K"] if r["K"] != "" else r["N"]
    return f"{r['dtype']} {r['pattern']} {'K' if r['K'] != '' else 'N'}={kn} M={r['M']}"


def summary_lines(rows: Sequence[dict]) -> list[str]:
    """A short plain-text table: % of copy bandwidth, and lift ratio vs byte ratio."""
    out = [f"{'kernel':<15}{'dtype':<6}{'pattern':<8}{'K/N':>7}{'M':>7}{'us':>10}{'host us':>9}{'GB/s':>8}"
           f"{'copy%':>7}{'lift':>7}{'bytes':>7}"]
    for r in rows:
        kn = r["K"] if r["K"] != "" else r["N"]
        lift = f"{r['lift_ratio']:.2f}" if r["lift_ratio"] != "" else ""
        br = f"{r['byte_ratio']:.2f}" if r["byte_ratio"] != "" else ""
        out.append(f"{r['kernel']:<15}{r['dtype']:<6}{r['pattern']:<8}{kn:>7}{r['M']:>7}{r['us']:>10.1f}"
                   f"{r['host_us']:>9.1f}{r['gbps']:>8.0f}{r['pct_of_copy']:>7.0f}{lift:>7}{br:>7}")
    return out
