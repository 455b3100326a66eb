"""Model architectures -> the four GEMM shapes per decoder layer, and the HF tensor names behind them.

A decoder layer of the Llama / Qwen2 families runs four linears (the runtime fuses the HF projections):
    qkv     = [q_proj; k_proj; v_proj] along N   N = (heads + 2*kv_heads) * head_dim   K = hidden
    o       = o_proj                             N = hidden                            K = heads * head_dim
    gate_up = [gate_proj; up_proj] along N       N = 2 * intermediate                  K = hidden
    down    = down_proj                          N = hidden                            K = intermediate
N = out_features, K = in_features (the GEMM's reduction dim, the one the pattern runs along).

GEMM shape rules (what the 8-bit GPU libraries accept; :func:`gemm_shape_problems` checks them):
  * sparse (cuSPARSELt, the weight is the 2:4 structured operand): N % 32 == 0 and K' % 32 == 0.
    K' = pattern.slid_k(K) is a multiple of 32 by construction, so only N can fail.
  * dense (cuBLASLt): N % 16 == 0 (FP8 and 8-bit IMMA want 16-element aligned leading dimensions;
    torch._scaled_mm asks the same). K is zero-padded to a multiple of 32 at load (ops.gemm_k).
  * K itself needs no alignment: a ragged last group of L columns is padded with zeros by slide/lift.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .pattern import Pattern

FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
LINEARS = ("qkv", "o", "gate_up", "down")
# fused linear -> the HF projections concatenated (in this order) along N
LINEAR_PARTS = {"qkv": ("q", "k", "v"), "o": ("o",), "gate_up": ("gate", "up"), "down": ("down",)}
PROJ_MODULES = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
PROJ_LINEAR = {p: lin for lin, parts in LINEAR_PARTS.items() for p in parts}
_LINEAR_WEIGHT_RE = re.compile(
    r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight$")
_MODULE_PROJ = {m: p for p, m in PROJ_MODULES.items()}

N_ALIGN_SPARSE = 32  # cuSPARSELt: both dims of the 8-bit structured operand
N_ALIGN_DENSE = 16   # cuBLASLt 8-bit / FP8: 16-element aligned leading dimensions


def _supported() -> str:
    return ", ".join(f"{fam} ({arch})" for fam, arch in FAMILIES.items())


@dataclass(frozen=True)
class ModelConfig:
    """The architecture numbers of a Llama / Qwen2 decoder (no weights)."""

    name: str
    family: str           # 'llama' | 'qwen2'
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float
    rms_eps: float
    tie_embeddings: bool
    attention_bias: bool  # qwen2: q/k/v carry a bias; llama: q/k/v/o do (HF's attention_bias)
    max_position: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unsupported model family {self.family!r}; supported: {_supported()}")
        for f in ("hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate", "vocab", "max_position"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"model {self.name!r}: {f} must be a positive integer, got {v!r}")
        if self.heads % self.kv_heads:
            raise ValueError(f"model {self.name!r}: heads ({self.heads}) must be a multiple of "
                             f"kv_heads ({self.kv_heads})")

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, source: "dict | str | Path", name: str | None = None) -> "ModelConfig":
        """Build from a Hugging Face config: a dict, a path to config.json, or a model directory.

        The family comes from ``model_type`` (else ``architectures``). Sizes (hidden_size,
        num_hidden_layers, num_attention_heads, intermediate_size, vocab_size) are required;
        num_key_value_heads defaults to the head count and head_dim to hidden/heads, as in HF.
        """
        cfg, where = _read_hf_config(source)
        family = _family(cfg, where)
        if family == "llama" and cfg.get("mlp_bias"):
            raise ValueError(f"{where}: mlp_bias=true (biased MLP projections) is not supported")

        def need(key: str) -> int:
            if key not in cfg or cfg[key] is None:
                raise ValueError(f"{where}: missing required key {key!r}")
            v = cfg[key]
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{where}: {key} must be an integer, got {v!r}")
            return v

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        head_dim = cfg.get("head_dim")
        if head_dim is None:
            if heads <= 0 or hidden % heads:
                raise ValueError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads "
                                 f"{heads} and no head_dim is given")
            head_dim = hidden // heads
        kv = cfg.get("num_key_value_heads")
        rope = cfg.get("rope_theta")
        if rope is None:  # newer transformers keep it under rope_parameters
            rope = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        if name is None:  # the directory's name; for a bare dict, HF's _name_or_path
            name = (Path(where).parent.name if where != "config" else
                    Path(str(cfg.get("_name_or_path") or "")).name) or family
        return cls(
            name=str(name), family=family, hidden=hidden, layers=need("num_hidden_layers"), heads=heads,
            kv_heads=heads if kv is None else kv, head_dim=head_dim,
            intermediate=need("intermediate_size"), vocab=need("vocab_size"),
            rope_theta=float(rope), rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=True if family == "qwen2" else bool(cfg.get("attention_bias", False)),
            max_position=int(cfg.get("max_position_embeddings", 2048 if family == "llama" else 32768)),
        )

    def to_hf_config(self) -> dict:
        """A minimal HF config.json dict for this architecture (bf16)."""
        d = {
            "architectures": [FAMILIES[self.family]], "model_type": self.family,
            "hidden_size": self.hidden, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim, "intermediate_size": self.intermediate, "vocab_size": self.vocab,
            "rope_theta": self.rope_theta, "rms_norm_eps": self.rms_eps,
            "tie_word_embeddings": self.tie_embeddings, "max_position_embeddings": self.max_position,
            "hidden_act": "silu", "torch_dtype": "bfloat16",
        }
        if self.family == "llama":
            d["attention_bias"] = self.attention_bias
        return d

    def to_dict(self) -> dict:
        return asdict(self)

    # --- shapes -------------------------------------------------------------------------
    def proj_shapes(self) -> dict[str, tuple[int, int]]:
        """HF projection -> (N, K): q, k, v, o, gate, up, down."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q": (q, self.hidden), "k": (kv, self.hidden), "v": (kv, self.hidden), "o": (self.hidden, q),
                "gate": (self.intermediate, self.hidden), "up": (self.intermediate, self.hidden),
                "down": (self.hidden, self.intermediate)}

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """Fused linear -> (N, K), ordered qkv, o, gate_up, down."""
        ps = self.proj_shapes()
        return {lin: (sum(ps[p][0] for p in parts), ps[parts[0]][1]) for lin, parts in LINEAR_PARTS.items()}

    def bias_projections(self) -> tuple[str, ...]:
        """The HF projections that carry a bias."""
        if not self.attention_bias:
            return ()
        return ("q", "k", "v") if self.family == "qwen2" else ("q", "k", "v", "o")

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the (unquantized) HF checkpoint, in layer order, with its shape."""
        ps = self.proj_shapes()
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for i in range(self.layers):
            pre = f"model.layers.{i}."
            out[pre + "input_layernorm.weight"] = (self.hidden,)
            for p in ("q", "k", "v", "o"):
                out[pre + PROJ_MODULES[p] + ".weight"] = ps[p]
                if p in self.bias_projections():
                    out[pre + PROJ_MODULES[p] + ".bias"] = (ps[p][0],)
            out[pre + "post_attention_layernorm.weight"] = (self.hidden,)
            for p in ("gate", "up", "down"):
                out[pre + PROJ_MODULES[p] + ".weight"] = ps[p]
        out["model.norm.weight"] = (self.hidden,)
        if not self.tie_embeddings:
            out["lm_head.weight"] = (self.vocab, self.hidden)
        return out

    def linear_weight_names(self, layer: int) -> dict[str, str]:
        """HF projection -> tensor name of its weight in ``layer``."""
        if not 0 <= layer < self.layers:
            raise ValueError(f"layer {layer} out of range for {self.name} ({self.layers} layers)")
        return {p: f"model.layers.{layer}.{m}.weight" for p, m in PROJ_MODULES.items()}

    def describe(self) -> str:
        bias = ", qkv bias" if self.attention_bias else ""
        tied = "tied" if self.tie_embeddings else "untied"
        return (f"{self.family}, {self.layers} layers, hidden {self.hidden}, heads {self.heads}/{self.kv_heads} kv, "
                f"head_dim {self.head_dim}, inter {self.intermediate}, vocab {self.vocab}, {tied}{bias}")


def parse_linear_weight_name(name: str) -> tuple[int, str] | None:
    """'model.layers.3.mlp.up_proj.weight' -> (3, 'up'); None for any other tensor."""
    m = _LINEAR_WEIGHT_RE.match(name)
    if not m:
        return None
    return int(m.group(1)), _MODULE_PROJ[m.group(2)]


def slid_shapes(cfg: ModelConfig, pattern: "Pattern | str") -> dict[str, tuple[int, int, int]]:
    """Fused linear -> (N, K, K') with K' = pattern.slid_k(K), the K of the sparse GEMM."""
    p = Pattern.parse(pattern)
    return {lin: (n, k, p.slid_k(k)) for lin, (n, k) in cfg.linear_shapes().items()}


def gemm_nk_list(cfg: ModelConfig, patterns=(), dense: bool = True) -> list[tuple[int, int]]:
    """The distinct GEMM (N, K) pairs to tune: the dense ones (K padded to 32) and the slid ones."""
    from .ops import gemm_k  # noqa: PLC0415 - ops imports torch; keep `models` light

    out: list[tuple[int, int]] = []
    for n, k in cfg.linear_shapes().values():
        cands = ([(n, gemm_k(k, None))] if dense else []) + [(n, Pattern.parse(p).slid_k(k)) for p in patterns]
        for nk in cands:
            if nk not in out:
                out.append(nk)
    return out


def gemm_shape_problems(cfg: ModelConfig, pattern: "Pattern | str | None") -> list[str]:
    """Why the GPU libraries cannot run this model's linears (empty list = fine). See the module doc."""
    p = Pattern.parse(pattern) if pattern is not None else None
    align = N_ALIGN_SPARSE if p is not None else N_ALIGN_DENSE
    lib = f"cuSPARSELt ({p})" if p is not None else "cuBLASLt (dense)"
    probs = []
    for lin, (n, k) in cfg.linear_shapes().items():
        if n % align:
            probs.append(f"{lin}: N={n} is not a multiple of {align}, which {lib} needs for 8-bit weights")
        if p is not None and p.slid_k(k) % N_ALIGN_SPARSE:  # cannot happen: slid_k rounds up to 32
            probs.append(f"{lin}: slid K={p.slid_k(k)} is not a multiple of {N_ALIGN_SPARSE}")
    return probs


def check_gemm_shapes(cfg: ModelConfig, pattern: "Pattern | str | None") -> None:
    probs = gemm_shape_problems(cfg, pattern)
    if probs:
        rule = ("N % 32 == 0 for the sparse GEMM (slid K is always a multiple of 32)" if pattern is not None
                else "N % 16 == 0 for the dense GEMM (K is zero-padded to 32 at load)")
        raise ValueError(f"model {cfg.name} cannot run on the GPU GEMM libraries: {'; '.join(probs)} "
                         f"(rule: {rule})")


# --- built-in architectures (numbers from the models' HF config.json; base models) ---------
BUILTIN_MODELS: dict[str, ModelConfig] = {
    c.name: c for c in (
        ModelConfig("llama3.2-1b", "llama", hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64,
                    intermediate=8192, vocab=128256, rope_theta=500000.0, rms_eps=1e-5, tie_embeddings=True,
                    attention_bias=False, max_position=131072),
        ModelConfig("llama3.2-3b", "llama", hidden=3072, layers=28, heads=24, kv_heads=8, head_dim=128,
                    intermediate=8192, vocab=128256, rope_theta=500000.0, rms_eps=1e-5, tie_embeddings=True,
                    attention_bias=False, max_position=131072),
        ModelConfig("qwen2.5-7b", "qwen2", hidden=3584, layers=28, heads=28, kv_heads=4, head_dim=128,
                    intermediate=18944, vocab=152064, rope_theta=1e6, rms_eps=1e-6, tie_embeddings=False,
                    attention_bias=True, max_position=131072),
        ModelConfig("qwen2.5-14b", "qwen2", hidden=5120, layers=48, heads=40, kv_heads=8, head_dim=128,
                    intermediate=13824, vocab=152064, rope_theta=1e6, rms_eps=1e-5, tie_embeddings=False,
                    attention_bias=True, max_position=131072),
        # test model: every linear dim a multiple of 32, small enough for CPU tests
        ModelConfig("tiny", "llama", hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32,
                    intermediate=384, vocab=512, rope_theta=10000.0, rms_eps=1e-5, tie_embeddings=False,
                    attention_bias=False, max_position=2048),
    )
}
DEFAULT_MODELS = ("llama3.2-1b", "llama3.2-3b", "qwen2.5-7b", "qwen2.5-14b")


def builtin_names() -> list[str]:
    return list(BUILTIN_MODELS)


def get_model(name_or_path: "str | Path") -> ModelConfig:
    """A built-in name (case-insensitive) or a Hugging Face model directory / config.json.

    An existing path wins over a built-in of the same name.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return ModelConfig.from_hf_config(path)
    key = text.strip().lower()
    if key in BUILTIN_MODELS:
        return BUILTIN_MODELS[key]
    if "/" in text or text.startswith((".", "~")) or text.endswith(".json"):
        raise FileNotFoundError(f"model directory {text} does not exist")
    raise ValueError(f"unknown model {text!r}: not a directory and not a built-in "
                     f"({', '.join(BUILTIN_MODELS)})")


# --- helpers -------------------------------------------------------------------------------
def _read_hf_config(source) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "config"
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (a Hugging Face model directory needs config.json)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg, str(path)


def _family(cfg: dict, where: str) -> str:
    mt = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if mt is not None:
        if mt in FAMILIES:
            return mt
        what = f"model_type {mt!r}" + (f" ({', '.join(map(str, archs))})" if archs else "")
    else:
        for fam, arch in FAMILIES.items():
            if arch in archs:
                return fam
        what = f"architectures {archs!r}" if archs else "no model_type or architectures"
    raise ValueError(f"{where}: unsupported architecture, {what}; supported: {_supported()}")
