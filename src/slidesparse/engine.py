"""A small Llama / Qwen2 decoder for end-to-end prefill and decode timing (gpt-fast style).

Every linear (qkv, o, gate_up, down) is a :class:`SlideSparseLinear` on the chosen backend; dense and
sparse engines share everything else (embeddings, RMSNorm, RoPE, SDPA attention, SwiGLU, KV cache,
lm_head in the activation dtype). Weights are seeded synthetic values of the real architecture:
throughput does not depend on the weight values, only on the shapes and the sparsity layout.

Where the activation ops provide fused producers (``rmsnorm_quant``, ``silu_mul_quant``, the Triton
ops), the normalised / activated tensor is quantized (and lifted) in the same pass that reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .gemm import GemmBackend
from .linear import SlideSparseLinear
from .checkpoint import checkpoint_pattern, load_converted
from .models import ModelConfig
from .ops import rope_cache_reference
from .pattern import Pattern
from .quant import quantize_weight
from .sparsify import prune, slide, unslide

PREFILL_SEQ = 1024  # the seed's mapping: M <= 1024 -> one sequence of M, else ceil(M/1024) x 1024


def prefill_batch(M: int) -> tuple[int, int]:
    """Prefill at M tokens -> (sequences, tokens per sequence)."""
    if M <= 0:
        raise ValueError(f"prefill M must be positive, got {M}")
    return (1, M) if M <= PREFILL_SEQ else (-(-M // PREFILL_SEQ), PREFILL_SEQ)


@dataclass(frozen=True)
class EngineSpec:
    """What distinguishes two engines of one model: the linears' dtype, backend and pattern."""

    qdtype: str
    pattern: Pattern | None = None   # None: dense weights, no pruning
    sparse: bool = True              # with a pattern: False = dense GEMM on the pruned weights
                                     # (the quick check's baseline)
    acc_dtype: torch.dtype | None = None  # the linears' GEMM output; None = the fastest legal one
                                          # (linear.gemm_epilogue); torch.int32 = INT8's exact path

    @property
    def slid(self) -> bool:
        return self.pattern is not None and self.sparse


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype, device):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


def _rope_cache(cfg: ModelConfig, max_pos: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    half = cfg.head_dim // 2
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    t = torch.arange(max_pos, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    return freqs.cos(), freqs.sin()


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, linears: dict[str, SlideSparseLinear], dtype, device):
        super().__init__()
        self.cfg = cfg
        self.input_norm = RMSNorm(cfg.hidden, cfg.rms_eps, dtype, device)
        self.post_norm = RMSNorm(cfg.hidden, cfg.rms_eps, dtype, device)
        self.qkv, self.o, self.gate_up, self.down = (linears[k] for k in ("qkv", "o", "gate_up", "down"))

    def _norm_linear(self, norm: RMSNorm, lin: SlideSparseLinear, h: torch.Tensor) -> torch.Tensor:
        fused = getattr(lin.ops, "rmsnorm_quant", None)
        if fused is None:
            return lin(norm(h))
        h2 = h.reshape(-1, h.shape[-1])
        q, s = fused(h2, norm.weight, norm.eps, lin.qdtype, lin.pattern)
        return lin.forward_quantized(q, s, h2.shape[0]).reshape(*h.shape[:-1], lin.out_features)

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        gu = self._norm_linear(self.post_norm, self.gate_up, h)
        fused = getattr(self.down.ops, "silu_mul_quant", None)
        if fused is None:
            g, u = gu.chunk(2, dim=-1)
            return self.down(F.silu(g) * u)
        gu2 = gu.reshape(-1, gu.shape[-1])
        q, s = fused(gu2, self.down.qdtype, self.down.pattern)
        return self.down.forward_quantized(q, s, gu2.shape[0]).reshape(*h.shape[:-1], self.down.out_features)

    def forward(self, h, cos, sin, k_cache, v_cache, pos, mask):
        """h [B, T, hidden]; pos: int64 tensor [T] of the cache slots written; mask [T, S] or None (causal)."""
        cfg = self.cfg
        B, T, _ = h.shape
        qkv = self._norm_linear(self.input_norm, self.qkv, h)
        nq = cfg.heads * cfg.head_dim
        # RoPE + cache write: one fused launch when the ops offer it and the head size is a power of two
        # (the kernel's tile); a dozen small torch ops otherwise
        ops = self.qkv.ops
        fused = getattr(ops, "fused_rope", False) and cfg.head_dim & (cfg.head_dim - 1) == 0
        rope_cache = ops.rope_cache if fused else rope_cache_reference
        q = rope_cache(qkv, cos, sin, pos, k_cache, v_cache, cfg.heads, cfg.kv_heads)
        if mask is None:  # prefill: attend within the new tokens, read back from their cache slots
            k, v = k_cache.index_select(2, pos), v_cache.index_select(2, pos)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            attn = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, enable_gqa=True)
        h = h + self.o(attn.transpose(1, 2).reshape(B, T, nq))
        return h + self._mlp(h)


