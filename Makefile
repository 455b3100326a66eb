# SlideSparse: GNU make front end. `make help` lists the targets.
#
# Everything runs inside a virtual environment ($(VENV), made by `make install`, which every
# other target depends on). On a GPU machine whose system Python already has a CUDA torch:
#     make install VENV_FLAGS=--system-site-packages
# Targets that write results take RESULTS=DIR (default results/), tuning targets SEARCH=DIR.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
VENV_FLAGS  ?=
# torch is installed first, and only when the venv cannot import one: the CPU machines carry a
# local torch 2.13.0 build; a plain `torch` from the index would pull a multi-GB CUDA build there.
TORCH_SPEC  ?= torch==2.13.0
CONSTRAINTS := tools/constraints.txt
PY          := $(VENV)/bin/python
SLIDESPARSE := $(VENV)/bin/slidesparse
STAMP       := $(VENV)/.slidesparse-install-stamp

RESULTS     ?= results
SEARCH      ?= search
PYTEST_ARGS ?=
# extra CLI options for any target, e.g. ARGS='--warmup 10'
ARGS        ?=

# --- docker (docker/Dockerfile) and the offline wheelhouse ---------------------------------------
# Image tag: slidesparse:<package version>-<CUDA line>. CUDA_LINE=cu130 (CUDA 13.0.1 base, torch +cu130:
# DGX Spark, driver >= 580) or cu129 (CUDA 12.9.1 base, torch +cu129).
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CUDA_LINE   ?= cu130
CUDA_VERSION_cu129 := 12.9.1
CUDA_VERSION_cu130 := 13.0.1
CUDA_VERSION ?= $(CUDA_VERSION_$(CUDA_LINE))
IMAGE       ?= slidesparse:$(VERSION)-$(CUDA_LINE)
# PLATFORMS=linux/amd64,linux/arm64 builds with buildx; empty = a plain `docker build` for this machine
PLATFORMS   ?=
# where a buildx build goes: --load needs the containerd image store for several platforms; or --push
BUILDX_OUTPUT ?= --load
DOCKER_BUILD_ARGS ?=
# DOCKER=1 runs the CLI targets (bench-*, tune-*, pipeline, report, convert) inside $(IMAGE) on all
# GPUs, with $(RESULTS), $(SEARCH) and checkpoints/ mounted. `make docker-build bench-decode` does the
# same: when docker-build is among the goals it runs first, and the CLI targets run in that image.
DOCKER      ?=
IN_DOCKER   := $(if $(filter docker-build,$(MAKECMDGOALS)),1,$(filter 1,$(DOCKER)))
DOCKER_RUN_FLAGS ?=
DOCKER_RUN  = mkdir -p '$(RESULTS)' '$(SEARCH)' checkpoints && \
	docker run --rm --gpus all --ipc=host --user "$$(id -u):$$(id -g)" -e HOME=/tmp \
	  -e TRITON_CACHE_DIR=/workspace/search/.triton-cache \
	  -v '$(abspath $(RESULTS))':/workspace/results -v '$(abspath $(SEARCH))':/workspace/search \
	  -v '$(CURDIR)/checkpoints':/workspace/checkpoints $(DOCKER_RUN_FLAGS) $(IMAGE)
ifeq ($(IN_DOCKER),1)
  # inside the container the mounts are /workspace/{results,search} (its WORKDIR is /workspace)
  RESULTS_ARG := results
  SEARCH_ARG  := search
  # the CLI targets need the image (built first when docker-build is a goal), not the venv
  CLI_DEPS    := $(filter docker-build,$(MAKECMDGOALS))
else
  RESULTS_ARG := $(RESULTS)
  SEARCH_ARG  := $(SEARCH)
  CLI_DEPS    := $(STAMP)
endif
# make wheelhouse: target Python and machine (default: 3.12 and this machine)
WH_PY       := $(or $(PY_VERSION),3.12)
WH_PLATFORM := $(or $(PLATFORM),$(shell uname -m))

# $(call cli,TARGET,ISSUE,COMMAND WORDS,OPTIONS): run `slidesparse COMMAND WORDS OPTIONS`; when the
# command does not exist yet (click: "No such command"), say so and fail instead of a raw usage error.
# In docker mode (IN_DOCKER, above) the same command runs in $(IMAGE), whose entrypoint is the CLI.
ifeq ($(IN_DOCKER),1)
define cli
	@test $(words $(RESULTS)) -eq 1 || { echo "$(1): in docker RESULTS must be one directory (got: $(RESULTS))" >&2; exit 2; }
	$(DOCKER_RUN) $(3) $(4)
endef
else
define cli
	@probe=$$($(SLIDESPARSE) $(3) --help 2>&1 >/dev/null); \
	if grep -q "No such command" <<<"$$probe"; then \
	  echo "$(1): not built yet (issue: $(2)); 'slidesparse $(3)' does not exist in this checkout" >&2; \
	  exit 1; \
	fi
	$(SLIDESPARSE) $(3) $(4)
endef
endif

.PHONY: help install test convert bench-decode tune-coarse tune-fine bench-kernel bench-quant \
        bench-prefill pipeline report docker-build smoke-gpu wheelhouse clean-venv

help: ## list the targets
	@echo "SlideSparse make targets (variables: VENV=$(VENV) RESULTS=$(RESULTS) SEARCH=$(SEARCH)):"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(firstword $(MAKEFILE_LIST)) | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP) ## make the venv and install the package (idempotent)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || { echo "creating $(VENV) $(VENV_FLAGS)"; $(PYTHON) -m venv $(VENV_FLAGS) $(VENV); }
	@$(PY) -c 'import torch' 2>/dev/null || { echo "installing $(TORCH_SPEC)"; \
	  $(PY) -m pip install --quiet '$(TORCH_SPEC)'; }
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	@touch $@

