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

# $(call cli,TARGET,ISSUE,COMMAND WORDS,OPTIONS): run `slidesparse COMMAND WORDS OPTIONS`; when the
# command does not exist yet (click: "No such command"), say so and fail instead of a raw usage error.
define cli
	@probe=$$($(SLIDESPARSE) $(3) --help 2>&1 >/dev/null); \
	if grep -q "No such command" <<<"$$probe"; then \
	  echo "$(1): not built yet (issue: $(2)); 'slidesparse $(3)' does not exist in this checkout" >&2; \
	  exit 1; \
	fi
	$(SLIDESPARSE) $(3) $(4)
endef

.PHONY: help install test convert bench-decode tune-coarse tune-fine bench-kernel bench-quant \
        bench-prefill pipeline report docker-build smoke-gpu clean-venv

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

convert: $(STAMP) ## convert a checkpoint: MODEL=tiny|HF-dir PATTERN=6:8|dense DTYPE=int8|fp8 [OUT=dir]
	@test -n "$(MODEL)" || { echo "convert: set MODEL (a built-in name or a Hugging Face directory)," \
	  "e.g. make convert MODEL=tiny PATTERN=6:8 DTYPE=int8" >&2; exit 2; }
	$(call cli,convert,checkpoint conversion,convert,'$(MODEL)' $(if $(PATTERN),--pattern '$(PATTERN)') \
	  $(if $(DTYPE),--dtype '$(DTYPE)') $(if $(OUT),--out '$(OUT)') $(ARGS))

bench-decode: $(STAMP) ## end-to-end decode tokens/s, dense vs patterns (CPU: reference backend, tiny model); MODELS= DTYPES= PATTERNS= M=
	$(call cli,bench-decode,decode benchmark,bench decode,--results '$(RESULTS)' --search '$(SEARCH)' \
	  $(if $(MODELS),--models '$(MODELS)') $(if $(DTYPES),--dtypes '$(DTYPES)') \
	  $(if $(PATTERNS),--patterns '$(PATTERNS)') $(if $(M),--m '$(M)') $(ARGS))

tune-coarse: $(STAMP) ## offline tuning, dense GEMM + quant kernels (SEARCH=dir)
	$(call cli,tune-coarse,offline tuning,tune coarse,--search '$(SEARCH)' $(ARGS))

tune-fine: $(STAMP) ## offline tuning, sparse GEMM + slide kernels (SEARCH=dir)
	$(call cli,tune-fine,offline tuning,tune fine,--search '$(SEARCH)' $(ARGS))

bench-kernel: $(STAMP) ## GEMM kernel benchmark, cuBLASLt vs cuSPARSELt
	$(call cli,bench-kernel,kernel benchmark,bench kernel,--results '$(RESULTS)' $(ARGS))

bench-quant: $(STAMP) ## quant(+slide) kernel benchmark against a copy of the same bytes
	$(call cli,bench-quant,quant kernel benchmark,bench quant,--results '$(RESULTS)' $(ARGS))

bench-prefill: $(STAMP) ## end-to-end prefill tokens/s, dense vs patterns; MODELS= DTYPES= PATTERNS= M=
	$(call cli,bench-prefill,prefill benchmark,bench prefill,--results '$(RESULTS)' --search '$(SEARCH)' \
	  $(if $(MODELS),--models '$(MODELS)') $(if $(DTYPES),--dtypes '$(DTYPES)') \
	  $(if $(PATTERNS),--patterns '$(PATTERNS)') $(if $(M),--m '$(M)') $(ARGS))

pipeline: $(STAMP) ## the whole resumable sweep (convert, tune, bench) with a ledger
	$(call cli,pipeline,pipeline,pipeline,--results '$(RESULTS)' $(ARGS))

report: $(STAMP) ## REPORT.md + plots from results trees (RESULTS="dir1 dir2" merges machines)
	$(call cli,report,report,report,$(RESULTS) $(ARGS))

smoke-gpu: $(STAMP) ## quick check of the GPU backends and kernels on this machine's GPU
	$(call cli,smoke-gpu,GPU smoke test,smoke,--results '$(RESULTS)' $(ARGS))

docker-build: ## build the docker image (needs docker/Dockerfile and a Docker engine)
	@test -f docker/Dockerfile || { echo "docker-build: not built yet (issue: docker images); docker/Dockerfile does not exist" >&2; exit 1; }
	docker build -f docker/Dockerfile -t slidesparse:latest .

clean-venv: ## remove the virtual environment
	rm -rf $(VENV)
