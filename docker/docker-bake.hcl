# docker buildx bake -f docker/docker-bake.hcl                 # both CUDA lines, linux/amd64 + linux/arm64
# docker buildx bake -f docker/docker-bake.hcl cu130           # one line
# VERSION=0.1.0 REGISTRY=ghcr.io/me/ docker buildx bake -f docker/docker-bake.hcl --push
# (multi-platform images need --push, or a Docker engine with the containerd image store for --load)

variable "VERSION" {
  default = "0.1.0"   # keep in step with pyproject.toml (make docker-build reads it from there)
}

variable "REGISTRY" {
  default = ""        # e.g. "ghcr.io/me/" (with the trailing slash)
}

group "default" {
  targets = ["cu130", "cu129"]
}

target "_common" {
  context    = "."
  dockerfile = "docker/Dockerfile"
  platforms  = ["linux/amd64", "linux/arm64"]
}

# CUDA 13.0: DGX Spark (GB10, driver 580) and any H100/H200 whose driver supports CUDA 13
target "cu130" {
  inherits = ["_common"]
  args = {
    CUDA_VERSION = "13.0.1"
    TORCH_CUDA   = "cu130"
  }
  tags = ["${REGISTRY}slidesparse:${VERSION}-cu130"]
}

# CUDA 12.9: machines whose driver is older than 580 (12.9 is the first release that knows sm_121)
target "cu129" {
  inherits = ["_common"]
  args = {
    CUDA_VERSION = "12.9.1"
    TORCH_CUDA   = "cu129"
  }
  tags = ["${REGISTRY}slidesparse:${VERSION}-cu129"]
}