test: $(STAMP) ## run the test suite (pytest; GPU tests are skipped without CUDA)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "make test: pytest collected no tests (exit code 5); that is a failure, not a pass" >&2; \
	fi; \
	exit $$rc

convert: $(CLI_DEPS) ## convert a checkpoint: MODEL=tiny|HF-dir PATTERN=6:8|dense DTYPE=int8|fp8 [OUT=dir]
	@test -n "$(MODEL)" || { echo "convert: set MODEL (a built-in name or a Hugging Face directory)," \
	  "e.g. make convert MODEL=tiny PATTERN=6:8 DTYPE=int8" >&2; exit 2; }
	$(call cli,convert,checkpoint conversion,convert,'$(MODEL)' $(if $(PATTERN),--pattern '$(PATTERN)') \
	  $(if $(DTYPE),--dtype '$(DTYPE)') $(if $(OUT),--out '$(OUT)') $(ARGS))

bench-decode: $(CLI_DEPS) ## end-to-end decode tokens/s, dense vs patterns (CPU: reference backend, tiny model); MODELS= DTYPES= PATTERNS= M=
	$(call cli,bench-decode,decode benchmark,bench decode,--results '$(RESULTS_ARG)' --search '$(SEARCH_ARG)' \
	  $(if $(MODELS),--models '$(MODELS)') $(if $(DTYPES),--dtypes '$(DTYPES)') \
	  $(if $(PATTERNS),--patterns '$(PATTERNS)') $(if $(M),--m '$(M)') $(ARGS))

tune-coarse: $(CLI_DEPS) ## offline tuning, dense GEMM + quant kernels (SEARCH=dir)
	$(call cli,tune-coarse,offline tuning,tune coarse,--search '$(SEARCH_ARG)' $(ARGS))

tune-fine: $(CLI_DEPS) ## offline tuning, sparse GEMM + slide kernels (SEARCH=dir)
	$(call cli,tune-fine,offline tuning,tune fine,--search '$(SEARCH_ARG)' $(ARGS))

bench-kernel: $(CLI_DEPS) ## GEMM kernel benchmark, cuBLASLt vs cuSPARSELt
	$(call cli,bench-kernel,kernel benchmark,bench kernel,--results '$(RESULTS_ARG)' $(ARGS))

bench-quant: $(CLI_DEPS) ## quant(+slide) kernel benchmark against a copy of the same bytes
	$(call cli,bench-quant,quant kernel benchmark,bench quant,--results '$(RESULTS_ARG)' $(ARGS))

bench-prefill: $(CLI_DEPS) ## end-to-end prefill tokens/s, dense vs patterns; MODELS= DTYPES= PATTERNS= M=
	$(call cli,bench-prefill,prefill benchmark,bench prefill,--results '$(RESULTS_ARG)' --search '$(SEARCH_ARG)' \
	  $(if $(MODELS),--models '$(MODELS)') $(if $(DTYPES),--dtypes '$(DTYPES)') \
	  $(if $(PATTERNS),--patterns '$(PATTERNS)') $(if $(M),--m '$(M)') $(ARGS))

pipeline: $(CLI_DEPS) ## the whole resumable sweep (convert, tune, bench) with a ledger
	$(call cli,pipeline,pipeline,pipeline,--results '$(RESULTS_ARG)' $(ARGS))

report: $(CLI_DEPS) ## REPORT.md + plots from results trees (RESULTS="dir1 dir2" merges machines)
	$(call cli,report,report,report,$(RESULTS_ARG) $(ARGS))

smoke-gpu: $(STAMP) ## GPU check (<= 10 min): gpu tests, mini pipeline, report; SMOKE_RESULTS=dir (default: new results/smoke_<time>)
	$(PY) tools/smoke_gpu.py $(if $(SMOKE_RESULTS),--results '$(SMOKE_RESULTS)') --search '$(SEARCH)' $(ARGS)

wheelhouse: ## download every wheel for an offline install: PY_VERSION=3.12 PLATFORM=x86_64|aarch64 CUDA_LINE=cu129|cu130 [WHEELHOUSE=dir]
	$(PYTHON) tools/wheelhouse.py --python '$(WH_PY)' --platform '$(WH_PLATFORM)' --cuda '$(CUDA_LINE)' \
	  --dest '$(or $(WHEELHOUSE),wheelhouse/py$(WH_PY)_$(WH_PLATFORM)_$(CUDA_LINE))' $(ARGS)

docker-build: ## build the image slidesparse:VERSION-CUDA_LINE (CUDA_LINE=cu130|cu129; PLATFORMS=linux/amd64,linux/arm64 uses buildx); `make docker-build bench-decode`: bench in it (see DOCKER=1)
	@test -n "$(CUDA_VERSION)" || { echo "docker-build: CUDA_LINE=$(CUDA_LINE) is not cu129 or cu130" >&2; exit 2; }
	@command -v docker >/dev/null || { echo "docker-build: no docker command on this machine" >&2; exit 1; }
	$(if $(PLATFORMS),docker buildx build --platform '$(PLATFORMS)' $(BUILDX_OUTPUT),DOCKER_BUILDKIT=1 docker build) \
	  -f docker/Dockerfile --build-arg CUDA_VERSION=$(CUDA_VERSION) --build-arg TORCH_CUDA=$(CUDA_LINE) \
	  $(DOCKER_BUILD_ARGS) -t $(IMAGE) .

clean-venv: ## remove the virtual environment
	rm -rf $(VENV)
