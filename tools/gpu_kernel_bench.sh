#!/usr/bin/env bash
# Kernel benchmark on the GPU (< 5 minutes on an H100): dense cuBLASLt vs cuSPARSELt, both views
# (gemm: GEMM alone, same output dtype; linear: quant -> GEMM -> dequant, fastest legal output),
# INT8 and FP8, patterns 2:4 4:6 6:8 8:10.
#   1. Qwen2.5-7B, model mode, M = 64, 4096, 16384 (per linear + the four summed)
#   2. square mode M = N = K = 1024, 4096, 8192
# Prints the compact tables; rows go to RESULTS/kernel/<hwtag>/..., the console log to RESULTS/.
#
#   tools/gpu_kernel_bench.sh [RESULTS] [SEARCH]     (defaults: $OUT/results or ./results; ./search)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:+$OUT/results}}"
RESULTS="${RESULTS:-results}"
SEARCH="${2:-search}"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS"

ss() { "$PY" -c 'import sys; from slidesparse.cli import main; sys.exit(main())' "$@"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader || true
start=$(date +%s)
ss bench kernel --mode model --model qwen2.5-7b --m 64,4096,16384 --dtype int8,fp8 \
    --patterns 2:4,4:6,6:8,8:10 --view gemm,linear --results "$RESULTS" --search "$SEARCH" \
    --warmup 10 --repeat 40 2>&1 | tee "$RESULTS/kernel_qwen2.5-7b.log"
echo "model mode: $(( $(date +%s) - start )) s"
start=$(date +%s)
ss bench kernel --mode square --m 1024,4096,8192 --dtype int8,fp8 \
    --patterns 2:4,4:6,6:8,8:10 --view gemm,linear --results "$RESULTS" --search "$SEARCH" \
    --warmup 10 --repeat 40 2>&1 | tee "$RESULTS/kernel_square.log"
echo "square mode: $(( $(date +%s) - start )) s"
# the gemm view must be exact for INT8 (sparse == dense == int32 reference) on every row
"$PY" - "$RESULTS" <<'PY'
import json, pathlib, sys
rows = [r for p in pathlib.Path(sys.argv[1], "kernel").rglob("*_kernel.json") for r in json.loads(p.read_text())["rows"]]
bad = [r for r in rows if r["view"] == "gemm" and r["check_ok"] is False]
print(f"{len(rows)} rows; gemm-view reference check failures: {len(bad)}")
for r in bad[:10]:
    print("  FAIL", r["model"], r["dtype"], r["pattern"], r["layer"], r["M"], r["check"])
sys.exit(1 if bad else 0)
PY
