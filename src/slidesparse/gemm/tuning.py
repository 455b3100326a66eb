"""Offline algorithm search for both GEMM libraries, written into the tuning DB (``tuning_db``).

cuBLASLt: every algorithm the heuristic offers (up to ``max_candidates``, 128 by default) is timed.
cuSPARSELt: every config id 0 .. CONFIG_MAX_ID-1 x split-K in ``split_ks`` x split-K mode (modes only
for split-K != 1; split-K -1 = the library's own split-K choice), plus the library's own
cusparseLtMatmulSearch pick; INT8 -> bf16 plans are timed with the alpha vector, as the linear layers
run them. Each candidate runs once and its output is compared with the reference
GEMM (INT8 exactly, float outputs within 1e-2); a candidate that errors or disagrees is skipped and
counted, never fatal. Timing: per-call CUDA events, median (``timing.time_calls``). The fastest
passing candidate is stored as "best", the ``top`` fastest with their times beside it.

Resumable: an (N, K, out dtype, M) already in the DB is skipped, and the DB is saved (atomically)
after every M, so an interrupted tune loses at most one M.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from . import libs
from .plan_cache import SparseConfig, dtype_name
from .timing import time_calls
from .tuning_db import TuningDB, encode_algo
from .verify import matches, random_2to4, random_q, reference_mm

Progress = Callable[[str], None]

# -1: the library's split-K heuristic (cuSPARSELt 0.8 on sm90 accepts only 1 and -1; 2/4/8 are tried
# because other versions / GPUs accept them, and fail fast at plan creation where they don't)
DEFAULT_SPLIT_KS = (1, -1, 2, 4, 8)
DEFAULT_SPLIT_K_MODES = (1, 2)  # CUSPARSELT_SPLIT_K_MODE_ONE_KERNEL, _TWO_KERNELS


@dataclass
class TuneSummary:
    tuned: list[tuple[int, int, int]] = field(default_factory=list)    # (N, K, M) newly tuned
    skipped: list[tuple[int, int, int]] = field(default_factory=list)  # already in the DB
    failed: list[tuple[int, int, int, str]] = field(default_factory=list)  # no candidate passed
    candidates: int = 0
    rejected: int = 0  # candidates that errored or gave wrong results
    last_reject: str = ""  # why the latest candidate was rejected (quoted when a whole shape fails)

    def reject(self, e: BaseException) -> None:
        self.rejected += 1
        self.last_reject = f"{type(e).__name__}: {e}"[:300]


def _meta(db: TuningDB, library: str, m_list: Iterable[int], timing: dict) -> None:
    from ..hw import machine_info  # noqa: PLC0415

    info = machine_info()
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda or ""}
    versions[library] = libs.cublaslt_version() if library == "cublaslt" else libs.cusparselt_version()
    try:
        import nvmath  # noqa: PLC0415
        versions["nvmath"] = nvmath.__version__
    except ImportError:
        pass
    db.meta.update({"hwtag": info.tag(), "gpu": info.gpu_full, "cc": info.cc, "driver": info.driver,
                    "versions": versions, "timing": timing})
    db.meta["m_list"] = sorted(set(db.meta.get("m_list", [])) | {int(m) for m in m_list})


def _operands(n: int, k: int, m: int, qdtype: str, sparse: bool, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = (random_2to4 if sparse else random_q)(n, k, qdtype, "cuda", g)
    x = random_q(m, k, qdtype, "cuda", g)
    return x, w


def _ranked(results: list[dict], top: int) -> list[dict]:
    return sorted(results, key=lambda r: r["us"])[:top]


def tune_cublaslt(shapes: Iterable[tuple[int, int]], m_list: Iterable[int], qdtype: str, out_dtype: torch.dtype,
                  *, db: TuningDB, backend=None, max_candidates: int = 128, max_workspace: int = 32 << 20,
                  warmup: int = 5, repeat: int = 30, top: int = 5, flush_l2: bool = True, seed: int = 0,
                  progress: Progress | None = None) -> TuneSummary:
    """Time every heuristic candidate per (N, K, M); store the best in ``db`` (library 'cublaslt').

    ``max_workspace`` caps the candidates' workspace; it defaults to the runtime backend's buffer
    (32 MiB), so a tuned algorithm never makes the runtime grow its workspace."""
    from .cublaslt import CublasLtBackend  # noqa: PLC0415

    if db.library != "cublaslt" or db.qdtype != qdtype:
        raise ValueError(f"tune_cublaslt needs a cublaslt/{qdtype} DB, got {db.library}/{db.qdtype}")
    be = backend or CublasLtBackend(workspace_bytes=max_workspace)
    be.ensure_workspace(max_workspace)
    m_list = [int(m) for m in m_list]
    out_name = dtype_name(out_dtype)
    _meta(db, "cublaslt", m_list, {"warmup": warmup, "repeat": repeat, "flush_l2": flush_l2,
                                   "max_candidates": max_candidates, "max_workspace": max_workspace})
    summary = TuneSummary()
    for n, k in shapes:
        for m in m_list:
            if db.has(n, k, out_name, m):
                summary.skipped.append((n, k, m))
                continue
            if progress:
                progress(f"cublaslt {qdtype}->{out_name} N={n} K={k} M={m}")
            try:
                results, ncand = _dense_results(be, n, k, m, qdtype, out_dtype, max_candidates, max_workspace,
                                                seed, summary, {"warmup": warmup, "repeat": repeat,
                                                                "flush_l2": flush_l2})
            except Exception as e:  # noqa: BLE001 - this shape fails as a whole (e.g. no algorithm at all)
                summary.failed.append((n, k, m, f"{type(e).__name__}: {e}"))
                continue
            finally:
                torch.cuda.empty_cache()
            if not results:
                summary.failed.append((n, k, m, f"none of {ncand} candidates ran correctly ({summary.last_reject})"))
                continue
            ranked = _ranked(results, top)
            db.put(n, k, out_name, m, ranked[0], ranked, candidates=ncand, passed=len(results))
            db.save()
            summary.tuned.append((n, k, m))
    return summary


def _dense_results(be, n, k, m, qdtype, out_dtype, max_candidates, max_workspace, seed, summary, tkw):
    x, w_q = _operands(n, k, m, qdtype, False, seed)
    w = be.prepare(w_q)
    ref = reference_mm(x, w_q)
    out = torch.empty(m, n, dtype=out_dtype, device="cuda")
    results = []
    cands = be.candidates(n, k, m, qdtype, out_dtype, count=max_candidates, max_workspace=max_workspace)
    for rank, c in enumerate(cands):
        summary.candidates += 1
        try:
            out.fill_(-7)
            be.mm(x, w, out_dtype, out, algo=c["algo"])
            ok, why = matches(out, ref)
            if not ok:
                raise RuntimeError(why)
            t = statistics.median(time_calls(lambda c=c: be.mm(x, w, out_dtype, out, algo=c["algo"]), **tkw))
        except Exception as e:  # noqa: BLE001 - a failing candidate is skipped
            summary.reject(e)
            continue
        results.append({"algo": encode_algo(c["algo"]), "workspace": c["workspace"], "attrs": c["attrs"],
                        "us": round(t, 3), "heuristic_rank": rank})
    return results, len(cands)


def sparse_candidates(max_id: int, split_ks: Iterable[int] = DEFAULT_SPLIT_KS,
                      split_k_modes: Iterable[int] = DEFAULT_SPLIT_K_MODES) -> list[SparseConfig]:
    """Every config id x split-K x mode (mode only matters, and is only set, when split-K != 1)."""
    out = []
    for alg in range(max_id):
        for sk in split_ks:
            if sk == 1:
                out.append(SparseConfig(alg, 1, 0))
            else:
                out.extend(SparseConfig(alg, sk, mode) for mode in split_k_modes)
    return out


def alpha_vector_for(qdtype: str, out_dtype: torch.dtype) -> bool:
    """Whether the runtime runs this (input, output) dtype pair with the alpha vector: INT8 -> float is
    the linear layers' bf16 + alpha epilogue (``linear.gemm_epilogue``); FP8 and int32 outputs do not."""
    return qdtype == "int8" and out_dtype.is_floating_point


