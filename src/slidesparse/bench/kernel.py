"""Kernel benchmark: dense cuBLASLt vs cuSPARSELt on SlideSparse's slid shapes, per (M, N, K).

Two views, never mixed (every row names its ``view``; speedups and efficiencies only compare rows of
the same view):

* ``gemm``: the GEMM alone, both sides with the same output dtype (INT8 -> int32, FP8 -> bf16). The
  sparse side multiplies the lifted activation [M, K'] by the slid weight [N, K'] (K' = slid_k(K)),
  the dense side the activation [M, K] (K zero-padded to 32) by the dense weight. ``check`` says
  whether the output of the first input set agrees with ``gemm.verify.reference_mm`` (INT8: exactly).
* ``linear``: the whole linear layer, quant(+lift) -> GEMM -> dequant(+bias), each library with its
  fastest legal GEMM output (``linear.gemm_epilogue``, what SlideSparseLinear runs): dense INT8 ->
  int32 + dequant; sparse INT8 -> bf16 straight from cuSPARSELt, with the per-channel weight scale
  applied in its epilogue as the alpha vector and only the per-token scale (and bias) applied after;
  FP8 -> bf16 + dequant on both sides. ``rel_err_vs_int32`` (INT8 rows) is the normwise relative
  error of the layer's output against the same layer computed through the exact int32 GEMM on the
  same inputs: 0 for int32 paths, the accuracy cost of the bf16 shortcut for the sparse one.
  ``gemm_part_us`` times the GEMM step of that layer alone (its epilogue output: INT8 dense -> int32
  vs sparse -> bf16 + alpha), and ``gemm_part_speedup`` compares it with the dense row's: the pairing
  the reference implementation's kernel table used, reported here as part of this view only.

Per row: median time (``time_us``, CUDA events around each call, after warm-up, inputs rotated, L2
flushed: ``gemm.timing.time_calls``), ``tops`` = 2*M*N*K / time with the layer's logical K (so a
sparse row's TOPS is dense-equivalent work, and TOPS ratios equal time ratios), ``speedup`` vs the
dense row of the same view, dtype, layer and M, and ``efficiency_vs_2to4`` = (speedup_2:L /
speedup_2:4) x 2(L-2)/L: 1.0 when pattern 2:L turns the native 2:4 speedup into its ideal L/(L-2).
Model mode adds a ``layer='total'`` row per M: the sum of the four linears (qkv, o, gate_up, down).
Rows go to ``<results>/kernel/<hwtag>/<cublaslt | cusparselt/2_L>/<model>_kernel.{csv,json}``.

The dense and the sparse GEMM use the tuning DB (``<search>/<hwtag>/<library>_<DTYPE>.json``) when it
exists, else the library heuristic (one warning per library and dtype). Without CUDA only the
plain-torch ``reference`` backend runs (tiny model, CPU timer): a pipeline check, not performance.
"""

from __future__ import annotations

import dataclasses
import itertools
import platform
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..listopts import parse_int_list
from ..gemm import GemmBackend, make_backend
from ..gemm.tuning_db import TuningMissWarning, TuningStore
from ..gemm.verify import matches, random_q, reference_mm, rel_error
from ..hw import MachineInfo, machine_info
from ..linear import gemm_epilogue
from ..models import DEFAULT_MODELS, LINEAR_PARTS, check_gemm_shapes, get_model
from ..ops import ReferenceOps, gemm_k
from ..pattern import K_ALIGN, Pattern, parse_patterns
from ..quant import parse_qdtype
from ..sparsify import lift, prune, slide
from .results import backend_folder, provenance, write_result_rows
from .timing import Timing, summarize, time_fn

MODES = ("model", "square")
VIEWS = ("gemm", "linear")
BACKEND_CHOICES = ("auto", "reference")
DEFAULT_MS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_PATTERNS = ("2:4", "4:6", "6:8", "8:10")
DEFAULT_DTYPES = ("int8", "fp8")
REFERENCE_MODELS = ("tiny",)
REFERENCE_MS = (32, 64)
DEFAULT_RUNS = {"cuda": (10, 50), "cpu": (1, 3)}   # (warm-up, timed runs)
TOTAL = "total"
SQUARE = "square"
ROW_KEY = ("model", "mode", "view", "dtype", "pattern", "layer", "M", "N", "K", "impl")
GEMM_OUT = {"int8": torch.int32, "fp8": torch.bfloat16}   # the gemm view: same output on both sides
ROTATION_BYTES = 3 << 30   # cap on the rotated input sets of one case (GPU memory)


