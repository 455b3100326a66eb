"""Tuning the Triton kernels' launch configs on the GPU: time candidates, keep the fastest per
(K, M bucket), save them to ``<search_dir>/<hwtag>/kernels.json`` (see ``configs``).

Every candidate's output is compared bit for bit with the default config's output on the same
input before its time counts (the kernels are exact, so any difference is a bug, not noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..pattern import Pattern
from ..quant import torch_qdtype
from . import launch
from . import triton_kernels as tk
from .configs import (
    DEFAULT_SEARCH_DIR, FILENAME, KERNELS, QUANT_KERNELS, default_config, entry_key, norm_dtype, pair_groups,
    save_entries, validate_config,
)
from .timing import require_cuda, rotation_sets, time_us

_PRODUCER = {"quant": tk.PLAIN, "rmsnorm_quant": tk.RMSNORM, "silu_mul_quant": tk.SILU_MUL}
_ACC_TORCH = {"int32": torch.int32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def candidate_configs(kernel: str, K: int, pattern=None) -> list[dict]:
    """A small grid around what the defaults pick (the default itself always included)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    out = [default_config(kernel, K, None if kernel == "dequant" else "int8", pattern)]
    if kernel != "dequant":  # the FP8 default where it differs (dtype-specific pair tiles)
        out.append(default_config(kernel, K, "fp8", pattern))
    if kernel == "dequant":
        for bm, bn, nw in ((8, 256, 4), (16, 256, 4), (32, 256, 8), (16, 512, 4), (8, 1024, 4), (32, 128, 4),
                           (64, 128, 8), (4, 1024, 4), (1, 1024, 4)):
            out.append({"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": nw, "num_stages": 1})
    else:
        lifted = pattern is not None and Pattern.parse(pattern).window != 4
        scatters = (0, 1) if lifted else (0,)
        np2 = 1 << max(5, (int(K) - 1).bit_length())
        for bk in sorted({b for b in (np2, 2048, 4096, 8192, 16384, 32768) if 2048 <= b <= max(np2, 2048)}):
            for nw in ((8, 16) if bk >= 32768 else (4, 8, 16)):
                per_thread = bk // (32 * nw)
                if not 4 <= per_thread <= 128:
                    continue
                for bw in ((256, 1024) if lifted else (256,)):
                    for sc in scatters:
                        if sc and bw != 1024:  # a scattered lift has no window blocks
                            continue
                        out.append({"BLOCK_K": bk, "BLOCK_W": bw, "ROWS": 1, "num_warps": nw, "num_stages": 1,
                                    "SCATTER": sc})
        if np2 > 4096 and kernel != "rmsnorm_quant":  # the row in two tiles, np2/2 + a smaller one
            for nw in (16, 32):
                for sc in scatters:
                    out.append({"BLOCK_K": np2 // 2, "BLOCK_W": 1024, "ROWS": 1, "num_warps": nw, "num_stages": 1,
                                "SCATTER": sc, "SPLIT": 1})
        if K <= 4096:
            out.append({"BLOCK_K": np2, "BLOCK_W": 256, "ROWS": 2, "num_warps": 4, "num_stages": 1})
        out += _schedule_candidates(kernel, K, pattern)
        if lifted:
            out += pair_candidates(int(K), Pattern.parse(pattern), kernel)
    seen, uniq = set(), []
    for c in map(lambda c: validate_config(kernel, c), out):  # validated first: optional keys filled in
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    return uniq


