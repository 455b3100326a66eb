"""Loading nvmath-python's cuBLASLt / cuSPARSELt bindings, and which library copies are in use.

``nvmath.bindings.cublasLt`` / ``.cusparseLt`` import on any machine; the shared libraries load on
the first call, through cuda.pathfinder, which first reuses a copy already loaded in the process.
torch loads its own libcusparseLt (and cuBLASLt) when it is imported, so torch is imported first:
then torch and nvmath share one copy of each library, and the version reported here is the version
both use. :func:`loaded_copies` reads the process map so a second copy would be visible.

Nothing here runs at import time beyond ``import torch``; every function that needs CUDA or the
bindings raises RuntimeError with what is missing and what to do.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import torch  # first: see the module docstring

NVMATH_PIN = "nvmath-python==1.0.*"


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{what} needs a CUDA GPU, but torch {torch.__version__} sees none; "
            "on this machine use the 'reference' GEMM backend")


def _import_binding(name: str) -> ModuleType:
    try:
        import nvmath.bindings  # noqa: F401, PLC0415
        return __import__(f"nvmath.bindings.{name}", fromlist=[name])
    except ImportError as e:
        raise RuntimeError(f"cannot import nvmath.bindings.{name} ({e}); install {NVMATH_PIN}") from e


@functools.cache
def cusparselt() -> ModuleType:
    """The ``nvmath.bindings.cusparseLt`` module (import only; the library loads on first call)."""
    return _import_binding("cusparseLt")


@functools.cache
def cublaslt() -> ModuleType:
    """The ``nvmath.bindings.cublasLt`` module (import only; the library loads on first call)."""
    return _import_binding("cublasLt")


def _nvmath_enums():
    import nvmath  # noqa: PLC0415
    from nvmath.bindings import cublas, cusparse  # noqa: PLC0415
    return nvmath, cublas, cusparse


def _load_error(lib: str, e: Exception) -> RuntimeError:
    hint = ("cuSPARSELt ships with CUDA builds of torch (nvidia-cusparselt-cu12/cu13 wheels); "
            "check torch.backends.cusparselt.is_available()") if lib == "cuSPARSELt" else \
        "cuBLASLt ships with the CUDA toolkit / nvidia-cublas wheels that torch uses"
    return RuntimeError(f"cannot load {lib} through nvmath-python ({type(e).__name__}: {e}); {hint}")


def _version_from_properties(mod: ModuleType) -> str:
    nvmath, _, _ = _nvmath_enums()
    P = nvmath.LibraryPropertyType
    return ".".join(str(mod.get_property(p)) for p in (P.MAJOR_VERSION, P.MINOR_VERSION, P.PATCH_LEVEL))


def cusparselt_version() -> str:
    """'0.8.0': the cuSPARSELt the bindings loaded (loads it if needed)."""
    try:
        return _version_from_properties(cusparselt())
    except RuntimeError:
        raise
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear error
        raise _load_error("cuSPARSELt", e) from e


def cublaslt_version() -> str:
    """'13.1.0': the cuBLASLt the bindings loaded (loads it if needed)."""
    try:
        v = int(cublaslt().get_version())  # major*10000 + minor*100 + patch
    except RuntimeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _load_error("cuBLASLt", e) from e
    return f"{v // 10000}.{(v // 100) % 100}.{v % 100}"


def loaded_copies(stem: str) -> list[str]:
    """Distinct files of this process whose name starts with ``stem`` (e.g. 'libcusparseLt'), per /proc/self/maps."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    seen: list[str] = []
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and Path(parts[5]).name.startswith(stem) and parts[5] not in seen:
            seen.append(parts[5])
    return seen


def torch_cusparselt_version() -> str:
    """The cuSPARSELt version torch reports ('' when torch has none)."""
    try:
        v = torch.backends.cusparselt.version()
    except Exception:  # noqa: BLE001 - informative only
        return ""
    if not v:
        return ""
    v = int(v)
    return f"{v // 1000}.{(v // 100) % 10}.{v % 100}"


def library_report(which: tuple[str, ...] = ("cublaslt", "cusparselt")) -> dict:
    """Versions and loaded files of the GEMM libraries, for result rows and ``describe()``."""
    out: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda or ""}
    try:
        import nvmath  # noqa: PLC0415
        out["nvmath"] = nvmath.__version__
    except ImportError:
        out["nvmath"] = ""
    if "cublaslt" in which:
        out["cublaslt"] = cublaslt_version()
        out["cublaslt_files"] = loaded_copies("libcublasLt")
    if "cusparselt" in which:
        out["cusparselt"] = cusparselt_version()
        out["cusparselt_files"] = loaded_copies("libcusparseLt")
        out["torch_cusparselt"] = torch_cusparselt_version()
        if len(out["cusparselt_files"]) > 1:
            out["warning"] = ("several libcusparseLt copies are loaded in this process: "
                              + ", ".join(out["cusparselt_files"]))
    return out