@dataclass(frozen=True)
class Shape:
    layer: str      # qkv | o | gate_up | down | square
    N: int
    K: int          # the logical K (before padding / sliding)
    bias: bool


@dataclass(frozen=True)
class Workload:
    """One model (or the square sizes) and the M values it runs at."""

    name: str
    shapes: tuple[Shape, ...]
    ms: tuple[int, ...]


@dataclass(frozen=True)
class KernelBenchConfig:
    """Everything a run needs, validated before any measurement (bad options write nothing)."""

    mode: str
    workloads: tuple[Workload, ...]
    qdtypes: tuple[str, ...]
    patterns: tuple[Pattern, ...]
    views: tuple[str, ...]
    reference: bool
    device: torch.device
    machine: MachineInfo
    search: Path | None
    warmup: int
    repeat: int
    seed: int


# --- the formulas -------------------------------------------------------------------------------
def efficiency_vs_2to4(speedup: float, speedup_2to4: float, pattern: Pattern) -> float:
    """(speedup_2:L / speedup_2:4) x 2(L-2)/L. Ideally speedup_2:4 = 2 and speedup_2:L = L/(L-2), whose
    ratio is L/(2(L-2)): the factor 2(L-2)/L = K/K' scales that ideal to 1, so 1.0 means the slid GEMM
    on K' columns runs exactly as fast per column as the native 2:4 one."""
    if speedup <= 0 or speedup_2to4 <= 0:
        raise ValueError(f"speedups must be positive, got {speedup} and {speedup_2to4}")
    return speedup / speedup_2to4 * pattern.expansion


def tops(M: int, N: int, K: int, time_us: float) -> float:
    """Tera-operations per second of an [M, K] x [K, N] product (2 ops per multiply-add)."""
    return 2.0 * M * N * K / (time_us * 1e-6) / 1e12


# --- configuration ------------------------------------------------------------------------------
def _names(values, what: str) -> list[str]:
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else [str(v).strip() for v in values]
    items = [v for v in items if v]
    if not items:
        raise ValueError(f"give at least one {what}")
    return list(dict.fromkeys(items))


def _cpu_machine() -> MachineInfo:
    info = machine_info()
    if info.has_cuda:  # the reference runs on the CPU: tag its rows as a CPU machine's
        info = dataclasses.replace(info, gpu="CPU", gpu_full=platform.processor() or info.arch, cc="",
                                   cuda="", driver="")
    return info