def tune_cusparselt(shapes: Iterable[tuple[int, int]], m_list: Iterable[int], qdtype: str, out_dtype: torch.dtype,
                    *, db: TuningDB, backend=None, split_ks: Iterable[int] = DEFAULT_SPLIT_KS,
                    split_k_modes: Iterable[int] = DEFAULT_SPLIT_K_MODES, include_search: bool = True,
                    warmup: int = 5, repeat: int = 30, top: int = 5, flush_l2: bool = True, seed: int = 0,
                    alpha_vector: bool | None = None, progress: Progress | None = None) -> TuneSummary:
    """Time every config id x split-K x mode (+ the library's search) per (N, K, M); K is the slid K.

    ``alpha_vector`` (default: ``alpha_vector_for(qdtype, out_dtype)``, how the runtime runs it):
    time the plans with ALPHA_VECTOR_SCALING (alpha = ones), since that is a different plan."""
    from .cusparselt import CusparseLtBackend  # noqa: PLC0415

    if db.library != "cusparselt" or db.qdtype != qdtype:
        raise ValueError(f"tune_cusparselt needs a cusparselt/{qdtype} DB, got {db.library}/{db.qdtype}")
    if alpha_vector is None:
        alpha_vector = alpha_vector_for(qdtype, out_dtype)
    be = backend or CusparseLtBackend()
    m_list = [int(m) for m in m_list]
    split_ks, split_k_modes = tuple(split_ks), tuple(split_k_modes)
    out_name = dtype_name(out_dtype)
    _meta(db, "cusparselt", m_list, {"warmup": warmup, "repeat": repeat, "flush_l2": flush_l2,
                                     "split_ks": list(split_ks), "split_k_modes": list(split_k_modes),
                                     "search": include_search, f"alpha_vector_{out_name}": bool(alpha_vector)})
    summary = TuneSummary()
    tkw = {"warmup": warmup, "repeat": repeat, "flush_l2": flush_l2}
    for n, k in shapes:
        for m in m_list:
            if db.has(n, k, out_name, m):
                summary.skipped.append((n, k, m))
                continue
            if progress:
                progress(f"cusparselt {qdtype}->{out_name} N={n} K={k} M={m}")
            try:
                results, ncand, max_id = _sparse_results(be, n, k, m, qdtype, out_dtype, split_ks, split_k_modes,
                                                         include_search, seed, summary, tkw, alpha_vector)
            except Exception as e:  # noqa: BLE001 - this shape fails as a whole (e.g. no CONFIG_MAX_ID)
                summary.failed.append((n, k, m, f"{type(e).__name__}: {e}"))
                continue
            finally:
                torch.cuda.empty_cache()
            if not results:
                summary.failed.append((n, k, m, f"none of {ncand} configs ran correctly ({summary.last_reject})"))
                continue
            ranked = _ranked(results, top)
            db.put(n, k, out_name, m, ranked[0], ranked, candidates=ncand, passed=len(results), max_id=max_id)
            db.save()
            summary.tuned.append((n, k, m))
    return summary


