"""Decode-shaped timing of a model's four linear layers, dense vs each sparse pattern.

Until the end-to-end engine exists this is the decode benchmark: for every decode batch M, each
of the model's fused linears (qkv, o, gate_up, down) runs as a :class:`SlideSparseLinear`
(quant(+lift) -> GEMM -> dequant) built from seeded random weights; a case's latency is the sum of
the four medians, its throughput-equivalent M / latency, its speedup the dense latency at the same
M over its own. Dense and sparse run in the same process, interleaved per M, on the same inputs.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..gemm import GemmBackend, make_backend
from ..hw import MachineInfo, machine_info
from ..linear import SlideSparseLinear
from ..models import DEFAULT_MODELS, ModelConfig, check_gemm_shapes, get_model
from ..ops import ReferenceOps
from ..pattern import Pattern
from ..quant import parse_qdtype, quantize_weight
from ..sparsify import prune, slide
from .results import backend_folder, provenance, write_result_rows
from .timing import Timing, time_fn

BACKEND_CHOICES = ("auto", "reference")
DEFAULT_MS = (64, 128, 256, 512)
DEFAULT_PATTERNS = ("2:4", "4:6", "6:8", "8:10")
# "method" keeps these linear-layer rows apart from the end-to-end engine rows in the same files
ROW_KEY = ("model", "dtype", "backend", "impl", "pattern", "M", "method")
# warm-up / timed runs when not given: the GPU is cheap to sample, the CPU reference is not
DEFAULT_RUNS = {"cuda": (25, 100), "cpu": (3, 20)}


@dataclass(frozen=True)
class BackendPlan:
    """What runs the dense and the sparse role, where, and how to describe it honestly."""

    kind: str                 # "gpu" | "reference"
    device: torch.device
    dense: Callable[[], GemmBackend]
    sparse: Callable[[], GemmBackend]
    machine: MachineInfo      # the machine the numbers describe (the CPU for the reference)

    @property
    def is_reference(self) -> bool:
        return self.kind == "reference"


def plan_backends(requested: str, *, cuda_available: bool | None = None) -> BackendPlan:
    """``auto``: cuBLASLt + cuSPARSELt on a CUDA machine, else the reference; ``reference``: the
    plain-torch backends on the CPU (their int32 GEMM has no CUDA kernel), on any machine."""
    if requested not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "auto" and has_cuda:
        try:
            dense, sparse = make_backend("cublaslt"), make_backend("cusparselt")
        except Exception as e:  # noqa: BLE001 - any import/initialisation failure means "no GPU backend"
            raise RuntimeError(
                f"CUDA is available but the GPU GEMM backends could not be loaded ({type(e).__name__}: {e}); "
                "fix the installation, or pass --backend reference to time the CPU reference instead"
            ) from e
        return BackendPlan("gpu", torch.device("cuda"), lambda: dense, lambda: sparse, machine_info())
    info = machine_info()
    if info.has_cuda:  # the reference runs on the CPU: tag its results as a CPU machine's
        info = dataclasses.replace(info, gpu="CPU", gpu_full=platform.processor() or info.arch, cc="",
                                   cuda="", driver="")
    return BackendPlan("reference", torch.device("cpu"), lambda: make_backend("reference", sparse=False),
                       lambda: make_backend("reference", sparse=True), info)


def default_model(plan: BackendPlan) -> list[str]:
    return ["tiny"] if plan.is_reference else list(DEFAULT_MODELS)


def default_runs(plan: BackendPlan) -> tuple[int, int]:
    return DEFAULT_RUNS[plan.device.type]


def build_layers(cfg: ModelConfig, qdtype: str, pattern: Pattern | None, backend: GemmBackend,
                 device: torch.device, seed: int, ops=None) -> dict[str, SlideSparseLinear]:
    """The model's four linears with seeded random weights (the same weights for every pattern:
    the sparse ones are those weights pruned and slid)."""
    layers = {}
    for i, (name, (n, k)) in enumerate(cfg.linear_shapes().items()):
        gen = torch.Generator(device=device).manual_seed(seed * 1000 + i)
        w = torch.randn(n, k, generator=gen, device=device) * 0.02
        q, s = quantize_weight(w, qdtype)
        if pattern is not None:
            q = slide(prune(q, pattern), pattern)
        layers[name] = SlideSparseLinear(q, s, k, qdtype=qdtype, backend=backend, pattern=pattern,
                                         ops=ops or ReferenceOps(), out_dtype=torch.bfloat16)
        del w
    return layers


def make_inputs(cfg: ModelConfig, M: int, device: torch.device, seed: int, count: int) -> dict[str, list[tuple]]:
    """``count`` fresh random bf16 activations [M, K] per linear (never zeros)."""
    out = {}
    for i, (name, (_, k)) in enumerate(cfg.linear_shapes().items()):
        gen = torch.Generator(device=device).manual_seed(seed * 7919 + M * 31 + i)
        out[name] = [(torch.randn(M, k, generator=gen, device=device).to(torch.bfloat16),) for _ in range(count)]
    return out


@dataclass
class DecodeCase:
    model: str
    qdtype: str
    pattern: Pattern | None
    M: int
    layers: dict[str, Timing]
    impl: str
    ops: str
    acc_dtype: str
    gemm_out: str = ""  # the epilogue: 'int32', 'bfloat16', 'bfloat16+alpha' (what the report lists)

    @property
    def latency_us(self) -> float:
        return sum(t.median_us for t in self.layers.values())


def run_decode(*, models: Sequence[str], qdtypes: Sequence[str], patterns: Sequence[Pattern], ms: Sequence[int],
               plan: BackendPlan, warmup: int, repeat: int, results: str, seed: int = 0, n_inputs: int = 4,
               cuda_graph: bool = False, on_case: Callable[[str], None] | None = None) -> dict:
    """Time every (model, dtype, dense | pattern, M) case, write result rows, return a summary.

    Summary: {"rows": [row dicts], "files": [csv paths], "plan": plan}.
    """
    if not ms or any(m < 1 for m in ms):
        raise ValueError(f"decode batch sizes must be positive integers, got {list(ms)}")
    cfgs = [get_model(m) for m in models]
    qds = [parse_qdtype(q) for q in qdtypes]
    roles: list[Pattern | None] = [None, *patterns]
    if not plan.is_reference:
        for cfg in cfgs:
            for role in roles:
                check_gemm_shapes(cfg, role)
    all_rows, files = [], []
    for cfg in cfgs:
        for qd in qds:
            layer_sets = {role: build_layers(cfg, qd, role, plan.sparse() if role else plan.dense(), plan.device,
                                             seed) for role in roles}
            cases: list[DecodeCase] = []
            for M in ms:
                inputs = make_inputs(cfg, M, plan.device, seed, n_inputs)
                for role in roles:  # dense first, then every pattern, on the same inputs
                    layers = layer_sets[role]
                    timings = {}
                    with torch.inference_mode():
                        for name, layer in layers.items():
                            timings[name] = time_fn(layer, inputs[name], warmup=warmup, repeat=repeat,
                                                    device=plan.device, cuda_graph=cuda_graph)
                    first = next(iter(layers.values()))
                    cases.append(DecodeCase(cfg.name, qd, role, M, timings, first.backend.name, first.ops.name,
                                            str(first.acc_dtype).replace("torch.", ""), first.epilogue.label))
                    if on_case:
                        on_case(f"{cfg.name} {qd} {role or 'dense'} M={M}")
                del inputs
            rows = _rows(cases, plan, warmup)
            all_rows.extend(rows)
            tag = plan.machine.tag(qd)
            for role in roles:
                label = role.label if role else "dense"
                mine = [r for r in rows if r["pattern"] == label]
                files.append(write_result_rows(results, "decode", tag, role, cfg.name, mine, key=ROW_KEY))
            del layer_sets
    return {"rows": all_rows, "files": files, "plan": plan}


def _rows(cases: list[DecodeCase], plan: BackendPlan, warmup: int) -> list[dict]:
    dense = {c.M: c.latency_us for c in cases if c.pattern is None}
    prov = provenance()
    m = plan.machine
    rows = []
    for c in cases:
        lat = c.latency_us
        row = {
            "model": c.model, "dtype": c.qdtype,
            "backend": backend_folder(c.pattern).split("/")[0],  # the role: cublaslt | cusparselt
            "impl": c.impl, "method": "linears", "ops": c.ops, "device": m.gpu_full if m.has_cuda else f"CPU ({m.gpu_full})",
            "pattern": c.pattern.label if c.pattern else "dense",
            "pattern_paper": c.pattern.paper if c.pattern else "dense",
            "M": c.M, "latency_us": round(lat, 3), "tokens_per_s": round(c.M / lat * 1e6, 3),
            "speedup": round(dense[c.M] / lat, 4),
            "ideal_speedup": round(c.pattern.ideal_speedup, 4) if c.pattern else 1.0,
        }
        for name, t in c.layers.items():
            row[f"{name}_us"] = round(t.median_us, 3)
        row["max_spread"] = round(max(t.spread for t in c.layers.values()), 4)
        first = next(iter(c.layers.values()))
        row.update({"runs": first.runs, "warmup": warmup, "timer": first.method, "acc_dtype": c.acc_dtype,
                    "gemm_out": c.gemm_out,
                    "out_dtype": "bfloat16", "hwtag": m.tag(c.qdtype), "reference_backend": plan.is_reference})
        row.update(prov)
        rows.append(row)
    return rows