def make_config(*, mode: str = "model", models=None, ms=None, dtypes=DEFAULT_DTYPES, patterns=DEFAULT_PATTERNS,
                views=VIEWS, backend: str = "auto", search: str | Path | None = "search", warmup: int | None = None,
                repeat: int | None = None, seed: int = 0, cuda_available: bool | None = None) -> KernelBenchConfig:
    """Check every option (one clear ValueError / RuntimeError naming what is wrong) and build the config."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    vs = _names(views, "view")
    bad = [v for v in vs if v not in VIEWS]
    if bad:
        raise ValueError(f"unknown view(s) {', '.join(bad)}; choose from {', '.join(VIEWS)}")
    qds = tuple(dict.fromkeys(parse_qdtype(d) for d in _names(dtypes, "dtype")))
    pats = tuple(parse_patterns(_names(patterns, "pattern")))
    if not pats:
        raise ValueError("give at least one sparse pattern")
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    reference = backend == "reference"
    if not reference and not has_cuda:
        raise RuntimeError("`bench kernel` needs a CUDA GPU for real numbers (torch.cuda.is_available() is False); "
                           "pass --backend reference to run the plain-torch reference on the tiny model instead "
                           "(a CI check of the code path, not performance numbers)")
    if warmup is not None and warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeat is not None and repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    w_def, r_def = DEFAULT_RUNS["cpu" if reference else "cuda"]
    m_list = parse_int_list(ms, "M values") if ms is not None else (REFERENCE_MS if reference else DEFAULT_MS)

    if mode == "square":
        if models is not None:
            raise ValueError("--model applies to --mode model only; --mode square takes its sizes from --m")
        odd = [m for m in m_list if m % K_ALIGN]
        if odd:
            raise ValueError(f"square sizes (M = N = K) must be multiples of {K_ALIGN}, got {odd}")
        wls = tuple(Workload(SQUARE, (Shape(SQUARE, m, m, False),), (m,)) for m in m_list)
    else:
        names = _names(models, "model") if models is not None else list(REFERENCE_MODELS if reference
                                                                         else DEFAULT_MODELS)
        cfgs = [get_model(n) for n in names]
        if reference:
            other = [c.name for c in cfgs if c.name not in REFERENCE_MODELS]
            if other:
                raise ValueError(f"the reference backend runs on the CPU and only on the {', '.join(REFERENCE_MODELS)} "
                                 f"model, got {', '.join(other)}; run on a CUDA machine for real models")
        else:
            for c in cfgs:
                for role in (None, *pats):
                    check_gemm_shapes(c, role)
        wls = []
        for c in cfgs:
            biased = set(c.bias_projections())
            shapes = tuple(Shape(lin, n, k, any(p in biased for p in LINEAR_PARTS[lin]))
                           for lin, (n, k) in c.linear_shapes().items())
            wls.append(Workload(c.name, shapes, m_list))
        wls = tuple(wls)
    return KernelBenchConfig(
        mode=mode, workloads=wls, qdtypes=qds, patterns=pats, views=tuple(v for v in VIEWS if v in vs),
        reference=reference, device=torch.device("cpu" if reference else "cuda"),
        machine=_cpu_machine() if reference else machine_info(),
        search=Path(search) if search is not None else None,
        warmup=w_def if warmup is None else warmup, repeat=r_def if repeat is None else repeat, seed=seed)


# --- backends -----------------------------------------------------------------------------------
class Backends:
    """The dense and sparse GEMM backends per input dtype: tuned where the DB file exists, else the
    library heuristic (warned once per library and dtype)."""

    def __init__(self, cfg: KernelBenchConfig):
        self.cfg = cfg
        self._made: dict[tuple[str, bool], GemmBackend] = {}
        self._warned: set[tuple[str, str]] = set()
        self.store = TuningStore(cfg.search) if (cfg.search is not None and not cfg.reference) else None

    def get(self, sparse: bool, qdtype: str) -> tuple[GemmBackend, str]:
        """(backend, where its algorithms come from: the DB path or 'heuristic' / 'reference')."""
        if self.cfg.reference:
            key = ("reference", sparse)
            if key not in self._made:
                self._made[key] = make_backend("reference", sparse=sparse)
            return self._made[key], "reference"
        lib = "cusparselt" if sparse else "cublaslt"
        path = self.store.path(lib, qdtype) if self.store is not None else None
        tuned = path is not None and path.exists()
        if not tuned and (lib, qdtype) not in self._warned:
            self._warned.add((lib, qdtype))
            where = f"{path} does not exist" if path is not None else "no --search folder was given"
            warnings.warn(f"no {lib} {qdtype} tuning DB ({where}); the {lib} heuristic picks the algorithms "
                          f"(run `slidesparse tune` first for tuned numbers)", TuningMissWarning, stacklevel=2)
        key = (lib, tuned)
        if key not in self._made:
            self._made[key] = make_backend(lib, search=self.cfg.search if tuned else None)
        return self._made[key], (str(path) if tuned else "heuristic")


def _make_ops(cfg: KernelBenchConfig):
    if cfg.reference:
        return ReferenceOps()
    from ..kernels import TritonOps  # noqa: PLC0415 - GPU-only import

    return TritonOps(search_dir=cfg.search)


# --- timing ---------------------------------------------------------------------------------------
def _time(cfg: KernelBenchConfig, fn: Callable[[int], object], n_sets: int) -> Timing:
    """Median of ``cfg.repeat`` calls of ``fn(i)``, call i on input set i % n_sets."""
    if cfg.device.type == "cuda":
        from ..gemm.timing import time_calls  # noqa: PLC0415 - CUDA events behind a spin kernel

        counter = itertools.count()
        samples = time_calls(lambda: fn(next(counter) % n_sets), warmup=cfg.warmup, repeat=cfg.repeat,
                             flush_l2=True)
        return summarize(samples, "cuda-events")
    return time_fn(fn, [(i,) for i in range(n_sets)], warmup=cfg.warmup, repeat=cfg.repeat, device=cfg.device)


def _n_sets(cfg: KernelBenchConfig, bytes_per_set: int) -> int:
    if cfg.device.type != "cuda":
        return 2
    from ..kernels.timing import rotation_sets  # noqa: PLC0415

    return rotation_sets(bytes_per_set, max_sets=8, max_total=ROTATION_BYTES)


def _pad_k(t: torch.Tensor, k: int) -> torch.Tensor:
    if t.shape[1] == k:
        return t.contiguous()
    pad = t.new_zeros(t.shape[0], k - t.shape[1])
    return torch.cat([t.view(torch.uint8), pad.view(torch.uint8)], 1).view(t.dtype)


def _gen(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# --- one (dtype, shape): weights for every role ---------------------------------------------------
@dataclass
class _Weights:
    w: torch.Tensor                              # [N, K] quantized, dense
    scale: torch.Tensor                          # [N] float32 per-channel weight scale
    bias: torch.Tensor | None                    # [N] float32
    placed: dict                                 # role label -> GemmWeight
    pruned: dict                                 # role label -> [N, K] pruned (for the reference check)


def _algo_source(backend: GemmBackend, w, M: int, out_dtype: torch.dtype, fallback: str, alpha: bool = False) -> str:
    """Where the algorithm that runs (M, out dtype[, alpha vector]) came from: 'tuned(M=..)',
    'heuristic', 'default' (the GPU backends say so per plan)."""
    info = getattr(backend, "plan_info", None)
    if info is None:
        return fallback
    return str((info(w, M, out_dtype, alpha_vector=True) if alpha else info(w, M, out_dtype))["source"])


def _role_label(p: Pattern | None) -> str:
    return "dense" if p is None else p.label


def _prepare(cfg: KernelBenchConfig, bk: Backends, qd: str, shape: Shape, seed: int) -> _Weights:
    dev = cfg.device
    g = _gen(dev, seed)
    w = random_q(shape.N, shape.K, qd, dev, g)
    scale = (torch.rand(shape.N, generator=g, device=dev) * 0.01 + 1e-3).float()
    bias = torch.randn(shape.N, generator=g, device=dev).float() if shape.bias else None
    placed, pruned = {}, {}
    dense, _ = bk.get(False, qd)
    placed["dense"] = dense.prepare(_pad_k(w, gemm_k(shape.K, None)))
    pruned["dense"] = w
    for p in cfg.patterns:
        sparse, _ = bk.get(True, qd)
        wp = prune(w, p)
        placed[p.label] = sparse.prepare(slide(wp, p))
        pruned[p.label] = wp
    return _Weights(w, scale, bias, placed, pruned)


# --- the measurements -----------------------------------------------------------------------------
def _gemm_cases(cfg, bk, qd, shape, M, wts, seed) -> list[dict]:
    """View 'gemm': every role on the same activations; the first set is checked against the reference."""
    dev = cfg.device
    out_dt = GEMM_OUT[qd]
    k_dense = gemm_k(shape.K, None)
    n_sets = _n_sets(cfg, M * max(k_dense, max((p.slid_k(shape.K) for p in cfg.patterns), default=0)))
    g = _gen(dev, seed)
    xs = [random_q(M, shape.K, qd, dev, g) for _ in range(n_sets)]
    out = []
    for role in (None, *cfg.patterns):
        label = _role_label(role)
        backend, source = bk.get(role is not None, qd)
        w = wts.placed[label]
        ins = [_pad_k(x, k_dense) for x in xs] if role is None else [lift(x, role) for x in xs]
        y = torch.empty(M, shape.N, dtype=out_dt, device=dev)
        source = _algo_source(backend, w, M, out_dt, source)
        first = backend.mm(ins[0], w, out_dt)
        ok, detail = matches(first, reference_mm(xs[0], wts.pruned[label]))
        del first

        def fn(i, backend=backend, w=w, ins=ins, y=y):
            return backend.mm(ins[i], w, out_dt, out=y)

        t = _time(cfg, fn, n_sets)
        out.append(_row(cfg, qd, shape, M, role, "gemm", t, backend, source, out_dt, check=detail, check_ok=ok,
                        rel_err=""))
        del ins, y
    return out


def _linear_cases(cfg, bk, ops, qd, shape, M, wts, seed) -> list[dict]:
    """View 'linear': quant(+lift) -> GEMM (fastest legal output) -> dequant(+bias), bf16 in and out;
    plus the GEMM step of that layer timed alone on its quantized inputs (``gemm_part_us``)."""
    dev = cfg.device
    g = _gen(dev, seed + 1)
    bytes_per_set = M * shape.K * 2
    n_sets = _n_sets(cfg, bytes_per_set)
    xs = [torch.randn(M, shape.K, generator=g, device=dev).to(torch.bfloat16) for _ in range(n_sets)]
    ones = torch.ones(shape.N, dtype=torch.float32, device=dev)
    out = []
    for role in (None, *cfg.patterns):
        label = _role_label(role)
        backend, source = bk.get(role is not None, qd)
        w = wts.placed[label]
        ep = gemm_epilogue(backend, qd)
        gemm_out = ep.out_dtype
        sb_after = ones if ep.alpha else wts.scale
        source = _algo_source(backend, w, M, gemm_out, source, ep.alpha)

        def gemm(q, out=None, backend=backend, w=w, ep=ep):
            if ep.alpha:
                return backend.mm(q, w, ep.out_dtype, out, alpha=wts.scale)
            return backend.mm(q, w, ep.out_dtype, out)

        def fn(i, role=role, gemm=gemm, sb_after=sb_after):
            q, sa = ops.quant(xs[i], qd, role)
            return ops.dequant(gemm(q)[:M], sa[:M], sb_after, wts.bias, torch.bfloat16)

        rel = ""
        if qd == "int8":
            y = fn(0)
            q, sa = ops.quant(xs[0], qd, role)
            exact = ops.dequant(backend.mm(q, w, torch.int32)[:M], sa[:M], wts.scale, wts.bias, torch.bfloat16)
            rel = rel_error(y, exact)
            del y, q, sa, exact
        t = _time(cfg, fn, n_sets)
        qs = [ops.quant(x, qd, role)[0] for x in xs]
        y = torch.empty(qs[0].shape[0], shape.N, dtype=gemm_out, device=dev)
        t_gemm = _time(cfg, lambda i, qs=qs, y=y, gemm=gemm: gemm(qs[i], y), n_sets)
        del qs, y
        out.append(_row(cfg, qd, shape, M, role, "linear", t, backend, source, gemm_out, check="", check_ok="",
                        rel_err=rel, alpha=ep.alpha, gemm_part=t_gemm))
    return out


def _row(cfg, qd, shape, M, role, view, t: Timing, backend, source, gemm_out, *, check, check_ok, rel_err,
         alpha: bool = False, gemm_part: Timing | None = None) -> dict:
    k_gemm = gemm_k(shape.K, role)
    return {
        # "op" repeats the view: the report tells rows of one role apart by its known extra columns
        "model": "", "mode": cfg.mode, "view": view, "op": view, "dtype": qd,
        "backend": backend_folder(role).split("/")[0], "impl": backend.name,
        "pattern": _role_label(role), "pattern_paper": role.paper if role else "dense",
        "layer": shape.layer, "M": M, "N": shape.N, "K": shape.K, "gemm_k": k_gemm,
        "time_us": round(t.median_us, 3), "p10_us": round(t.p10_us, 3), "p90_us": round(t.p90_us, 3),
        "runs": t.runs, "timer": t.method,
        "tops": round(tops(M, shape.N, shape.K, t.median_us), 4),
        "gemm_out": str(gemm_out).replace("torch.", ""), "alpha_scale": bool(alpha),
        "rel_err_vs_int32": rel_err if rel_err == "" else float(f"{rel_err:.3e}"),
        "check": check, "check_ok": check_ok, "algo_source": source,
        "gemm_part_us": round(gemm_part.median_us, 3) if gemm_part is not None else "",
    }


def add_totals(rows: Sequence[dict]) -> list[dict]:
    """Model mode: a layer='total' row per (view, dtype, role, M): the sum of the four linears."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["layer"] != TOTAL:
            groups.setdefault((r["model"], r["view"], r["dtype"], r["pattern"], r["M"]), []).append(r)
    totals = []
    for rs in groups.values():
        first = rs[0]
        t = sum(r["time_us"] for r in rs)
        flops = sum(2.0 * r["M"] * r["N"] * r["K"] for r in rs)
        rels = [r["rel_err_vs_int32"] for r in rs if r["rel_err_vs_int32"] != ""]
        parts = [r.get("gemm_part_us", "") for r in rs]
        part = round(sum(parts), 3) if all(p != "" for p in parts) else ""
        totals.append({**first, "layer": TOTAL, "N": "", "K": "", "gemm_k": "", "time_us": round(t, 3),
                       "gemm_part_us": part,
                       "p10_us": round(sum(r["p10_us"] for r in rs), 3), "p90_us": round(sum(r["p90_us"] for r in rs), 3),
                       "tops": round(flops / (t * 1e-6) / 1e12, 4),
                       "rel_err_vs_int32": max(rels) if rels else "",
                       "check": "; ".join(sorted({r["check"] for r in rs if r["check"]})),
                       "check_ok": all(r["check_ok"] for r in rs) if rs[0]["check_ok"] != "" else ""})
    return [*rows, *totals]


