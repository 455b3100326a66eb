"""2:4 sparse GEMM on cuSPARSELt (nvmath-python bindings): where SlideSparse's speed comes from.

Layout "TN, column-major", as the dense backend: the row-major 2:4 weight W [N, K] (2 non-zeros
in every 4 along K; K is the slid K') is the *structured* operand, described as a column-major
[K, N] matrix (ld = K) used transposed (so the 2:4 runs along the reduction dim); the activation
X [M, K] is a dense column-major [K, M] matrix (ld = K) used as is; D is column-major [N, M]
(ld = N) = row-major Y [M, N]. Types: INT8 -> int32 (exact) or bf16 (COMPUTE_32I) and FP8 e4m3 ->
bf16 / fp32 (COMPUTE_32F); alpha / beta are host float32 scalars (1, 0) for every type.

Shape rules (8-bit types): N % 32 == 0 and K % 32 == 0 for the structured weight (checked at
``prepare`` with a clear ValueError); M is rounded up to a multiple of 16 for the dense operand:
an M that is already a multiple of 16 runs in place; any other M runs through a per-thread staging
buffer for X (and for D when the caller passes ``out``), so callers that pad M (the quant kernels
do) avoid the copies. With ``out=None`` the result is a [M, N] view of a [M_pad, N] allocation.

Compression decision: the weight is compressed ONCE, at ``prepare``, with the plan-independent
``cusparseLtSpMMACompress2`` (descriptor-based: the structured descriptor and op are the same for
every plan of this weight), after ``cusparseLtSpMMAPruneCheck2`` accepted it. One compressed copy
serves every algorithm config and every M. This rests on the library's compressed format being
shared by its kernels; the GPU tests check it for every config id (bit-exact INT8 results, and the
compressed bytes equal to a plan-based ``cusparseLtSpMMACompress`` per config: both held for all 25
config ids on an H100 with cuSPARSELt 0.8.0), and the tuner checks every candidate's output against
a reference and drops any that disagrees.

Plans: one per (N, K, M_pad, dtype, out dtype, alpha vector, config), cached (``plan_cache``); each
plan owns its descriptors and its own algorithm selection (destroying a plan invalidates the
selection it was built from, so a selection is never reused). The config comes from the tuning DB
(M bucket) or is the library default (an untouched selection: config 0, split-K -1 = the library's
own split-K choice). One handle per thread and device; the workspace belongs to that context and
grows only when a plan is built (first call for a shape, or ``warmup``), never during CUDA-graph
capture. A cached call makes one library call on torch's current stream: no allocation when
``out`` is given (and M % 16 == 0, or the staging buffer exists), no host sync, CUDA-graph
capturable (~13 us of host time per call at M = 64 on an H100 host).

``alpha``: an optional per-output-channel float32 scale [N] applied in the GEMM epilogue
(ALPHA_VECTOR_SCALING): D[m, n] = alpha[n] * acc[m, n], for bf16 / fp32 outputs. It folds the weight
scale into the GEMM for the "whole linear layer" view.
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
from .plan_cache import M_ALIGN_SPARSE, LruCache, SparseConfig, dtype_name
from .tuning_db import TuningStaleWarning, TuningStore, check_versions

SPARSE_ALIGN = 32  # N and K of the 8-bit structured operand
DESC_ALIGN = 16    # bytes, the alignment every descriptor declares

_ONE_F32, _ZERO_F32 = host_scalar(1.0, np.float32), host_scalar(0.0, np.float32)
_ONE_F32_PTR, _ZERO_F32_PTR = _ONE_F32.ctypes.data, _ZERO_F32.ctypes.data
_ENABLE = host_scalar(1, np.int32)


def first_2to4_violation(w: torch.Tensor) -> tuple[int, int] | None:
    """(row, first column of the quartet) of the first group of 4 along K holding > 2 non-zeros."""
    from ..sparsify import _nonzero_mask  # noqa: PLC0415 - the one definition of "non-zero" (fp8 -0 is zero)

    bad = _nonzero_mask(w).view(w.shape[0], -1, 4).sum(-1) > 2
    if not bool(bad.any()):
        return None
    r, g = (int(v) for v in bad.nonzero()[0])
    return r, 4 * g


def validate_sparse_weight(w_q: torch.Tensor, backend: str = "cusparselt") -> None:
    """The checks ``prepare`` makes before the library sees the weight (runs on any device):
    2-D int8 / float8_e4m3fn, N % 32 == 0, K % 32 == 0, 2:4 along K."""
    from ..quant import torch_qdtype  # noqa: PLC0415

    if w_q.dim() != 2:
        raise ValueError(f"{backend}: weight must be 2-D [N, K], got {tuple(w_q.shape)}")
    if w_q.dtype not in (torch_qdtype("int8"), torch_qdtype("fp8")):
        raise ValueError(f"{backend}: weight dtype must be int8 or float8_e4m3fn, got {w_q.dtype}")
    n, k = w_q.shape
    if n % SPARSE_ALIGN or k % SPARSE_ALIGN or n == 0 or k == 0:
        raise ValueError(f"{backend}: weight [N={n}, K={k}] needs N and K positive multiples of {SPARSE_ALIGN} "
                         "(cuSPARSELt's rule for the 8-bit structured operand); K is the slid K")
    bad = first_2to4_violation(w_q)
    if bad is not None:
        raise ValueError(f"{backend}: weight is not 2:4 along K: row {bad[0]}, columns {bad[1]}..{bad[1] + 3} "
                         "hold more than 2 non-zeros; prune and slide it first (slidesparse.prune / slide)")


def _enums():
    nvmath, _, cusparse = libs._nvmath_enums()
    cs = libs.cusparselt()
    C = nvmath.CudaDataType
    return {
        "cs": cs,
        "in": {"int8": C.CUDA_R_8I, "fp8": C.CUDA_R_8F_E4M3},
        "out": {torch.int32: C.CUDA_R_32I, torch.bfloat16: C.CUDA_R_16BF, torch.float32: C.CUDA_R_32F},
        "compute": {"int8": cs.ComputeType.COMPUTE_32I, "fp8": cs.ComputeType.COMPUTE_32F},
        "col": int(cusparse.Order.COL), "op_t": int(cusparse.Operation.TRANSPOSE),
        "op_n": int(cusparse.Operation.NON_TRANSPOSE), "sp50": int(cs.Sparsity.SPARSITY_50_PERCENT),
    }


def _get_alg_attr(cs, handle: int, sel: int, attr) -> int:
    v = np.zeros(1, dtype=np.int32)
    cs.matmul_alg_get_attribute(handle, sel, attr, v.ctypes.data, v.nbytes)
    return int(v[0])


def _set_alg_attr(cs, handle: int, sel: int, attr, value: int) -> None:
    v = np.array([value], dtype=np.int32)
    cs.matmul_alg_set_attribute(handle, sel, attr, v.ctypes.data, v.nbytes)


class _SparsePlan:
    """Descriptors, algorithm selection and plan for one problem; owns all of them."""

    __slots__ = ("cs", "handle", "ma", "mb", "mc", "desc", "sel", "plan", "workspace", "config", "max_id",
                 "source")

    def __init__(self, E: dict, handle: int, n: int, k: int, m_pad: int, qd: str, out_dtype: torch.dtype,
                 alpha_vector: bool, config: SparseConfig | None):
        cs = self.cs = E["cs"]
        self.handle = handle
        self.ma = self.mb = self.mc = self.desc = self.sel = self.plan = 0
        self.workspace = 0
        self.source = ""
        try:
            in_t, out_t, col = E["in"][qd], E["out"][out_dtype], E["col"]
            self.ma = cs.structured_descriptor_init(handle, k, n, k, DESC_ALIGN, in_t, col, E["sp50"])
            self.mb = cs.dense_descriptor_init(handle, k, m_pad, k, DESC_ALIGN, in_t, col)
            self.mc = cs.dense_descriptor_init(handle, n, m_pad, n, DESC_ALIGN, out_t, col)
            self.desc = cs.matmul_descriptor_init(handle, E["op_t"], E["op_n"], self.ma, self.mb, self.mc, self.mc,
                                                  E["compute"][qd])
            if alpha_vector:
                cs.matmul_desc_set_attribute(handle, self.desc, cs.MatmulDescAttribute.ALPHA_VECTOR_SCALING,
                                             _ENABLE.ctypes.data, _ENABLE.nbytes)
            self.sel = cs.matmul_alg_selection_init(handle, self.desc, cs.MatmulAlg.DEFAULT)
            A = cs.MatmulAlgAttribute
            self.max_id = _get_alg_attr(cs, handle, self.sel, A.CONFIG_MAX_ID)
            if config is not None:
                # SPLIT_K is always set: an untouched selection defaults to -1 (the library's split-K heuristic)
                _set_alg_attr(cs, handle, self.sel, A.CONFIG_ID, config.alg_id)
                _set_alg_attr(cs, handle, self.sel, A.SPLIT_K, config.split_k)
                if config.split_k_mode:
                    _set_alg_attr(cs, handle, self.sel, A.SPLIT_K_MODE, config.split_k_mode)
            self.plan = cs.matmul_plan_init(handle, self.desc, self.sel)
            self.workspace = int(cs.matmul_get_workspace(handle, self.plan))
            self.config = self.read_config()
        except BaseException:
            self.destroy()
            raise

    def read_config(self) -> SparseConfig:
        cs, h, A = self.cs, self.handle, self.cs.MatmulAlgAttribute
        return SparseConfig(_get_alg_attr(cs, h, self.sel, A.CONFIG_ID), _get_alg_attr(cs, h, self.sel, A.SPLIT_K),
                            _get_alg_attr(cs, h, self.sel, A.SPLIT_K_MODE))

    def destroy(self) -> None:
        cs = self.cs
        # plan first: it refers to the selection and the descriptors
        for attr, fn in (("plan", cs.matmul_plan_destroy), ("sel", cs.matmul_alg_selection_destroy),
                         ("desc", cs.matmul_descriptor_destroy), ("mc", cs.mat_descriptor_destroy),
                         ("mb", cs.mat_descriptor_destroy), ("ma", cs.mat_descriptor_destroy)):
            h = getattr(self, attr)
            if h:
                setattr(self, attr, 0)
                fn(h)


class _GrowBuffer:
    """Grow-only flat staging buffer (doubling); old buffers are kept alive for captured graphs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buf: torch.Tensor | None = None
        self.retired: list[torch.Tensor] = []

    def view(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        nbytes = rows * cols * dtype.itemsize
        if self.buf is None or self.buf.numel() < nbytes:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError("cuSPARSELt staging buffer for M % 16 != 0 cannot grow during CUDA-graph "
                                   "capture: call warmup() for these M values first, or pad M to 16")
            size = max(nbytes, 2 * self.buf.numel() if self.buf is not None else 0)
            if self.buf is not None:
                self.retired.append(self.buf)
            self.buf = torch.zeros(size, dtype=torch.uint8, device=self.device)
        return self.buf[:nbytes].view(dtype).view(rows, cols)


class _LtContext:
    def __init__(self, cs, device_index: int, workspace_bytes: int, capacity: int):
        self.cs = cs
        self.device = torch.device("cuda", device_index)
        self.handle = cs.init()
        self.plans = LruCache(capacity, on_evict=_SparsePlan.destroy)
        self.workspace = Workspace(self.device, workspace_bytes)
        self.streams = np.zeros(1, dtype=np.uintp)  # cudaStream_t array of one, for cusparseLtMatmul
        self.streams_ptr = self.streams.ctypes.data
        self.x_stage = _GrowBuffer(self.device)
        self.d_stage = _GrowBuffer(self.device)

    def close(self) -> None:
        self.plans.clear()
        if self.handle:
            h, self.handle = self.handle, 0
            self.cs.destroy(h)


class CusparseLtBackend(GemmBackend):
    """2:4 sparse W8A8 GEMM on cuSPARSELt. ``tuning``: where tuned configs come from (None: library default)."""

    name = "cusparselt"
    sparse = True
    alpha_vector = True  # ALPHA_VECTOR_SCALING: D = alpha[n] * acc (bf16 / fp32 outputs)

    def __init__(self, *, tuning: TuningStore | None = None, workspace_bytes: int = 32 * MIB,
                 max_plans: int = 1024, m_align: int = M_ALIGN_SPARSE):
        libs.require_cuda("the cusparselt GEMM backend")
        try:
            self._E = _enums()
            self._version = libs.cusparselt_version()  # loads the library now: a failure is one clear error here
        except RuntimeError:
            raise
        except Exception as e:  # noqa: BLE001
            raise libs._load_error("cuSPARSELt", e) from e
        if m_align < 1:
            raise ValueError(f"m_align must be >= 1, got {m_align}")
        self.tuning = tuning
        self.workspace_bytes = int(workspace_bytes)
        self.m_align = int(m_align)
        self._ctxs = ThreadContexts(lambda dev: _LtContext(self._E["cs"], dev, self.workspace_bytes, max_plans))
        self._cs = self._E["cs"]
        self._stream = raw_stream_getter()
        self._stale_checked: set = set()

    def out_dtypes(self, qdtype: str) -> tuple[torch.dtype, ...]:
        # int32 first: exact, and the same output type as the dense baseline (fair comparison)
        return (torch.int32, torch.bfloat16) if qdtype == "int8" else (torch.bfloat16, torch.float32)

    # --- placement --------------------------------------------------------------------------
    def prepare(self, w_q: torch.Tensor) -> GemmWeight:
        """Check (shape, 2:4 by torch, then the library's prune check) and compress the weight once."""
        qd = self._check_weight(w_q)
        if not w_q.is_cuda:
            raise ValueError(f"{self.name}: weight must be on a CUDA device, got {w_q.device}")
        validate_sparse_weight(w_q, self.name)
        w = w_q.contiguous()
        check_operand(w, "weight", self.name)
        n, k = w.shape
        ctx = self._ctxs.get(w.device.index)
        self.prune_check(w, ctx)
        comp = self._compress2(w, ctx)
        return GemmWeight(n=n, k=k, qdtype=qd, data=comp,
                          extra={"compressed_bytes": comp.numel(), "compress": "SpMMACompress2",
                                 **weight_extra(comp, w.dtype, self.out_dtypes(qd))})

    def _structured(self, ctx: _LtContext, w: torch.Tensor) -> int:
        E = self._E
        n, k = w.shape
        qd = "int8" if w.dtype == torch.int8 else "fp8"
        return E["cs"].structured_descriptor_init(ctx.handle, k, n, k, DESC_ALIGN, E["in"][qd], E["col"], E["sp50"])

    def prune_check(self, w: torch.Tensor, ctx: _LtContext | None = None) -> None:
        """cusparseLtSpMMAPruneCheck2 on the weight as the GEMM will use it (op T); raises ValueError if invalid."""
        ctx = ctx or self._ctxs.get(w.device.index)
        cs, E = self._E["cs"], self._E
        sd = self._structured(ctx, w)
        try:
            # the check kernel only writes on a violation: start from 0 (= valid)
            valid = torch.zeros(1, dtype=torch.int32, device=w.device)
            cs.sp_mma_prune_check2(ctx.handle, sd, 1, E["op_t"], w.data_ptr(), valid.data_ptr(),
                                   torch.cuda.current_stream(w.device).cuda_stream)
            flag = int(valid.item())  # prepare is offline: this sync is fine
        finally:
            cs.mat_descriptor_destroy(sd)
        if flag != 0:  # the library's convention: 0 = valid
            raise ValueError(f"{self.name}: cuSPARSELt's prune check rejects the weight {tuple(w.shape)} "
                             f"(status {flag}): it is not 2:4 along K")

    def _compress2(self, w: torch.Tensor, ctx: _LtContext) -> torch.Tensor:
        cs, E = self._E["cs"], self._E
        sd = self._structured(ctx, w)
        try:
            size, buf_size = cs.sp_mma_compressed_size2(ctx.handle, sd)
            comp = torch.empty(int(size), dtype=torch.uint8, device=w.device)
            buf = torch.empty(max(int(buf_size), 1), dtype=torch.uint8, device=w.device)
            cs.sp_mma_compress2(ctx.handle, sd, 1, E["op_t"], w.data_ptr(), comp.data_ptr(), buf.data_ptr(),
                                torch.cuda.current_stream(w.device).cuda_stream)
        finally:
            cs.mat_descriptor_destroy(sd)
        return comp

    def compress_with_plan(self, w_q: torch.Tensor, config: SparseConfig | None, m: int,
                           out_dtype: torch.dtype) -> torch.Tensor:
        """The plan-based compression (cusparseLtSpMMACompress) for ``config`` — for checking that the
        shared SpMMACompress2 copy is what every config expects. Not used on the run path."""
        validate_sparse_weight(w_q, self.name)
        w = w_q.contiguous()
        ctx = self._ctxs.get(w.device.index)
        qd = "int8" if w.dtype == torch.int8 else "fp8"
        p = _SparsePlan(self._E, ctx.handle, w.shape[0], w.shape[1], self._pad(m), qd, out_dtype, False, config)
        try:
            cs = self._E["cs"]
            size, buf_size = cs.sp_mma_compressed_size(ctx.handle, p.plan)
            comp = torch.empty(int(size), dtype=torch.uint8, device=w.device)
            buf = torch.empty(max(int(buf_size), 1), dtype=torch.uint8, device=w.device)
            cs.sp_mma_compress(ctx.handle, p.plan, w.data_ptr(), comp.data_ptr(), buf.data_ptr(),
                               torch.cuda.current_stream(w.device).cuda_stream)
            torch.cuda.current_stream(w.device).synchronize()
        finally:
            p.destroy()
        return comp

    # --- the GEMM -----------------------------------------------------------------------------
    def _pad(self, m: int) -> int:
        return -(-m // self.m_align) * self.m_align

    def mm(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype, out: torch.Tensor | None = None,
           *, alpha: torch.Tensor | None = None, config: SparseConfig | None = None) -> torch.Tensor:
        """acc [M, N] = x_q [M, K] @ w^T (times ``alpha[n]`` when given). ``config``: force an algorithm."""
        if not fast_path_ok(x_q, w, out_dtype):
            self._slow_checks(x_q, w, out_dtype)
        m, n = x_q.shape[0], w.n
        dev = x_q.get_device()
        m_pad = -(-m // self.m_align) * self.m_align
        if alpha is not None:
            self._check_alpha(alpha, n, out_dtype, dev)
        if out is None:
            full = torch.empty((m_pad, n), dtype=out_dtype, device=dev)
            out, d_direct = full[:m], full
        else:
            if not out_ok(out, m, n, out_dtype, dev):
                check_out(out, m, n, out_dtype, x_q.device, self.name)
            d_direct = out if m_pad == m else None
        if m == 0:
            return out
        ctx = self._ctxs.get(dev)
        av = alpha is not None
        key = (n, w.k, m_pad, w.qdtype, out_dtype, av, config)
        p = ctx.plans.get(key)
        if p is None:
            p = self._build(ctx, n, w.k, m_pad, w.qdtype, out_dtype, av, config)
            ctx.plans.put(key, p)
        if m_pad == m:
            x_ptr = x_q.data_ptr()
        else:  # the dense operand is [K, M_pad]: stage X into a padded buffer (rows >= M are ignored)
            xs = ctx.x_stage.view(m_pad, w.k, x_q.dtype)
            xs[:m].copy_(x_q)
            x_ptr = xs.data_ptr()
        ds = d_direct if d_direct is not None else ctx.d_stage.view(m_pad, n, out_dtype)
        d = ds.data_ptr()
        ctx.streams[0] = self._stream(dev)
        self._cs.matmul(ctx.handle, p.plan, alpha.data_ptr() if av else _ONE_F32_PTR, w.data.data_ptr(), x_ptr,
                        _ZERO_F32_PTR, d, d, ctx.workspace.ptr, ctx.streams_ptr, 1)
        if d_direct is None:
            out.copy_(ds[:m])
        return out

    def _slow_checks(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype) -> None:
        self._check_input(x_q, w, out_dtype)
        check_operand(x_q, "activation", self.name)
        if w.data.device != x_q.device:
            raise ValueError(f"{self.name}: activation on {x_q.device}, weight on {w.data.device}")

    def _check_alpha(self, alpha: torch.Tensor, n: int, out_dtype: torch.dtype, dev: int) -> None:
        if out_dtype == torch.int32:
            raise ValueError(f"{self.name}: alpha (per-channel scale) needs a float output (bfloat16 / float32), "
                             "not int32")
        if alpha.dtype != torch.float32 or alpha.dim() != 1 or alpha.numel() != n:
            raise ValueError(f"{self.name}: alpha must be a float32 vector of N={n} values, got "
                             f"{alpha.dtype} {tuple(alpha.shape)}")
        if not alpha.is_cuda or alpha.get_device() != dev:
            raise ValueError(f"{self.name}: alpha is on {alpha.device}, the operands on cuda:{dev}")
        check_operand(alpha, "alpha", self.name)

    def warmup(self, w: GemmWeight, ms, out_dtype: torch.dtype, *, alpha_vector: bool = False) -> None:
        """Build plans (and staging buffers for M % 16 != 0) for these M values now, e.g. before graph capture."""
        dev = w.data.device
        ctx = self._ctxs.get(dev.index)
        for m in ms:
            m, m_pad = int(m), self._pad(int(m))
            key = (w.n, w.k, m_pad, w.qdtype, out_dtype, bool(alpha_vector), None)
            if ctx.plans.get(key) is None:
                ctx.plans.put(key, self._build(ctx, w.n, w.k, m_pad, w.qdtype, out_dtype, bool(alpha_vector), None))
            if m_pad != m:
                ctx.x_stage.view(m_pad, w.k, torch.int8 if w.qdtype == "int8" else torch.float8_e4m3fn)
                ctx.d_stage.view(m_pad, w.n, out_dtype)

    # --- plans --------------------------------------------------------------------------------
    def _build(self, ctx: _LtContext, n: int, k: int, m_pad: int, qd: str, out_dtype: torch.dtype,
               alpha_vector: bool, config: SparseConfig | None) -> _SparsePlan:
        what = f"cuSPARSELt {qd}->{dtype_name(out_dtype)} N={n} K={k} M={m_pad}"
        source = "given"
        if config is None:
            tuned = self._tuned(n, k, m_pad, qd, out_dtype)
            if tuned is not None:
                cfg = SparseConfig(tuned["alg_id"], tuned["split_k"], tuned["split_k_mode"])
                try:
                    p = _SparsePlan(self._E, ctx.handle, n, k, m_pad, qd, out_dtype, alpha_vector, cfg)
                    p.source = f"tuned(M={tuned['m_tuned']})"
                    return self._finish(ctx, p, what)
                except Exception as e:  # noqa: BLE001 - a stale entry falls back to the library default
                    warnings.warn(f"{what}: tuned config {cfg.label()} for M={tuned['m_tuned']} is not usable ({e}); "
                                  "using the library default", TuningStaleWarning, stacklevel=3)
            source = "default"
        try:
            p = _SparsePlan(self._E, ctx.handle, n, k, m_pad, qd, out_dtype, alpha_vector, config)
        except Exception as e:  # noqa: BLE001
            cfg = config.label() if config is not None else "default"
            raise RuntimeError(f"{what}: cannot build a plan with config {cfg} ({type(e).__name__}: {e})") from e
        p.source = source
        return self._finish(ctx, p, what)

    @staticmethod
    def _finish(ctx: _LtContext, p: _SparsePlan, what: str) -> _SparsePlan:
        try:
            ctx.workspace.ensure(p.workspace, what)
        except BaseException:
            p.destroy()
            raise
        return p

    def _tuned(self, n: int, k: int, m: int, qd: str, out_dtype: torch.dtype) -> dict | None:
        if self.tuning is None:
            return None
        db = self.tuning.db(self.name, qd)
        if qd not in self._stale_checked:
            self._stale_checked.add(qd)
            msg = check_versions(db, {"cusparselt": self._version})
            if msg:
                warnings.warn(msg, TuningStaleWarning, stacklevel=4)
        return db.lookup(n, k, dtype_name(out_dtype), m)

    # --- tuning support -------------------------------------------------------------------------
    def max_config_id(self, n: int, k: int, m: int, qdtype: str, out_dtype: torch.dtype,
                      device: int | None = None) -> int:
        """CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID for this problem (config ids run 0 .. max-1)."""
        ctx = self._ctxs.get(torch.cuda.current_device() if device is None else device)
        p = _SparsePlan(self._E, ctx.handle, n, k, self._pad(m), qdtype, out_dtype, False, None)
        try:
            return p.max_id
        finally:
            p.destroy()

    def search(self, x_q: torch.Tensor, w: GemmWeight, out_dtype: torch.dtype, out: torch.Tensor) -> dict:
        """cusparseLtMatmulSearch on a throw-away plan: the library's own pick {config, workspace}.
        ``x_q`` must have M % m_align == 0 rows and ``out`` [M, N]; both are overwritten / read."""
        self._check_input(x_q, w, out_dtype)
        m = x_q.shape[0]
        if m % self.m_align:
            raise ValueError(f"{self.name}: search needs M % {self.m_align} == 0, got M={m}")
        check_out(out, m, w.n, out_dtype, x_q.device, self.name)
        ctx = self._ctxs.get(x_q.device.index)
        what = f"cuSPARSELt search {w.qdtype}->{dtype_name(out_dtype)} N={w.n} K={w.k} M={m}"
        p = _SparsePlan(self._E, ctx.handle, w.n, w.k, m, w.qdtype, out_dtype, False, None)
        try:
            ctx.workspace.ensure(p.workspace, what)
            ctx.streams[0] = torch.cuda.current_stream(x_q.device).cuda_stream
            self._E["cs"].matmul_search(ctx.handle, p.plan, _ONE_F32_PTR, w.data.data_ptr(), x_q.data_ptr(),
                                        _ZERO_F32_PTR, out.data_ptr(), out.data_ptr(), ctx.workspace.ptr,
                                        ctx.streams_ptr, 1)
            torch.cuda.current_stream(x_q.device).synchronize()
            cfg = p.read_config()
            ws = int(self._E["cs"].matmul_get_workspace(ctx.handle, p.plan))
        finally:
            p.destroy()
        return {"config": cfg, "workspace": ws}

    def plan_info(self, w: GemmWeight, m: int, out_dtype: torch.dtype, config: SparseConfig | None = None,
                  *, alpha_vector: bool = False) -> dict:
        """The plan that runs (M, out dtype[, alpha vector]) for this weight's shape: the config it really
        uses, workspace, source."""
        ctx = self._ctxs.get(w.data.device.index)
        m_pad = self._pad(m)
        key = (w.n, w.k, m_pad, w.qdtype, out_dtype, bool(alpha_vector), config)
        p = ctx.plans.get(key)
        if p is None:
            p = self._build(ctx, w.n, w.k, m_pad, w.qdtype, out_dtype, bool(alpha_vector), config)
            ctx.plans.put(key, p)
        return {"config": p.config, "workspace": p.workspace, "source": p.source, "max_id": p.max_id}

    def ensure_workspace(self, nbytes: int, device: int | None = None) -> None:
        dev = torch.cuda.current_device() if device is None else device
        self._ctxs.get(dev).workspace.ensure(int(nbytes), "cuSPARSELt")

    # --- misc -----------------------------------------------------------------------------------
    def describe(self) -> dict:
        rep = libs.library_report(("cusparselt",))
        ctx = self._ctxs.get(torch.cuda.current_device())
        try:
            handle_version = int(self._E["cs"].get_version(ctx.handle))
        except Exception:  # noqa: BLE001 - informative only
            handle_version = None
        return {"backend": self.name, "library": "cuSPARSELt", "version": self._version,
                "handle_version": handle_version, **rep, "compress": "SpMMACompress2 (plan-independent)",
                "m_align": self.m_align, "workspace_bytes": self.workspace_bytes,
                "tuning": str(self.tuning.folder) if self.tuning is not None else None}

    def close(self) -> None:
        """Destroy every plan and handle this backend made (all threads). Prepared weights stay valid."""
        self._ctxs.clear()
