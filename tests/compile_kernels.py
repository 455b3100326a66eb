"""Compile every Triton kernel variant the launches can ask for, for sm_90, without a GPU.

Run by tests/test_kernels_compile.py in a subprocess without TRITON_INTERPRET: the interpreter
accepts code the GPU compiler rejects (a constexpr re-assigned in a static_range loop compiled
fine on the CPU and failed on the H100), so CI compiles the real thing (Triton's bundled ptxas).
Prints one line per variant; exits 1 on the first failure with the compiler's message. The
persistent kernel (config key PERSIST) and the pair-tile kernel (BLOCK_G) are compiled at the shapes
their default configs use, and must not spill registers there (cuobjdump's resource usage: STACK
and LOCAL 0).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from slidesparse.kernels import triton_kernels as tk  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_one(fn, sig: dict, constexprs: dict, num_warps: int, div16=(), maxnreg: int = 0):
    """div16: arguments the launch specializes as divisible by 16 (Triton does so for such integers
    and 16-byte aligned pointers), as at the model shapes; maxnreg: a config's MAXNREG (0: none)."""
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    sig = dict(sig, **{k: "constexpr" for k in constexprs})
    return triton.compile(triton.compiler.ASTSource(fn, sig, constexprs, attrs), target=TARGET,
                          options={"num_warps": num_warps, "enable_fp_fusion": False,
                                   **({"maxnreg": maxnreg} if maxnreg else {})})