def _sparse_results(be, n, k, m, qdtype, out_dtype, split_ks, split_k_modes, include_search, seed, summary, tkw,
                    alpha_vector=False):
    m_run = be._pad(m)  # time the padded problem the runtime runs (no staging copy)
    x, w_q = _operands(n, k, m_run, qdtype, True, seed)
    w = be.prepare(w_q)
    ref = reference_mm(x, w_q)
    out = torch.empty(m_run, n, dtype=out_dtype, device="cuda")
    # alpha = ones: the runtime's ALPHA_VECTOR_SCALING plan, and the output stays comparable with ref
    kw = {"alpha": torch.ones(n, dtype=torch.float32, device="cuda")} if alpha_vector else {}
    max_id = be.max_config_id(n, k, m_run, qdtype, out_dtype)
    cands = [(c, "enum") for c in sparse_candidates(max_id, split_ks, split_k_modes)]
    if include_search:
        try:
            cands.append((be.search(x, w, out_dtype, out)["config"], "search"))
        except Exception as e:  # noqa: BLE001 - the search is one more candidate, not a requirement
            summary.reject(e)
    results, seen = [], set()
    for cfg, source in cands:
        if cfg in seen:
            continue
        seen.add(cfg)
        summary.candidates += 1
        try:
            out.fill_(-7)
            be.mm(x, w, out_dtype, out, config=cfg, **kw)
            ok, why = matches(out, ref)
            if not ok:
                raise RuntimeError(why)
            t = statistics.median(time_calls(lambda cfg=cfg: be.mm(x, w, out_dtype, out, config=cfg, **kw), **tkw))
            info = be.plan_info(w, m_run, out_dtype, cfg, alpha_vector=bool(alpha_vector))
        except Exception as e:  # noqa: BLE001 - a failing candidate is skipped
            summary.reject(e)
            continue
        results.append({"alg_id": cfg.alg_id, "split_k": cfg.split_k, "split_k_mode": cfg.split_k_mode,
                        "workspace": info["workspace"], "us": round(t, 3), "source": source,
                        "alpha_vector": bool(alpha_vector)})
    return results, len(seen), max_id