def add_speedups(rows: Sequence[dict]) -> list[dict]:
    """speedup vs the dense row of the same (model, view, dtype, layer, M), efficiency vs 2:4, and
    (linear view) the GEMM part's speedup vs the dense layer's GEMM part."""
    def key(r):
        return (r["model"], r["view"], r["dtype"], r["layer"], r["M"], r["N"], r["K"])

    dense = {key(r): r for r in rows if r["pattern"] == "dense"}
    out = []
    for r in rows:
        d = dense.get(key(r))
        part, d_part = r.get("gemm_part_us", ""), (d or {}).get("gemm_part_us", "")
        out.append({**r, "speedup": round(d["time_us"] / r["time_us"], 4) if d else "",
                    "gemm_part_speedup": round(d_part / part, 4) if part not in ("", 0) and d_part != "" else ""})
    s24 = {key(r): r["speedup"] for r in out if r["pattern"] == "2_4" and r["speedup"] != ""}
    for r in out:
        p = None if r["pattern"] == "dense" else Pattern.parse(r["pattern"])
        r["ideal_speedup"] = round(p.ideal_speedup, 4) if p else 1.0
        base = s24.get(key(r))
        r["efficiency_vs_2to4"] = (round(efficiency_vs_2to4(r["speedup"], base, p), 4)
                                   if p is not None and base and r["speedup"] != "" else "")
    return out