class DecoderEngine(nn.Module):
    """Embeddings -> layers -> norm -> lm_head, with a static KV cache for decode."""

    def __init__(self, cfg: ModelConfig, layers: list[DecoderLayer], *, embed: torch.Tensor,
                 lm_head: torch.Tensor | None, dtype, device):
        """``embed`` [vocab, hidden]; ``lm_head`` [vocab, hidden] or None when tied to ``embed``."""
        super().__init__()
        self.cfg, self.dtype, self.device = cfg, dtype, torch.device(device)
        self.embed = embed.to(self.device, dtype)
        self.lm_head = self.embed if lm_head is None else lm_head.to(self.device, dtype)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps, dtype, device)
        self.cache_shape: tuple[int, int] | None = None
        self.k_caches: list[torch.Tensor] = []
        self.v_caches: list[torch.Tensor] = []

    # --- KV cache -------------------------------------------------------------------------
    def setup_cache(self, batch: int, max_seq: int) -> None:
        if self.cache_shape == (batch, max_seq):
            return
        cfg = self.cfg
        self.k_caches, self.v_caches = [], []  # free the old ones before allocating
        shape = (batch, cfg.kv_heads, max_seq, cfg.head_dim)
        for _ in range(cfg.layers):
            self.k_caches.append(torch.zeros(shape, dtype=self.dtype, device=self.device))
            self.v_caches.append(torch.zeros(shape, dtype=self.dtype, device=self.device))
        cos, sin = _rope_cache(cfg, max_seq, self.device)
        self.rope_cos, self.rope_sin = cos, sin
        self.cache_shape = (batch, max_seq)

    def _run(self, tokens: torch.Tensor, pos: torch.Tensor, mask) -> torch.Tensor:
        h = F.embedding(tokens, self.embed)
        cos, sin = self.rope_cos.index_select(0, pos), self.rope_sin.index_select(0, pos)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, self.k_caches[i], self.v_caches[i], pos, mask)
        return self.norm(h)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> logits of each sequence's last token [B, vocab]; fills cache slots 0..T-1."""
        B, T = tokens.shape
        if self.cache_shape is None or self.cache_shape[0] != B or self.cache_shape[1] < T:
            raise ValueError(f"cache {self.cache_shape} cannot hold a prefill of {B} x {T}; call setup_cache")
        pos = torch.arange(T, device=self.device)
        h = self._run(tokens, pos, None)
        return F.linear(h[:, -1], self.lm_head)

    @torch.no_grad()
    def decode_step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1], pos int64 [1] (the slot to write) -> logits [B, vocab]. Graph-capturable."""
        S = self.cache_shape[1]
        mask = (torch.arange(S, device=self.device) <= pos)[None, None, None, :]
        h = self._run(tokens, pos, mask)
        return F.linear(h[:, -1], self.lm_head)


def synthetic_weight(gen: torch.Generator, N: int, K: int, device, dtype=torch.float32) -> torch.Tensor:
    """A seeded weight with a realistic spread (std 1/sqrt(K)) and no exact zeros."""
    return (torch.randn(N, K, generator=gen, device=device, dtype=torch.float32) / math.sqrt(K)).to(dtype)


def make_linear(w: torch.Tensor, bias: torch.Tensor | None, spec: EngineSpec, backend: GemmBackend,
                ops, out_dtype, prune_mode: str = "magnitude") -> SlideSparseLinear:
    """Quantize per channel, prune and slide as the spec says, and place on ``backend``."""
    q, s = quantize_weight(w, spec.qdtype)
    if spec.pattern is not None:
        q = prune(q, spec.pattern, mode=prune_mode)
        if spec.sparse:
            q = slide(q, spec.pattern)
    return SlideSparseLinear(q, s, w.shape[1], qdtype=spec.qdtype, backend=backend,
                             pattern=spec.pattern if spec.sparse else None,
                             bias=bias, ops=ops, out_dtype=out_dtype, acc_dtype=spec.acc_dtype)


def build_engine(cfg: ModelConfig, spec: EngineSpec, backend: GemmBackend, ops, *, device="cpu",
                 dtype=torch.bfloat16, seed: int = 0, progress=None) -> DecoderEngine:
    """Build a decoder whose linears run on ``backend``; weights seeded by (seed, layer)."""
    device = torch.device(device)
    shapes = cfg.linear_shapes()
    biases = {"qkv": cfg.attention_bias, "o": False, "gate_up": False, "down": False}
    layers = []
    for i in range(cfg.layers):
        gen = torch.Generator(device=device).manual_seed(seed * 100003 + i)
        lins = {}
        for name, (N, K) in shapes.items():
            w = synthetic_weight(gen, N, K, device)
            b = (torch.randn(N, generator=gen, device=device) * 0.02) if biases[name] else None
            lins[name] = make_linear(w, b, spec, backend, ops, dtype)
            del w
        layers.append(DecoderLayer(cfg, lins, dtype, device))
        if progress is not None:
            progress(i + 1, cfg.layers)
    gen = torch.Generator(device=device).manual_seed(seed + 7919)
    embed = torch.randn(cfg.vocab, cfg.hidden, generator=gen, device=device) * 0.02
    lm_head = None if cfg.tie_embeddings else torch.randn(cfg.vocab, cfg.hidden, generator=gen, device=device) * 0.02
    return DecoderEngine(cfg, layers, embed=embed, lm_head=lm_head, dtype=dtype, device=device)


def build_engine_from_checkpoint(path, backend: GemmBackend, ops, *, sparse: bool = True, device="cpu",
                                 dtype=torch.bfloat16, acc_dtype: torch.dtype | None = None,
                                 progress=None) -> DecoderEngine:
    """A decoder from a ``slidesparse convert`` output. Pattern and dtype come from its metadata.

    ``sparse=True`` runs the slid weights on a sparse ``backend``; ``sparse=False`` runs the same
    pruned weights, un-slid, on a dense backend (the quick check's baseline). A dense checkpoint
    (converted without a pattern) needs ``sparse=False``. ``acc_dtype``: as ``EngineSpec.acc_dtype``."""
    meta, tensors = load_converted(path)
    cfg = ModelConfig(**meta["architecture"])
    pattern, qdtype = checkpoint_pattern(meta), meta["qdtype"]
    if sparse and pattern is None:
        raise ValueError(f"{path} is a dense conversion (no pattern): load it with sparse=False on a dense backend")
    run_pattern = pattern if sparse else None
    if backend.sparse != (run_pattern is not None):
        raise ValueError(f"backend {backend.name} is {'sparse' if backend.sparse else 'dense'}, but this load "
                         f"runs {'the slid weights (sparse)' if run_pattern else 'dense weights'}")
    device = torch.device(device)
    shapes = cfg.linear_shapes()
    layers = []
    for i in range(cfg.layers):
        lins = {}
        for name, (N, K) in shapes.items():
            w, s, b = tensors.linear(i, name)
            if pattern is not None and not sparse:
                w = unslide(w, pattern, K)
            lins[name] = SlideSparseLinear(w.to(device), s.to(device), K, qdtype=qdtype, backend=backend,
                                           pattern=run_pattern, bias=None if b is None else b.to(device),
                                           ops=ops, out_dtype=dtype, acc_dtype=acc_dtype)
        layer = DecoderLayer(cfg, lins, dtype, device)
        with torch.no_grad():
            layer.input_norm.weight.copy_(tensors[f"model.layers.{i}.input_layernorm.weight"])
            layer.post_norm.weight.copy_(tensors[f"model.layers.{i}.post_attention_layernorm.weight"])
        layers.append(layer)
        if progress is not None:
            progress(i + 1, cfg.layers)
    lm_head = None if cfg.tie_embeddings or "lm_head.weight" not in tensors else tensors["lm_head.weight"]
    engine = DecoderEngine(cfg, layers, embed=tensors["model.embed_tokens.weight"], lm_head=lm_head,
                           dtype=dtype, device=device)
    with torch.no_grad():
        engine.norm.weight.copy_(tensors["model.norm.weight"])
    tensors.close()
    return engine
