"""Compile every Triton kernel variant the launches can ask for, for sm_90, without a GPU.

Run by tests/test_kernels_compile.py in a subprocess without TRITON_INTERPRET: the interpreter
accepts code the GPU compiler rejects (a constexpr re-assigned in a static_range loop compiled
fine on the CPU and failed on the H100), so CI compiles the real thing (Triton's bundled ptxas).
Prints one line per variant; exits 1 on the first failure with the compiler's message.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from slidesparse.kernels import triton_kernels as tk  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_one(fn, sig: dict, constexprs: dict, num_warps: int) -> None:
    sig = dict(sig, **{k: "constexpr" for k in constexprs})
    triton.compile(triton.compiler.ASTSource(fn, sig, constexprs), target=TARGET,
                   options={"num_warps": num_warps, "enable_fp_fusion": False})


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
           "kc_ptr": "*bf16", "vc_ptr": "*bf16", "T": "i32", "stride_row": "i32", "stride_cb": "i64",
           "stride_ch": "i32", "stride_cs": "i32"}
    for H, HKV, D in ((28, 4, 128), (32, 8, 64)):
        jobs.append((f"rope_cache H={H} HKV={HKV} D={D}", tk.rope_cache_kernel, sig,
                     dict(H=H, HKV=HKV, D=D, BLOCK_H=1 << (H - 1).bit_length(), SOFT=False), 4))
    for name, fn, sig, ce, nw in jobs:
        try:
            compile_one(fn, sig, ce, nw)
        except Exception as e:  # noqa: BLE001 - report the compiler's message and stop
            print(f"FAILED {name}: {type(e).__name__}: {str(e)[-2000:]}")
            return 1
        print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