# --- the run ----------------------------------------------------------------------------------------
def run_kernel_bench(cfg: KernelBenchConfig, results: str | Path, *,
                     on_case: Callable[[str], None] | None = None) -> dict:
    """Measure every (workload, dtype, shape, M, view, role); write rows per (workload, dtype) as they
    finish; return {"rows": [...], "files": [csv paths]}."""
    bk = Backends(cfg)
    ops = _make_ops(cfg) if "linear" in cfg.views else None
    all_rows, files = [], []
    prov = provenance()
    for wl in cfg.workloads:
        for qd in cfg.qdtypes:
            rows: list[dict] = []
            for si, shape in enumerate(wl.shapes):
                seed = cfg.seed * 100_003 + si * 101 + shape.N
                wts = _prepare(cfg, bk, qd, shape, seed)
                with torch.inference_mode():
                    for M in wl.ms:
                        if "gemm" in cfg.views:
                            rows += _gemm_cases(cfg, bk, qd, shape, M, wts, seed + M)
                        if "linear" in cfg.views:
                            rows += _linear_cases(cfg, bk, ops, qd, shape, M, wts, seed + M)
                        if on_case:
                            on_case(f"{wl.name} {qd} {shape.layer} N={shape.N} K={shape.K} M={M}")
                del wts
                if cfg.device.type == "cuda":
                    torch.cuda.empty_cache()
            for r in rows:
                r["model"] = wl.name
            if cfg.mode == "model":
                rows = add_totals(rows)
            rows = add_speedups(rows)
            tag = cfg.machine.tag(qd)
            dev = cfg.machine.gpu_full if cfg.machine.has_cuda else f"CPU ({cfg.machine.gpu_full})"
            for r in rows:
                r.update({"device": dev, "hwtag": tag, "reference_backend": cfg.reference,
                          "warmup": cfg.warmup, "ops": getattr(ops, "name", "") if r["view"] == "linear" else "",
                          **prov})
            for role in (None, *cfg.patterns):
                mine = [r for r in rows if r["pattern"] == _role_label(role)]
                files.append(write_result_rows(results, "kernel", tag, role, wl.name, mine, key=ROW_KEY))
            all_rows += rows
    return {"rows": all_rows, "files": files}