def spills(ck) -> str:
    """'' when the cubin uses no stack / local memory (no register spills), else cuobjdump's numbers;
    '' too when cuobjdump is not bundled (nothing to check with)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+).*?LOCAL:(\d+)", out)
    if m is None:
        return f"cannot read cuobjdump's output: {out[-300:]!r}"
    return "" if m.group(2) == "0" and m.group(3) == "0" else f"REG {m.group(1)} STACK {m.group(2)} LOCAL {m.group(3)}"


# what a launch at the model shapes specializes (M itself need not be a multiple of 16)
DIV16 = ("x_ptr", "w_ptr", "q_ptr", "s_ptr", "M_PAD", "K", "KOUT", "KIN", "stride_xm", "stride_qm", "inter")


def persist_variants():
    """The persistent kernel at every default config that selects it (configs.default_config) and
    a few other paths: (kernel, K, pattern, qdtype, config overrides, check spills)."""
    yield from [
        ("rmsnorm_quant", 5120, None, "int8", {}, True), ("rmsnorm_quant", 5120, None, "fp8", {}, True),
        ("rmsnorm_quant", 8192, None, "fp8", {}, True), ("silu_mul_quant", 13824, None, "int8", {}, True),
        ("silu_mul_quant", 18944, None, "int8", {}, True), ("silu_mul_quant", 18944, None, "fp8", {}, True),
        ("silu_mul_quant", 8192, None, "fp8", {"PERSIST": 1}, False),
        # scattered lifts, a plain row, two rows a tile, the weight loaded per row
        ("rmsnorm_quant", 3584, "2_8", "fp8", {"PERSIST": 2, "HOIST_W": 1}, False),
        ("silu_mul_quant", 13824, "2_10", "int8", {"PERSIST": 1}, False),
        ("quant", 2048, None, "int8", {"PERSIST": 2}, False),
        ("rmsnorm_quant", 5120, None, "int8", {"HOIST_W": 0, "ROWS": 2, "num_warps": 8}, False),
    ]


def persist_job(kernel, K, pattern, qd, over, base):
    from slidesparse.kernels import launch  # noqa: PLC0415
    from slidesparse.kernels.configs import default_config  # noqa: PLC0415
    from slidesparse.pattern import Pattern  # noqa: PLC0415

    p = None if pattern is None else Pattern.parse(pattern)
    cfg = {**default_config(kernel, K, qd, p, pairs=False), **over}
    assert cfg.get("PERSIST"), f"{kernel} K={K} {pattern} {qd}: {cfg} is not persistent"
    L = 0 if p is None or p.window == 4 else p.window
    kout = launch.out_k(K, p)
    bk, bk2, kin, one, scatter = launch.tiling(K, kout, L, cfg)
    assert one and (L == 0 or scatter), cfg
    b2, b3 = launch.persist_tiles(kin, bk, bk2)
    producer = {"quant": tk.PLAIN, "rmsnorm_quant": tk.RMSNORM, "silu_mul_quant": tk.SILU_MUL}[kernel]
    sig = {k: v for k, v in base.items() if k != "NWIN"}
    sig["q_ptr"] = "*fp8e4nv" if qd == "fp8" else "*i8"
    ce = dict(QMAX=448.0 if qd == "fp8" else 127.0, FLOOR=2.0 ** -100, QFP8=qd == "fp8", L=L, PRODUCER=producer,
              SOFT=False, BLOCK_K=bk, BLOCK_K2=b2, BLOCK_K3=b3, ROWS=int(cfg["ROWS"]),
              TAIL=(1 << (2 * L + 27).bit_length()) if scatter else 1,
              HOIST_W=bool(cfg.get("HOIST_W", 0)) and producer == tk.RMSNORM, N_ITER=0)
    return f"persist {kernel} K={K} {pattern or 'dense'} {qd} {cfg}", sig, ce, int(cfg["num_warps"])


def pair_jobs():
    """The pair-tile kernel (BLOCK_G) at every default config that selects it (persistent or not),
    for both quantized dtypes: (name, signature, constexprs, num_warps, MAXNREG). None of them may
    spill registers."""
    from slidesparse.kernels import launch  # noqa: PLC0415
    from slidesparse.kernels.configs import default_config  # noqa: PLC0415
    from slidesparse.pattern import Pattern  # noqa: PLC0415

    sizes = {"quant": (2048, 3072, 3584, 5120, 8192), "rmsnorm_quant": (2048, 3072, 3584, 5120),
             "silu_mul_quant": (8192, 13824, 18944)}
    producer = {"quant": tk.PLAIN, "rmsnorm_quant": tk.RMSNORM, "silu_mul_quant": tk.SILU_MUL}
    sig = {"x_ptr": "*bf16", "w_ptr": "*bf16", "s_ptr": "*fp32", "M": "i32", "M_PAD": "i32", "K": "i32",
           "KOUT": "i32", "stride_xm": "i32", "stride_qm": "i32", "inter": "i32", "kf": "fp32", "eps": "fp32",
           "zero": "i32"}
    for kernel, ks in sizes.items():
        for K in ks:
            for L in (6, 8, 10):
                p = Pattern(L)
                for qd in ("int8", "fp8"):
                    cfg = default_config(kernel, K, qd, p)
                    pairs = launch.pair_constexprs(launch.out_k(K, p), L, producer[kernel], cfg)
                    if pairs is None:
                        continue
                    ce = dict(QMAX=448.0 if qd == "fp8" else 127.0, FLOOR=2.0 ** -100, QFP8=qd == "fp8", L=L,
                              PRODUCER=producer[kernel], SOFT=False, N_ITER=0, **pairs)
                    tiles = (pairs["BG"], pairs["BG2"], pairs["BG3"])
                    units = "/".join(str(ce[g]) for t, g in zip(tiles, ("GQ", "GQ2", "GQ3")) if t)
                    yield (f"pairs {kernel} K={K} 2_{L} {qd} {tiles} w{cfg['num_warps']} u{units}"
                           f" r{cfg.get('MAXNREG', 0)} p{cfg.get('PERSIST', 0)}{'h' if ce['HOIST_W'] else ''}",
                           dict(sig, q_ptr="*fp8e4nv" if qd == "fp8" else "*i8"), ce,
                           int(cfg["num_warps"]), int(cfg.get("MAXNREG", 0)))


def quant_variants():
    # (QFP8, L, PRODUCER, ONE_CHUNK, SCATTER, BLOCK_K, BLOCK_K2): every code path of _quant_rows
    yield from [
        (False, 0, tk.PLAIN, True, False, 2048, 0), (True, 0, tk.PLAIN, False, False, 4096, 0),
        (False, 8, tk.PLAIN, True, False, 8192, 0), (True, 10, tk.PLAIN, False, False, 4096, 0),
        (False, 10, tk.RMSNORM, True, True, 2048, 0), (True, 8, tk.RMSNORM, True, True, 4096, 1024),
        (False, 0, tk.RMSNORM, False, False, 2048, 0), (False, 8, tk.SILU_MUL, True, True, 8192, 0),
        (True, 10, tk.SILU_MUL, True, True, 16384, 4096), (False, 0, tk.SILU_MUL, True, False, 16384, 4096),
        (False, 6, tk.SILU_MUL, False, True, 4096, 0), (True, 16, tk.PLAIN, False, True, 1024, 0),
    ]


def main() -> int:
    base = {"x_ptr": "*bf16", "w_ptr": "*bf16", "s_ptr": "*fp32", "M": "i32", "M_PAD": "i32", "K": "i32",
            "KOUT": "i32", "KIN": "i32", "NWIN": "i32", "stride_xm": "i32", "stride_qm": "i32", "inter": "i32",
            "kf": "fp32", "eps": "fp32"}
    jobs = []
    for qfp8, L, prod, one, scatter, bk, bk2 in quant_variants():
        sig = dict(base, q_ptr="*fp8e4nv" if qfp8 else "*i8")
        ce = dict(QMAX=448.0 if qfp8 else 127.0, FLOOR=2.0 ** -100, QFP8=qfp8, L=L, PRODUCER=prod, SOFT=False,
                  ONE_CHUNK=one, SCATTER=scatter, BLOCK_K=bk, BLOCK_K2=bk2, BLOCK_W=256, ROWS=1,
                  TAIL=(1 << (2 * L + 27).bit_length()) if scatter else 1)
        jobs.append((f"quant {ce}", tk.quant_kernel, sig, ce, 8))
    for acc, bias in (("*i32", True), ("*bf16", False)):
        sig = {"acc_ptr": acc, "sa_ptr": "*fp32", "sb_ptr": "*fp32", "bias_ptr": "*fp32", "out_ptr": "*bf16",
               "M": "i32", "N": "i32", "stride_am": "i32", "stride_om": "i32"}
        jobs.append((f"dequant {acc} bias={bias}", tk.dequant_kernel, sig,
                     dict(HAS_BIAS=bias, SOFT=False, BLOCK_M=16, BLOCK_N=256), 4))
    sig = {"qkv_ptr": "*bf16", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "pos_ptr": "*i64", "q_ptr": "*bf16",
           "kc_ptr": "*bf16", "vc_ptr": "*bf16", "T": "i32", "S": "i32", "stride_row": "i32", "stride_cb": "i64",
           "stride_ch": "i32", "stride_cs": "i32"}
    for H, HKV, D in ((28, 4, 128), (32, 8, 64)):
        jobs.append((f"rope_cache H={H} HKV={HKV} D={D}", tk.rope_cache_kernel, sig,
                     dict(H=H, HKV=HKV, D=D, BLOCK_H=1 << (H - 1).bit_length(), SOFT=False), 4))
    checks = {}
    for kernel, K, pattern, qd, over, check in persist_variants():
        name, sig, ce, nw = persist_job(kernel, K, pattern, qd, over, base)
        jobs.append((name, tk.quant_kernel_persist, sig, ce, nw, DIV16))
        checks[name] = check
    for name, sig, ce, nw, cap in pair_jobs():
        jobs.append((name, tk.quant_kernel_pairs, sig, ce, nw, [a for a in DIV16 if a in sig], cap))
        checks[name] = True
    # SiLU FP8 at I = 13824: the default caps registers at 64 (two programs an SM); it must not spill
    sig = dict(base, q_ptr="*fp8e4nv")
    ce = dict(QMAX=448.0, FLOOR=2.0 ** -100, QFP8=True, L=0, PRODUCER=tk.SILU_MUL, SOFT=False, ONE_CHUNK=True,
              SCATTER=False, BLOCK_K=8192, BLOCK_K2=8192, BLOCK_W=1024, ROWS=1, TAIL=1)
    jobs.append(("silu_mul_quant I=13824 fp8 default (MAXNREG 64)", tk.quant_kernel, sig, ce, 16, DIV16, 64))
    checks[jobs[-1][0]] = True
    for name, fn, sig, ce, nw, *div16 in jobs:
        try:
            ck = compile_one(fn, sig, ce, nw, *div16)
        except Exception as e:  # noqa: BLE001 - report the compiler's message and stop
            print(f"FAILED {name}: {type(e).__name__}: {str(e)[-2000:]}")
            return 1
        if checks.get(name) and spills(ck):
            print(f"FAILED {name}: registers spill at a default config ({spills(ck)})")
            return 1
        print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
