#!/usr/bin/env python3
"""One-shot GPU check of the Triton activation kernels (run on the H100 by hand).

    PYTHONPATH=src python3 tools/gpu_kernels.py OUT_DIR [--skip-tests] [--quick]

1. runs ``pytest -q -m gpu tests/test_kernels_gpu.py`` (bit-exactness at model shapes and at the
   2**31-element shapes, poisoned outputs, fused producers) unless --skip-tests;
2. a compact benchmark: every K of the four built-in models (Llama-3.2-1B/3B, Qwen2.5-7B/14B),
   M = 4096, 16384, 65536; quant, quant+lift 6:8 and 8:10, both dtypes; dequant N=4608/37888; the
   fused producers at the models' hidden (RMSNorm) and intermediate (SiLU) sizes, M = 4096, 16384. Prints %
   of device-to-device copy bandwidth and lift ratio vs byte ratio, then the target per kernel
   (``bench.quant.target_lines``: >= 85 % of copy at M >= 4096, lift ratio within 1.05 x the byte
   ratio) with every case that misses it, and writes the
   full rows to OUT_DIR/quant_bench.csv (and .json).
Any failing step prints its traceback and the script goes on. Budget: about 3 minutes on an H100.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run_tests(out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "test_kernels_gpu.py")]
    print("$", " ".join(cmd), flush=True)
    t = time.time()
    with open(out / "pytest_gpu.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log.write(proc.stdout)
    tail = proc.stdout.strip().splitlines()[-25:]
    print("\n".join(tail))
    print(f"pytest exit code {proc.returncode} ({time.time() - t:.0f}s; full log {out / 'pytest_gpu.log'})", flush=True)


def run_bench(out: Path, quick: bool) -> None:
    import torch  # noqa: PLC0415

    from slidesparse.bench.quant import Shapes, model_shapes, run_quant_bench, summary_lines, target_lines  # noqa: PLC0415
    from slidesparse.models import BUILTIN_MODELS  # noqa: PLC0415
    from slidesparse.pattern import Pattern  # noqa: PLC0415

    m_list = (4096, 16384) if quick else (4096, 16384, 65536)
    pats = [None, Pattern.parse("6:8"), Pattern.parse("8:10")]
    rows = []
    every = model_shapes([m for m in BUILTIN_MODELS if m != "tiny"])  # the four real models' sizes
    steps = [
        ("quant + dequant", Shapes(every.quant_k, (), (), (4608, 37888)), ("quant", "dequant"), m_list),
        ("fused producers", Shapes((), every.rms_k, every.silu_i, ()), ("rmsnorm_quant", "silu_mul_quant"),
         (4096, 16384)),
    ]
    for name, shapes, kernels, ms in steps:
        t = time.time()
        try:
            rows += run_quant_bench(shapes=shapes, m_list=ms, qdtypes=("int8", "fp8"), patterns=pats, kernels=kernels,
                                    warmup=5, repeat=30, search_dir=None,
                                    on_case=lambda s: print("  " + s, flush=True))
        except Exception:  # noqa: BLE001 - report and go on
            traceback.print_exc()
        print(f"{name}: {time.time() - t:.0f}s", flush=True)
        torch.cuda.empty_cache()
    if not rows:
        return
    from slidesparse.bench.results import append_rows  # noqa: PLC0415

    append_rows(out / "quant_bench.csv", out / "quant_bench.json", rows)
    print()
    print(f"{torch.cuda.get_device_name()}: kernel time vs a device-to-device copy of the same bytes")
    for line in summary_lines(rows):
        print(line)
    target = target_lines(rows)
    print("\n".join(target))
    (out / "summary.txt").write_text("\n".join(summary_lines(rows) + target) + "\n")
    (out / "environment.json").write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                                      "cuda": torch.version.cuda}, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="directory for logs and CSV")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the GPU pytest module")
    ap.add_argument("--skip-bench", action="store_true", help="do not run the benchmark")
    ap.add_argument("--quick", action="store_true", help="benchmark M = 4096, 16384 only")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not args.skip_tests:
        try:
            run_tests(args.out)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    if not args.skip_bench:
        try:
            run_bench(args.out, args.quick)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
