"""Triton GPU kernels: per-token quant (+ activation lifting, + fused RMSNorm / SiLU-and-mul
producers) and dequant (+ bias), bit-exact against the torch references.

    from slidesparse.kernels import TritonOps      # ReferenceOps-compatible, plus fused producers
    from slidesparse.kernels import config_for, tune_kernel

Modules: ``triton_kernels`` (the @triton.jit code), ``launch`` (checked launches with an explicit
config), ``ops`` (TritonOps), ``configs`` (defaults + search/<hwtag>/kernels.json), ``tune``
(timing candidate configs), ``timing`` (CUDA-event helpers), ``reference`` (torch definitions of
the fused producers; no Triton needed).

Importing this package does not import Triton; the attributes below load it on first use, so the
CPU-only parts (``reference``, ``configs``) work where Triton is absent.
"""

from __future__ import annotations

_LAZY = {
    "TritonOps": ("ops", "TritonOps"),
    "config_for": ("configs", "config_for"),
    "default_config": ("configs", "default_config"),
    "KernelConfigs": ("configs", "KernelConfigs"),
    "tune_kernel": ("tune", "tune_kernel"),
    "tune_model_kernels": ("tune", "tune_model_kernels"),
    "model_kernel_jobs": ("tune", "model_kernel_jobs"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