def pair_candidates(K: int, pattern: Pattern, kernel: str = "quant") -> list[dict]:
    """Pair-tile (BLOCK_G) configs for a lifted row: the groups in one tile of the next power of two,
    or in a tile of half that plus up to two more (SPLIT), at 1 to 32 warps, keeping about 1 to 8
    groups a thread (H100 best cases: 1-8, tools/lift_variants.py), for each UNIT (groups a thread
    holds together: each power of two up to the 16-byte unit ``launch.pair_unit``; 2 at 6:8 = 8-byte
    stores, the best INT8 SiLU configs at I = 8192) at least 0.75 units a thread,
    with the first tile a unit a thread; split rows in units past one also with SHRINK where that
    changes the tiles (the rest of the row in smaller units, a unit a thread: the 6:8 defaults of
    SiLU I = 18944 and RMSNorm K = 3072 / 3584 / 5120). The fused producers also as persistent
    programs (the next row's loads in flight), where that won on the H100 (docs/PERF.md): SiLU at 16
    and 32 warps, one program an SM; RMSNorm at up to 4 warps, three programs an SM with the weight
    hoisted (the measured defaults' 4 and 6 come in as the default, ``candidate_configs``)."""
    need = pair_groups(K, pattern.window)
    up = 1 << (need - 1).bit_length()
    out = []
    for unit in (u for u in (1, 2, 4) if u <= launch.pair_unit(pattern.window)):
        units = -(-need // unit)
        for nw in (1, 2, 4, 8, 16, 32):
            if not (0.75 <= units / (32 * nw) and need / (32 * nw) <= 8):
                continue
            for bg, split in ((up, 0), (up // 2, 1)):
                if bg >= unit * 32 * nw and not (split and need <= bg):
                    c = {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": nw, "num_stages": 1,
                         "BLOCK_G": bg, "SPLIT": split, "UNIT": unit}
                    shrink = split and unit > 1 and _shrink_differs(K, pattern, c)
                    for v in [c] + ([{**c, "SHRINK": 1}] if shrink else []):
                        out.append(v)
                        if kernel == "silu_mul_quant" and nw >= 16:
                            out.append({**v, "PERSIST": 1})
                        elif kernel == "rmsnorm_quant" and nw <= 4:
                            out.append({**v, "PERSIST": 3, "HOIST_W": 1})
    return out


def _shrink_differs(K: int, pattern: Pattern, config: dict) -> bool:
    """Whether ``config`` with SHRINK takes the pair kernel with other tiles or units than without
    (the launch's own tile constexprs, ``launch.pair_constexprs``)."""
    kout, L = launch.out_k(K, pattern), pattern.window
    shrunk = launch.pair_constexprs(kout, L, tk.PLAIN, {**config, "SHRINK": 1})
    return shrunk is not None and shrunk != launch.pair_constexprs(kout, L, tk.PLAIN, config)


def _schedule_candidates(kernel: str, K: int, pattern) -> list[dict]:
    """Schedule variants of the fused producers' default row tiling, where that holds the whole row in
    registers and writes it densely or scattered: persistent programs (PERSIST, where it applies),
    1 or 2 programs per SM; RMSNorm at 4 or 8 warps (4 also without the hoisted weight), SiLU at
    16 warps (and 32 for rows past 8192; one program an SM past 16384: two rows of 18944 do not
    fit the registers), and for SiLU rows past 8192 two programs an SM by a register cap (MAXNREG
    64 at 16 warps). Plain quant gets none (it is near copy speed already)."""
    if kernel not in ("rmsnorm_quant", "silu_mul_quant"):
        return []
    base = default_config(kernel, K, "int8", pattern, pairs=False)  # variants of the scatter / dense rows
    p = None if pattern is None else Pattern.parse(pattern)
    L = 0 if p is None or p.window == 4 else p.window
    kout = launch.out_k(K, p)
    _, _, _, one_chunk, scatter = launch.tiling(K, kout, L, base)
    if not one_chunk or (L > 0 and not scatter):
        return []
    base = {k: v for k, v in base.items() if k not in ("PERSIST", "HOIST_W", "MAXNREG")}
    if kernel == "rmsnorm_quant":
        shapes = [(p, nw, 1) for p in (1, 2) for nw in (4, 8)] + [(2, 4, 0)]
    else:
        shapes = [(p, nw, 0) for p in ((1,) if K > 16384 else (1, 2)) for nw in ((16, 32) if K > 8192 else (16,))]
    out = [{**base, "num_warps": nw, "PERSIST": p, "HOIST_W": hw} for p, nw, hw in shapes]
    if kernel == "silu_mul_quant" and K > 8192:
        out.append({**base, "num_warps": 16, "MAXNREG": 64})
    return out


def _quant_case(kernel: str, K: int, M: int, qdtype: str, pattern, device, n_sets: int | None):
    prod = _PRODUCER[kernel]
    cols = 2 * K if prod == tk.SILU_MUL else K
    p = None if pattern is None else Pattern.parse(pattern)
    kout = launch.out_k(K, p)
    mp = launch.m_pad(M)
    nbytes = M * cols * 2 + mp * (kout + 4)
    n = n_sets or rotation_sets(nbytes, device)
    gen = torch.Generator(device=device).manual_seed(1234 + K + M)
    xs = [torch.randn(M, cols, device=device, generator=gen).to(torch.bfloat16) for _ in range(n)]
    w = (torch.rand(K, device=device, generator=gen) + 0.5).to(torch.bfloat16)
    outs = [(torch.empty(mp, kout, dtype=torch_qdtype(qdtype), device=device),
             torch.empty(mp, dtype=torch.float32, device=device)) for _ in range(n)]

    def run(cfg: dict, i: int):
        return launch.quant(xs[i], qdtype, pattern, cfg, producer=prod, weight=w, eps=1e-6, out=outs[i])

    def result(i: int):
        return tuple(t.view(torch.uint8).clone() if t.dtype.itemsize == 1 else t.clone() for t in outs[i])

    return run, result, n


def _dequant_case(N: int, M: int, acc_name: str, device, n_sets: int | None):
    acc_dt = _ACC_TORCH[acc_name]
    nbytes = M * N * (acc_dt.itemsize + 2)
    n = n_sets or rotation_sets(nbytes, device)
    gen = torch.Generator(device=device).manual_seed(4321 + N + M)
    if acc_dt == torch.int32:
        accs = [torch.randint(-2**20, 2**20, (M, N), device=device, dtype=torch.int32, generator=gen) for _ in range(n)]
    else:
        accs = [(torch.randn(M, N, device=device, generator=gen) * 100).to(acc_dt) for _ in range(n)]
    sa = torch.rand(M, device=device, generator=gen) * 1e-2
    sb = torch.rand(N, device=device, generator=gen) * 1e-2
    bias = torch.randn(N, device=device, generator=gen)
    outs = [torch.empty(M, N, dtype=torch.bfloat16, device=device) for _ in range(n)]

    def run(cfg: dict, i: int):
        return launch.dequant(accs[i], sa, sb, bias, torch.bfloat16, cfg, out=outs[i])

    def result(i: int):
        return (outs[i].clone(),)

    return run, result, n


def tune_kernel(kernel: str, shapes, m_list, dtype, pattern=None, *, candidates: list[dict] | None = None,
                search_dir: Path | str = DEFAULT_SEARCH_DIR, hwtag: str | None = None, save: bool = True,
                warmup: int = 5, reps: int = 30, log: Callable[[str], None] | None = print) -> dict:
    """Time candidate configs of ``kernel`` for each K in ``shapes`` (N for dequant; I for
    silu_mul_quant) and M in ``m_list``; return ``{entry key: [{"m", "config", "us"}, ...]}`` and,
    with ``save``, merge it into ``<search_dir>/<hwtag>/kernels.json``.

    ``dtype``: int8|fp8 for the quant kernels, the accumulator dtype (int32|bf16|fp16|fp32) for
    dequant. ``candidates`` defaults to :func:`candidate_configs` per K.
    """
    device = require_cuda()
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    dt = norm_dtype(kernel, dtype)
    if kernel == "dequant" and pattern is not None:
        raise ValueError("dequant has no sparsity pattern; pass pattern=None")
    Ks = [int(k) for k in shapes]
    Ms = sorted({int(m) for m in m_list})
    if not Ks or not Ms or min(Ks) < 1 or min(Ms) < 1:
        raise ValueError(f"need positive shapes and M values, got shapes={list(shapes)}, m_list={list(m_list)}")
    if candidates is not None:
        candidates = [validate_config(kernel, c, "candidate") for c in candidates]
    if hwtag is None:
        from ..hw import hardware_tag  # noqa: PLC0415

        hwtag = hardware_tag()
    found: dict[str, list[dict]] = {}
    for K in Ks:
        key = entry_key(kernel, K, dt, pattern)
        cands = candidates or candidate_configs(kernel, K, pattern)
        base = default_config(kernel, K, dt, pattern)
        for M in Ms:
            if kernel in QUANT_KERNELS:
                run, result, n = _quant_case(kernel, K, M, dt, pattern, device, None)
            else:
                run, result, n = _dequant_case(K, M, dt, device, None)
            run(base, 0)
            want = result(0)
            best = None
            for cfg in cands:
                try:
                    run(cfg, 0)
                    got = result(0)
                except Exception as e:  # noqa: BLE001 - a config the compiler rejects is skipped, said so
                    if log:
                        log(f"  skip {key} M={M} {cfg}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                if any(not torch.equal(a, b) for a, b in zip(got, want)):
                    raise RuntimeError(f"{key} M={M}: config {cfg} gives a different result than the default "
                                       f"config {base}; the kernel is wrong for this config")
                t = time_us(lambda i, c=cfg: run(c, i), n, warmup, reps)
                if best is None or t < best[0]:
                    best = (t, cfg)
            if best is None:
                raise RuntimeError(f"{key} M={M}: no candidate config could run (see the skipped ones above)")
            found.setdefault(key, []).append({"m": M, "config": best[1], "us": round(best[0], 3)})
            if log:
                log(f"{key} M={M}: {best[0]:.1f} us  {best[1]}")
            del run, result
            torch.cuda.empty_cache()
    if save:
        path = Path(search_dir) / hwtag / FILENAME
        save_entries(path, found, hwtag)
        if log:
            log(f"saved {sum(len(v) for v in found.values())} buckets to {path}")
    return found


def model_kernel_jobs(cfgs, patterns) -> list[tuple[str, list[int], Pattern | None]]:
    """(kernel, K list, pattern) for every quant kernel the engines of ``cfgs`` (ModelConfig) launch,
    per pattern (None = dense): rmsnorm_quant at K = hidden (qkv, gate_up), quant at K = heads *
    head_dim (o), silu_mul_quant at I = intermediate (down)."""
    def unique(values):
        return sorted(set(values))

    jobs = []
    for p in patterns:
        jobs.append(("rmsnorm_quant", unique(c.hidden for c in cfgs), p))
        jobs.append(("quant", unique(c.heads * c.head_dim for c in cfgs), p))
        jobs.append(("silu_mul_quant", unique(c.intermediate for c in cfgs), p))
    return jobs


def tune_model_kernels(cfgs, patterns, qdtype: str, acc_dtype, m_list, *, search_dir: Path | str = DEFAULT_SEARCH_DIR,
                       progress: Callable[[str], None] | None = None) -> list[str]:
    """Tune every Triton kernel the engines of ``cfgs`` launch for one quantized dtype: the quant
    kernels of ``model_kernel_jobs`` and dequant at every N (accumulator ``acc_dtype``, what the
    GEMM hands over). One step per (kernel, pattern); returns a line per step. Used by
    ``slidesparse tune coarse|fine`` and the pipeline's tasks 3 and 4."""
    done = []
    for kernel, ks, p in model_kernel_jobs(cfgs, patterns):
        label = f"{kernel}/{qdtype}/{p.label if p is not None else 'dense'} K={ks}"
        if progress is not None:
            progress(f"triton {label}")
        tune_kernel(kernel, ks, m_list, qdtype, p, search_dir=search_dir, log=None)
        done.append(label)
    ns = sorted({n for c in cfgs for n, _ in c.linear_shapes().values()})
    label = f"dequant/{norm_dtype('dequant', acc_dtype)} N={ns}"
    if progress is not None:
        progress(f"triton {label}")
    tune_kernel("dequant", ns, m_list, acc_dtype, None, search_dir=search_dir, log=None)
    return done + [label]
