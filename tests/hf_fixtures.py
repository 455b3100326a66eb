"""Tiny Hugging Face checkpoints written on the fly (safetensors + a hand-written config.json).

Independent of the code under test: no slidesparse import, no transformers. Used by
test_checkpoint.py and test_convert_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def hf_config(family: str = "llama", *, hidden=128, layers=2, heads=4, kv=2, head_dim=32, inter=384,
              vocab=256, tie=False, **extra) -> dict:
    cfg = {
        "architectures": [ARCH.get(family, family)], "model_type": family,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": tie, "torch_dtype": "bfloat16", "hidden_act": "silu",
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    cfg.update(extra)
    return cfg


def ct_quant_config(qdtype: str, *, dynamic: bool = True) -> dict:
    """compressed-tensors W8A8: per-channel symmetric weights, dynamic per-token activations."""
    typ = "int" if qdtype == "int8" else "float"
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized" if qdtype == "int8" else "float-quantized",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": typ, "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {"num_bits": 8, "type": typ, "symmetric": True, "strategy": "token",
                                  "dynamic": dynamic},
        }},
        "ignore": ["lm_head"],
        "quantization_status": "compressed",
    }


def make_tensors(cfg: dict, *, dtype=torch.bfloat16, quant: str | None = None, seed: int = 0,
                 scale_dtype=torch.float32, scale_2d: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    q_n, kv_n = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).to(dtype)

    t = {"model.embed_tokens.weight": rnd(V, H)}
    shapes = {"self_attn.q_proj": (q_n, H), "self_attn.k_proj": (kv_n, H), "self_attn.v_proj": (kv_n, H),
              "self_attn.o_proj": (H, q_n), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
              "mlp.down_proj": (H, I)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1 + rnd(H).float() * 0.1).to(dtype)
        t[p + "post_attention_layernorm.weight"] = (1 + rnd(H).float() * 0.1).to(dtype)
        for mod, (n, k) in shapes.items():
            w = rnd(n, k)
            if quant is None:
                t[p + mod + ".weight"] = w
            else:  # a simple symmetric per-channel quantizer, written independently of slidesparse
                qmax = 127.0 if quant == "int8" else 448.0
                s = w.float().abs().amax(1, keepdim=True) / qmax
                x = w.float() / s
                q = x.round().clamp(-127, 127).to(torch.int8) if quant == "int8" else x.to(torch.float8_e4m3fn)
                t[p + mod + ".weight"] = q
                t[p + mod + ".weight_scale"] = (s if scale_2d else s.reshape(-1)).to(scale_dtype)
            if cfg["model_type"] == "qwen2" and mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                t[p + mod + ".bias"] = rnd(n)
    t["model.norm.weight"] = torch.ones(H, dtype=dtype)
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = rnd(V, H)
    return t


def write_hf(path: Path, cfg: dict, tensors: dict[str, torch.Tensor], *, shards: int = 1) -> Path:
    """Write config.json and model.safetensors, or ``shards`` files plus the HF index."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    names = list(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, str(path / "model.safetensors"),
                  metadata={"format": "pt"})
        return path
    per = -(-len(names) // shards)
    wm = {}
    for i in range(shards):
        fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i * per:(i + 1) * per]
        save_file({n: tensors[n].contiguous() for n in part}, str(path / fn), metadata={"format": "pt"})
        wm.update({n: fn for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return path


def build(path: Path, family: str = "llama", *, dtype=torch.bfloat16, quant: str | None = None, shards: int = 1,
          seed: int = 0, scale_dtype=torch.float32, scale_2d: bool = True, **cfg_kw) -> Path:
    """One call: config + tensors + files. ``quant`` ('int8' | 'fp8') writes a compressed-tensors W8A8."""
    cfg = hf_config(family, **cfg_kw)
    if quant is not None:
        cfg["quantization_config"] = ct_quant_config(quant)
    tensors = make_tensors(cfg, dtype=dtype, quant=quant, seed=seed, scale_dtype=scale_dtype, scale_2d=scale_2d)
    (Path(path)).mkdir(parents=True, exist_ok=True)
    (Path(path) / "tokenizer_config.json").write_text("{}")
    return write_hf(path, cfg, tensors, shards=shards)
