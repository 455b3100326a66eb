"""Pipeline cases, the test matrix and the backend plan.

A *case* is what one worker process measures: (stage, model, dtype, backend role, pattern), run over
all of its M values with ONE engine. Case ids (other tools script against them):

    <stage>/<model>/<DTYPE>/cublaslt              the dense baseline role
    <stage>/<model>/<DTYPE>/cusparselt/<2_L>      a sparse pattern (seed label 2_L, 2_8 == paper 6:8)

e.g. ``decode/qwen2.5-7b/INT8/cusparselt/2_8``, ``prefill/llama3.2-1b/FP8E4M3/cublaslt``; stage
``prefill`` | ``decode``, DTYPE from ``hw.DTYPE_TAGS`` (INT8, FP8E4M3), model the plain model name
(a built-in name, a local directory's name, or the last part of a Hugging Face repo id, lower-cased).
The role names the folder results go to (``bench.results.backend_folder``); what actually ran is the
``impl`` (``cublaslt`` / ``cusparselt`` on CUDA, ``reference-dense`` / ``reference-sparse`` on a
machine without CUDA, where the plain-torch reference backend stands in for both libraries).

Defaults (the seed's matrix): models llama3.2-1b, llama3.2-3b, qwen2.5-7b, qwen2.5-14b; dtypes int8,
fp8; dense + patterns 2:4, 4:6, 6:8, 8:10; prefill M 512 ... 65536, decode M 64 ... 512. On the
reference backend the defaults shrink to model ``tiny``, prefill M 64, 256 and decode M 4, 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..listopts import parse_int_list
from ..bench.results import DENSE_FOLDER, SPARSE_FOLDER, backend_folder
from ..hw import DTYPE_TAGS
from ..pattern import Pattern, parse_patterns
from ..quant import parse_qdtype

STAGES = ("prefill", "decode")
STAGE_TASK = {"prefill": 6, "decode": 7}

DEFAULT_MODELS = ("llama3.2-1b", "llama3.2-3b", "qwen2.5-7b", "qwen2.5-14b")
DEFAULT_DTYPES = ("int8", "fp8")
DEFAULT_PATTERNS = ("2:4", "4:6", "6:8", "8:10")
DEFAULT_PREFILL_M = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
DEFAULT_DECODE_M = (64, 128, 256, 512)
REFERENCE_MODELS = ("tiny",)
REFERENCE_PREFILL_M = (64, 256)
REFERENCE_DECODE_M = (4, 8)

_TAG_DTYPE = {tag: qd for qd, tag in DTYPE_TAGS.items()}
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME_RE = re.compile(r"^[\w.+-]+$")


# --- models ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSource:
    """Where a model of the matrix comes from.

    kind: ``builtin`` (architecture only; seeded synthetic weights), ``local`` (a Hugging Face model
    directory) or ``hf`` (a Hugging Face repo id, downloaded by task 1 into the download directory).
    ``path``: the model directory (local; hf once downloaded), else None.
    """

    name: str
    spec: str
    kind: str
    path: str | None = None

    @property
    def has_checkpoint(self) -> bool:
        return self.kind in ("local", "hf")

    def with_path(self, path: str | Path) -> "ModelSource":
        return ModelSource(self.name, self.spec, self.kind, str(path))

    def config(self):
        """The architecture (models.ModelConfig) — needs the directory for local/hf models."""
        from ..models import ModelConfig, get_model  # noqa: PLC0415

        if self.kind == "builtin":
            return get_model(self.name)
        if self.path is None:
            raise FileNotFoundError(f"model {self.spec} is not downloaded yet; run task 1 (download) first "
                                    "(pipeline --tasks 1,...) or pass a local model directory")
        return ModelConfig.from_hf_config(self.path, name=self.name)


def resolve_model(spec: str) -> ModelSource:
    """A built-in name, an existing Hugging Face model directory, or a Hugging Face repo id
    ('org/name', downloaded by task 1). An existing path wins over a built-in of the same name."""
    from ..models import BUILTIN_MODELS  # noqa: PLC0415

    text = str(spec).strip()
    if not text:
        raise ValueError("empty model name")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise FileNotFoundError(f"model {text}: {path} is not a Hugging Face model directory "
                                    "(it needs a config.json)")
        name = path.resolve().name.lower()
        return ModelSource(_check_name(name, text), text, "local", str(path))
    if text.lower() in BUILTIN_MODELS:
        return ModelSource(text.lower(), text, "builtin")
    if _HF_REPO_RE.match(text) and not text.startswith((".", "~")):
        return ModelSource(_check_name(text.split("/")[-1].lower(), text), text, "hf")
    raise ValueError(f"unknown model {text!r}: not a model directory, not a built-in "
                     f"({', '.join(BUILTIN_MODELS)}) and not a Hugging Face repo id ('org/name')")


def _check_name(name: str, spec: str) -> str:
    if not _NAME_RE.match(name) or name.startswith("."):
        raise ValueError(f"model {spec!r}: its name {name!r} cannot be used in case ids and file names "
                         "(letters, digits, '.', '_', '-', '+' only)")
    return name


# --- cases ----------------------------------------------------------------------------------
def dtype_tag(qdtype: str) -> str:
    return DTYPE_TAGS[parse_qdtype(qdtype)]


@dataclass(frozen=True)
class Case:
    stage: str
    model: str
    qdtype: str                 # 'int8' | 'fp8'
    pattern: Pattern | None     # None: the dense baseline

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; one of {', '.join(STAGES)}")
        object.__setattr__(self, "qdtype", parse_qdtype(self.qdtype))
        if self.pattern is not None:
            object.__setattr__(self, "pattern", Pattern.parse(self.pattern))
        _check_name(self.model, self.model)

    @property
    def backend(self) -> str:
        """The role: 'cublaslt' (dense baseline) or 'cusparselt' (sparse)."""
        return DENSE_FOLDER if self.pattern is None else SPARSE_FOLDER

    @property
    def pattern_label(self) -> str:
        return "dense" if self.pattern is None else self.pattern.label

    @property
    def dtype_tag(self) -> str:
        return DTYPE_TAGS[self.qdtype]

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.model}/{self.dtype_tag}/{backend_folder(self.pattern)}"

    @property
    def file_stem(self) -> str:
        """The id as one file name (per-case logs)."""
        return self.id.replace("/", "__")

    @classmethod
    def parse(cls, case_id: str) -> "Case":
        parts = str(case_id).split("/")
        bad = ValueError(f"cannot parse case id {case_id!r}; expected <stage>/<model>/<DTYPE>/cublaslt or "
                         "<stage>/<model>/<DTYPE>/cusparselt/2_L, e.g. decode/qwen2.5-7b/INT8/cusparselt/2_8")
        if len(parts) not in (4, 5) or parts[3] not in (DENSE_FOLDER, SPARSE_FOLDER):
            raise bad
        if (parts[3] == DENSE_FOLDER) != (len(parts) == 4) or parts[2] not in _TAG_DTYPE:
            raise bad
        return cls(parts[0], parts[1], _TAG_DTYPE[parts[2]], parts[4] if len(parts) == 5 else None)

    def __str__(self) -> str:
        return self.id


# --- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    models: tuple[ModelSource, ...]
    qdtypes: tuple[str, ...]
    patterns: tuple[Pattern, ...]
    prefill_m: tuple[int, ...]
    decode_m: tuple[int, ...]

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two models share the name {', '.join(dup)}; case ids and result files need "
                             "distinct model names")
        if not self.models or not self.qdtypes:
            raise ValueError("the matrix needs at least one model and one dtype")

    @classmethod
    def build(cls, models, dtypes, patterns, prefill_m, decode_m) -> "Matrix":
        srcs = tuple(resolve_model(m) for m in models)
        qds: list[str] = []
        for d in dtypes:
            q = parse_qdtype(d)
            if q not in qds:
                qds.append(q)
        pats = tuple(parse_patterns(list(patterns))) if patterns else ()
        return cls(srcs, tuple(qds), pats, parse_int_list(prefill_m, "prefill M values"),
                   parse_int_list(decode_m, "decode M values"))

    def roles(self) -> list[Pattern | None]:
        return [None, *self.patterns]

    def m_values(self, stage: str) -> tuple[int, ...]:
        return self.prefill_m if stage == "prefill" else self.decode_m

    def cases(self, stage: str) -> list[Case]:
        """model -> dtype -> dense, patterns (the seed's order)."""
        return [Case(stage, m.name, qd, p) for m in self.models for qd in self.qdtypes for p in self.roles()]

    def model(self, name: str) -> ModelSource:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def replace_model(self, src: ModelSource) -> "Matrix":
        return Matrix(tuple(src if m.name == src.name else m for m in self.models), self.qdtypes,
                      self.patterns, self.prefill_m, self.decode_m)

    def to_dict(self, plan: "BackendPlan") -> dict:
        return {
            "models": [m.name for m in self.models],
            "model_sources": {m.name: {"kind": m.kind, "spec": m.spec} for m in self.models},
            "dtypes": list(self.qdtypes),
            "backends": [DENSE_FOLDER, SPARSE_FOLDER] if self.patterns else [DENSE_FOLDER],
            "patterns": [p.label for p in self.patterns],
            "patterns_paper": [p.paper for p in self.patterns],
            "impl": {"dense": plan.impl(None), "sparse": plan.impl(Pattern(4))},
            "prefill_m": list(self.prefill_m),
            "decode_m": list(self.decode_m),
        }


# --- the backend plan -----------------------------------------------------------------------
@dataclass(frozen=True)
class BackendPlan:
    """What runs the two roles, where (picklable: workers rebuild the backends from it).

    reference: plain-torch ``reference`` backend (dense / sparse) + ReferenceOps on the CPU;
    else ``cublaslt`` / ``cusparselt`` + ``slidesparse.kernels.TritonOps`` on ``device``.
    """

    reference: bool
    device: str = "cpu"
    search: str | None = None   # tuning DB root for the GPU backends (None: library heuristics)

    def impl(self, pattern: Pattern | None) -> str:
        if self.reference:
            return "reference-dense" if pattern is None else "reference-sparse"
        return "cublaslt" if pattern is None else "cusparselt"

    def make_backend(self, pattern: Pattern | None):
        """Build the GEMM backend for a role (in the worker; GPU libraries load lazily)."""
        from ..gemm import make_backend  # noqa: PLC0415

        if self.reference:
            return make_backend("reference", sparse=pattern is not None)
        return make_backend(self.impl(pattern), search=self.search)

    def make_ops(self):
        if self.reference:
            from ..ops import ReferenceOps  # noqa: PLC0415
            return ReferenceOps()
        try:
            from ..kernels import TritonOps  # noqa: PLC0415
        except Exception as e:  # noqa: BLE001 - any import failure means the GPU ops are missing
            raise RuntimeError(f"the GPU activation ops (slidesparse.kernels.TritonOps) are unavailable: "
                               f"{type(e).__name__}: {e}") from e
        return TritonOps(search_dir=self.search)  # tuned launch configs of task 3/4, else defaults


@dataclass(frozen=True)
class BenchSettings:
    """How a case measures (passed to workers)."""

    seed: int = 0
    prefill_warmup: int = 2
    prefill_repeat: int = 5
    decode_prompt_len: int = 16
    decode_steps: int = 64
    decode_warmup: int = 3
    cuda_graphs: bool = True