# --- the printed summary ------------------------------------------------------------------------------
def summary_lines(rows: Sequence[dict]) -> list[str]:
    """Compact tables, one per (model, dtype, view): time (us), speedup and efficiency vs 2:4 per role.
    Model mode shows the 'total' rows (the four linears summed), square mode each size. The linear
    view's GEMM part gets its own table (view 'linear/gemm-part')."""
    shown = [r for r in rows if r["layer"] in (TOTAL, SQUARE)]
    shown += [{**r, "view": "linear/gemm-part", "time_us": r["gemm_part_us"], "speedup": r["gemm_part_speedup"],
               "efficiency_vs_2to4": "", "rel_err_vs_int32": ""}
              for r in shown if r["view"] == "linear" and r.get("gemm_part_us", "") not in ("", 0)
              and (r["pattern"] == "dense" or r.get("gemm_part_speedup", "") != "")]
    groups: dict[tuple, list[dict]] = {}
    for r in shown:
        name = SQUARE if r["layer"] == SQUARE else r["model"]
        groups.setdefault((name, r["dtype"], r["view"]), []).append(r)
    out = []
    for (name, qd, view), rs in groups.items():
        roles = list(dict.fromkeys(r["pattern"] for r in sorted(rs, key=lambda r: (r["pattern"] != "dense",
                                                                                 _window(r["pattern"])))))
        impls = sorted({r["impl"] for r in rs})
        rel = [r["rel_err_vs_int32"] for r in rs if r["rel_err_vs_int32"] not in ("", 0, 0.0)]
        head = f"{name} {qd.upper()} view={view} ({', '.join(impls)})" + \
               (f"; max rel err vs int32 {max(rel):.1e}" if rel else "")
        bad = [r for r in rs if r["check_ok"] is False]
        if bad:
            head += f"; CHECK FAILED: {bad[0]['check']}"
        out.append(head)
        out.append(f"{'M':>7}" + "".join(f"{'dense us' if p == 'dense' else Pattern.parse(p).paper:>22}"
                                         for p in roles))
        for M in sorted({r["M"] for r in rs}):
            at = {r["pattern"]: r for r in rs if r["M"] == M}
            cells = []
            for p in roles:
                r = at.get(p)
                if r is None:
                    cells.append(f"{'-':>22}")
                elif p == "dense":
                    cells.append(f"{r['time_us']:>22.1f}")
                else:
                    eff = f" e{r['efficiency_vs_2to4']:.2f}" if r["efficiency_vs_2to4"] != "" else ""
                    cells.append(f"{r['time_us']:>9.1f} {r['speedup']:>5.2f}x{eff:>6}")
            out.append(f"{M:>7}" + "".join(cells))
    return out


def _window(label: str) -> int:
    return 0 if label == "dense" else Pattern.parse(label).window


__all__ = ["BACKEND_CHOICES", "DEFAULT_MS", "MODES", "VIEWS", "KernelBenchConfig", "Shape", "Workload",
           "add_speedups", "add_totals", "efficiency_vs_2to4", "make_config", "run_kernel_bench",
           "summary_lines", "tops"]
