#!/usr/bin/env bash
# Installs the GPU dependencies into the active Python environment (docker/Dockerfile runs it):
# torch of one CUDA line from the PyTorch index, the Triton and cuSPARSELt wheels torch pins, nvmath-python.
# Inputs (environment, set from the Dockerfile's ARGs): TARGETARCH (amd64 | arm64), CUDA_VERSION (of the
# base image), TORCH_CUDA (cu129 | cu130), TORCH_INDEX_URL, TORCH_SPEC, NVMATH_SPEC.
set -euo pipefail

if [ -z "${TARGETARCH:-}" ]; then   # the legacy builder does not set it: this build's own arch
  case "$(uname -m)" in x86_64) TARGETARCH=amd64 ;; aarch64) TARGETARCH=arm64 ;; *) TARGETARCH=$(uname -m) ;; esac
  echo "install_gpu_deps: TARGETARCH not set (no BuildKit); using $TARGETARCH"
fi
: "${CUDA_VERSION:?}" "${TORCH_CUDA:?}" "${TORCH_INDEX_URL:?}" "${TORCH_SPEC:?}" "${NVMATH_SPEC:?}"

case "$TARGETARCH" in
  amd64) machine=x86_64 ;;
  arm64) machine=aarch64 ;;   # GB10 / DGX Spark, GH200: the PyTorch index has aarch64 CUDA wheels
  *) echo "install_gpu_deps: TARGETARCH=$TARGETARCH is not supported (amd64 or arm64)" >&2; exit 1 ;;
esac
if [ "$(uname -m)" != "$machine" ]; then
  echo "install_gpu_deps: TARGETARCH=$TARGETARCH but this build runs on $(uname -m)" >&2; exit 1
fi

# the CUDA line of torch must be the base image's: cu130 <-> 13.0.x, cu129 <-> 12.9.x
want="cu$(echo "$CUDA_VERSION" | cut -d. -f1)$(echo "$CUDA_VERSION" | cut -d. -f2)"
if [ "$want" != "$TORCH_CUDA" ]; then
  echo "install_gpu_deps: base image CUDA $CUDA_VERSION needs TORCH_CUDA=$want, got $TORCH_CUDA" >&2; exit 1
fi

python -m pip install --upgrade pip
# torch and its pinned CUDA wheels (cuBLAS, cuSPARSELt, ..., and triton where torch declares it)
python -m pip install --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"

# Triton: torch pins it on Linux; a torch build that does not declare it (older aarch64 wheels) gets
# the newest one from PyPI
if ! python -c "import triton" 2>/dev/null; then
  echo "install_gpu_deps: torch did not bring triton on $machine; installing it from PyPI"
  python -m pip install triton
fi

# cuSPARSELt: the wheel (and version) torch's metadata pins, in case this torch build left it out
spec=$(python - <<'PY'
import importlib.metadata as md
import re
for req in md.requires("torch") or []:
    name = re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0]
    if name.startswith("nvidia-cusparselt"):
        print(req.split(";")[0].strip())
        break
PY
)
if [ -n "$spec" ]; then
  python -m pip install "$spec"
else
  echo "install_gpu_deps: torch declares no nvidia-cusparselt wheel (it bundles libcusparseLt itself)"
fi

python -m pip install "$NVMATH_SPEC"

python - <<'PY'
import importlib.metadata as md
import torch, triton
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
      f"nvmath-python {md.version('nvmath-python')}, "
      f"cuSPARSELt wheels {[d.metadata['Name'] + ' ' + d.version for d in md.distributions() if (d.metadata['Name'] or '').startswith('nvidia-cusparselt')]}")
PY
