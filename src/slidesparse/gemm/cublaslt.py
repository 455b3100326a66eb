"""Dense GEMM on cuBLASLt (nvmath-python bindings): the baseline the sparse backend is measured against.

Layout "TN, column-major" (the only one cuBLASLt runs for 8-bit inputs): the row-major weight
W [N, K] is described as a column-major [K, N] matrix (ld = K) used transposed, the row-major
activation X [M, K] as a column-major [K, M] matrix (ld = K) used as is, and D = op(W) @ X is a
column-major [N, M] matrix (ld = N), which is exactly the row-major Y [M, N] = X @ W^T.

Types: INT8 x INT8 -> int32 (COMPUTE_32I, scale type 32I, int32 host alpha = 1 / beta = 0: exact;
cuBLASLt has no INT8 -> bf16 path on Hopper) and FP8 e4m3 -> bf16 / fp32 (COMPUTE_32F, scale 32F).

Plans: the matmul descriptor, the three layouts and the algorithm are built once per
(N, K, M, dtype, out dtype) and cached (see ``plan_cache``: layouts carry M, so one plan per exact
M; building is host-only work). The algorithm comes from the tuning DB (M bucket; re-validated with
cublasLtMatmulAlgoCheck) or else the heuristic's first choice among the algorithms that fit the
workspace (32 MiB by default, per thread and device). A cached call makes one library call: no
allocation when ``out`` is given, no host sync, on torch's current stream, so it can be captured in
a CUDA graph (~13 us of host time per call at M = 64 on an H100 host).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from . import libs
from ._gpu import (
    MIB, ThreadContexts, Workspace, check_operand, check_out, fast_path_ok, host_scalar, out_ok, raw_stream_getter,
    weight_extra,
)
from .base import GemmBackend, GemmWeight
from .plan_cache import LruCache, dtype_name
from .tuning_db import TuningStaleWarning, TuningStore, check_versions, decode_algo, encode_algo

DENSE_ALIGN = 16  # N and K: FP8 and 8-bit IMMA want 16-element aligned leading dimensions

_ONE_I32, _ZERO_I32 = host_scalar(1, np.int32), host_scalar(0, np.int32)
_ONE_F32, _ZERO_F32 = host_scalar(1.0, np.float32), host_scalar(0.0, np.float32)
_ONE_I32_PTR, _ZERO_I32_PTR = _ONE_I32.ctypes.data, _ZERO_I32.ctypes.data
_ONE_F32_PTR, _ZERO_F32_PTR = _ONE_F32.ctypes.data, _ZERO_F32.ctypes.data


def validate_dense_weight(w_q: torch.Tensor, backend: str = "cublaslt") -> None:
    """The shape / dtype checks ``prepare`` makes (runs on any device): 2-D int8 / float8_e4m3fn,
    N and K positive multiples of 16."""
    from ..quant import torch_qdtype  # noqa: PLC0415

    if w_q.dim() != 2:
        raise ValueError(f"{backend}: weight must be 2-D [N, K], got {tuple(w_q.shape)}")
    if w_q.dtype not in (torch_qdtype("int8"), torch_qdtype("fp8")):
        raise ValueError(f"{backend}: weight dtype must be int8 or float8_e4m3fn, got {w_q.dtype}")
    n, k = w_q.shape
    if n % DENSE_ALIGN or k % DENSE_ALIGN or n == 0 or k == 0:
        raise ValueError(f"{backend}: weight [N={n}, K={k}] needs N and K positive multiples of {DENSE_ALIGN} "
                         "(cuBLASLt's 8-bit / FP8 alignment); pad K with zeros (ops.gemm_k)")


def _enums():
    nvmath, cublas, _ = libs._nvmath_enums()
    lt = libs.cublaslt()
    C = nvmath.CudaDataType
    return {
        "lt": lt,
        "in": {"int8": C.CUDA_R_8I, "fp8": C.CUDA_R_8F_E4M3},
        "out": {torch.int32: C.CUDA_R_32I, torch.bfloat16: C.CUDA_R_16BF, torch.float32: C.CUDA_R_32F},
        "compute": {"int8": (cublas.ComputeType.COMPUTE_32I, C.CUDA_R_32I),
                    "fp8": (cublas.ComputeType.COMPUTE_32F, C.CUDA_R_32F)},
        "op_t": int(cublas.Operation.T), "op_n": int(cublas.Operation.N),
    }


def algo_attrs(lt, algo_arr: np.ndarray) -> dict:
    """Readable config attributes of a cuBLASLt algo (for the DB; the 64 bytes are what runs)."""
    out = {}
    written = np.zeros(1, dtype=np.uint64)
    for attr in lt.MatmulAlgoConfigAttribute:
        try:
            dt = np.dtype(lt.get_matmul_algo_config_attribute_dtype(attr))
            buf = np.zeros(1, dtype=dt)
            lt.matmul_algo_config_get_attribute(algo_arr.ctypes.data, attr, buf.ctypes.data, buf.nbytes,
                                                written.ctypes.data)
            out[attr.name.lower()] = int(buf[0])
        except Exception:  # noqa: BLE001 - attributes differ between cuBLASLt versions; informative only
            continue
    return out


class _DensePlan:
    """Descriptors + algorithm for one (N, K, M, dtype, out dtype)."""

    __slots__ = ("lt", "desc", "la", "lb", "lc", "algo", "algo_ptr", "workspace", "source", "alpha_ptr", "beta_ptr")

    def __init__(self, E: dict, n: int, k: int, m: int, qdtype: str, out_dtype: torch.dtype):
        lt = self.lt = E["lt"]
        self.desc = self.la = self.lb = self.lc = 0
        self.algo = None
        self.algo_ptr = 0
        self.workspace = 0
        self.source = ""
        compute, scale = E["compute"][qdtype]
        # host scalars in the scale type (32I for INT8, 32F for FP8); module-level arrays, so the pointers stay valid
        self.alpha_ptr, self.beta_ptr = ((_ONE_I32_PTR, _ZERO_I32_PTR) if qdtype == "int8"
                                         else (_ONE_F32_PTR, _ZERO_F32_PTR))
        try:
            self.desc = lt.matmul_desc_create(compute, scale)
            for attr, op in ((lt.MatmulDescAttribute.TRANSA, E["op_t"]), (lt.MatmulDescAttribute.TRANSB, E["op_n"])):
                v = np.array([op], dtype=np.int32)
                lt.matmul_desc_set_attribute(self.desc, attr, v.ctypes.data, v.nbytes)
            in_t, out_t = E["in"][qdtype], E["out"][out_dtype]
            self.la = lt.matrix_layout_create(in_t, k, n, k)    # W: col-major [K, N], op T
            self.lb = lt.matrix_layout_create(in_t, k, m, k)    # X: col-major [K, M], op N
            self.lc = lt.matrix_layout_create(out_t, n, m, n)   # C = D: col-major [N, M]
        except BaseException:
            self.destroy()
            raise

    def set_algo(self, raw: bytes, workspace: int, source: str) -> None:
        self.algo = np.frombuffer(raw, dtype=np.dtype(self.lt.matmul_algo_dtype)).copy()
        self.algo_ptr = self.algo.ctypes.data
        self.workspace = int(workspace)
        self.source = source

    def check(self, handle: int, raw: bytes) -> int:
        """cublasLtMatmulAlgoCheck: the workspace ``raw`` needs here (raises if it cannot run)."""
        algo = np.frombuffer(raw, dtype=np.dtype(self.lt.matmul_algo_dtype)).copy()
        res = np.zeros(1, dtype=np.dtype(self.lt.matmul_heuristic_result_dtype))
        self.lt.matmul_algo_check(handle, self.desc, self.la, self.lb, self.lc, self.lc, algo.ctypes.data,
                                  res.ctypes.data)
        return int(res["workspace_size"][0])

    def heuristic(self, handle: int, count: int, max_workspace: int) -> list[tuple[bytes, int, float]]:
        """Up to ``count`` algorithms, best-first: (64 algo bytes, workspace, waves)."""
        lt = self.lt
        pref = lt.matmul_preference_create()
        try:
            ws = np.array([max_workspace], dtype=np.uint64)
            lt.matmul_preference_set_attribute(pref, lt.MatmulPreferenceAttribute.MAX_WORKSPACE_BYTES,
                                               ws.ctypes.data, ws.nbytes)
            res = np.zeros(count, dtype=np.dtype(lt.matmul_heuristic_result_dtype))
            got = np.zeros(1, dtype=np.int32)
            lt.matmul_algo_get_heuristic(handle, self.desc, self.la, self.lb, self.lc, self.lc, pref, count,
                                         res.ctypes.data, got.ctypes.data)
        finally:
            lt.matmul_preference_destroy(pref)
        out = []
        for i in range(int(got[0])):
            if int(res["state"][i]) == 0:  # CUBLAS_STATUS_SUCCESS
                out.append((res["algo"][i].tobytes(), int(res["workspace_size"][i]), float(res["waves_count"][i])))
        return out

    def destroy(self) -> None:
        lt = self.lt
        for attr, fn in (("lc", lt.matrix_layout_destroy), ("lb", lt.matrix_layout_destroy),
                         ("la", lt.matrix_layout_destroy), ("desc", lt.matmul_desc_destroy)):
            h = getattr(self, attr)
            if h:
                setattr(self, attr, 0)
                fn(h)


class _LtContext:
    def __init__(self, lt, device_index: int, workspace_bytes: int, capacity: int):
        self.lt = lt
        self.device = torch.device("cuda", device_index)
        self.handle = lt.create()
        self.plans = LruCache(capacity, on_evict=_DensePlan.destroy)
        self.workspace = Workspace(self.device, workspace_bytes)

    def close(self) -> None:
        self.plans.clear()
        if self.handle:
            h, self.handle = self.handle, 0
            self.lt.destroy(h)


class CublasLtBackend(GemmBackend):
    """Dense W8A8 GEMM on cuBLASLt. ``tuning``: where tuned algorithms come from (None: heuristic only)."""

    name = "cublaslt"
    sparse = False

    def __init__(self, *, tuning: TuningStore | None = None, workspace_bytes: int = 32 * MIB,
                 max_plans: int = 4096):
        libs.require_cuda("the cublaslt GEMM backend")
        try:
            self._E = _enums()
            self._version = libs.cublaslt_version()  # loads the library now: a failure is one clear error here
        except RuntimeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise libs._load_error("cuBLASLt", e) from e
        self.tuning = tuning
        self.workspace_bytes = int(workspace_bytes)
        self._ctxs = ThreadContexts(lambda dev: _LtContext(self._E["lt"], dev, self.workspace_bytes, max_plans))
        self._lt = self._E["lt"]
        self._stream = raw_stream_getter()
        self._stale_checked: set = set()

    # --- placement --------------------------------------------------------------------------
    def prepare(self, w_q: torch.Tensor) -> GemmWeight:
        qd = self._check_weight(w_q)
        n, k = w_q.shape
        validate_dense_weight(w_q, self.name)
        if not w_q.is_cuda:
            raise ValueError(f"{self.name}: weight must be on a CUDA device, got {w_q.device}")
        data = w_q.contiguous()
        check_operand(data, "weight", self.name)
        return GemmWeight(n=n, k=k, qdtype=qd, data=data, extra=weight_extra(data, data.dtype, self.out_dtypes(qd)))

    # --- the GEMM -----------------------------------------------------------------------------
    def mm(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype, out: torch.Tensor | None = None,
           *, algo: bytes | None = None) -> torch.Tensor:
        """acc [M, N] = x_q [M, K] @ w^T. ``algo``: run these 64 algo bytes instead of the tuned/heuristic one."""
        if not fast_path_ok(x_q, w, out_dtype):
            self._check_input(x_q, w, out_dtype)
            check_operand(x_q, "activation", self.name)
            if w.data.device != x_q.device:
                raise ValueError(f"{self.name}: activation on {x_q.device}, weight on {w.data.device}")
        m, n = x_q.shape[0], w.n
        dev = x_q.get_device()
        if out is None:
            out = torch.empty((m, n), dtype=out_dtype, device=dev)
        elif not out_ok(out, m, n, out_dtype, dev):
            check_out(out, m, n, out_dtype, x_q.device, self.name)
        if m == 0:
            return out
        ctx = self._ctxs.get(dev)
        key = (n, w.k, m, w.qdtype, out_dtype, algo)
        p = ctx.plans.get(key)
        if p is None:
            p = self._build(ctx, n, w.k, m, w.qdtype, out_dtype, algo)
            ctx.plans.put(key, p)
        d = out.data_ptr()
        ws = ctx.workspace
        self._lt.matmul(ctx.handle, p.desc, p.alpha_ptr, w.data.data_ptr(), p.la, x_q.data_ptr(), p.lb,
                        p.beta_ptr, d, p.lc, d, p.lc, p.algo_ptr, ws.ptr, ws.size, self._stream(dev))
        return out

    def warmup(self, w: GemmWeight, ms, out_dtype: torch.dtype) -> None:
        """Build the plans for these M values now (before CUDA-graph capture, for instance)."""
        ctx = self._ctxs.get(w.data.device.index)
        for m in ms:
            key = (w.n, w.k, int(m), w.qdtype, out_dtype, None)
            if ctx.plans.get(key) is None:
                ctx.plans.put(key, self._build(ctx, w.n, w.k, int(m), w.qdtype, out_dtype, None))

    # --- plans --------------------------------------------------------------------------------
    def _build(self, ctx: _LtContext, n: int, k: int, m: int, qd: str, out_dtype: torch.dtype,
               algo: bytes | None) -> _DensePlan:
        what = f"cuBLASLt {qd}->{dtype_name(out_dtype)} N={n} K={k} M={m}"
        p = _DensePlan(self._E, n, k, m, qd, out_dtype)
        try:
            if algo is not None:
                try:
                    ws = p.check(ctx.handle, algo)
                except Exception as e:  # noqa: BLE001
                    raise ValueError(f"{what}: the given algorithm cannot run this problem ({e})") from e
                p.set_algo(algo, ws, "given")
            else:
                tuned = self._tuned(n, k, m, qd, out_dtype)
                if tuned is not None:
                    try:
                        raw = decode_algo(tuned["algo"])
                        p.set_algo(raw, p.check(ctx.handle, raw), f"tuned(M={tuned['m_tuned']})")
                    except Exception as e:  # noqa: BLE001 - a stale entry falls back to the heuristic
                        warnings.warn(f"{what}: tuned algorithm for M={tuned['m_tuned']} is not usable ({e}); "
                                      "using the heuristic", TuningStaleWarning, stacklevel=3)
                if p.algo is None:
                    cands = self._heuristic(ctx, p, 1, ctx.workspace.size, what)
                    p.set_algo(cands[0][0], cands[0][1], "heuristic")
            ctx.workspace.ensure(p.workspace, what)
        except BaseException:
            p.destroy()
            raise
        return p

    def _heuristic(self, ctx: _LtContext, p: _DensePlan, count: int, max_ws: int, what: str):
        try:
            cands = p.heuristic(ctx.handle, count, max_ws)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"{what}: cublasLtMatmulAlgoGetHeuristic failed ({e})") from e
        if not cands:
            raise RuntimeError(f"{what}: cuBLASLt offers no algorithm for this problem")
        return cands

    def _tuned(self, n: int, k: int, m: int, qd: str, out_dtype: torch.dtype) -> dict | None:
        if self.tuning is None:
            return None
        db = self.tuning.db(self.name, qd)
        if qd not in self._stale_checked:
            self._stale_checked.add(qd)
            msg = check_versions(db, {"cublaslt": self._version})
            if msg:
                warnings.warn(msg, TuningStaleWarning, stacklevel=4)
        return db.lookup(n, k, dtype_name(out_dtype), m)

    # --- tuning support -------------------------------------------------------------------------
    def candidates(self, n: int, k: int, m: int, qdtype: str, out_dtype: torch.dtype, count: int = 128,
                   max_workspace: int | None = None, device: int | None = None) -> list[dict]:
        """The heuristic's algorithms for this problem, best-first:
        [{"algo": 64 bytes, "workspace": bytes, "waves": float, "attrs": {...}}]."""
        dev = torch.cuda.current_device() if device is None else device
        ctx = self._ctxs.get(dev)
        p = _DensePlan(self._E, n, k, m, qdtype, out_dtype)
        try:
            what = f"cuBLASLt {qdtype}->{dtype_name(out_dtype)} N={n} K={k} M={m}"
            cands = self._heuristic(ctx, p, count, max_workspace or ctx.workspace.size, what)
        finally:
            p.destroy()
        lt = self._E["lt"]
        out = []
        for raw, ws, waves in cands:
            arr = np.frombuffer(raw, dtype=np.dtype(lt.matmul_algo_dtype)).copy()
            out.append({"algo": raw, "workspace": ws, "waves": waves, "attrs": algo_attrs(lt, arr)})
        return out

    def ensure_workspace(self, nbytes: int, device: int | None = None) -> None:
        """Grow this thread's workspace to ``nbytes`` (outside of capture)."""
        dev = torch.cuda.current_device() if device is None else device
        self._ctxs.get(dev).workspace.ensure(int(nbytes), "cuBLASLt")

    def plan_info(self, w: GemmWeight, m: int, out_dtype: torch.dtype) -> dict:
        """Which algorithm runs (M, out dtype) for this weight's shape: source, workspace, attributes."""
        ctx = self._ctxs.get(w.data.device.index)
        key = (w.n, w.k, m, w.qdtype, out_dtype, None)
        p = ctx.plans.get(key)
        if p is None:
            p = self._build(ctx, w.n, w.k, m, w.qdtype, out_dtype, None)
            ctx.plans.put(key, p)
        return {"source": p.source, "workspace": p.workspace, "algo": encode_algo(p.algo.tobytes()),
                "attrs": algo_attrs(self._E["lt"], p.algo)}

    # --- misc -----------------------------------------------------------------------------------
    def describe(self) -> dict:
        rep = libs.library_report(("cublaslt",))
        return {"backend": self.name, "library": "cuBLASLt", "version": self._version, **rep,
                "workspace_bytes": self.workspace_bytes,
                "tuning": str(self.tuning.folder) if self.tuning is not None else None}

    def close(self) -> None:
        """Destroy every plan and handle this backend made (all threads). The backend stays usable."""
        self._ctxs.clear()
