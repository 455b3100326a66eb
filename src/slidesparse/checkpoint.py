"""Checkpoint conversion: a Hugging Face safetensors model (or a built-in architecture with seeded
synthetic weights) -> a SlideSparse checkpoint directory, plus its loader and verifier.

Per linear weight (q, k, v, o, gate, up, down of every layer): quantize per output channel
(``quant.quantize_weight``; already-quantized compressed-tensors W8A8 weights are taken as they are),
prune to the pattern along K (``sparsify.prune``), slide (``sparsify.slide``). Dense conversion
(pattern None / 'dense') quantizes only: the dense-baseline checkpoint.

Output directory (format version 1):
  config.json              the source's config; ``quantization_config`` becomes
                           {"quant_method": "slidesparse", ...} (a compressed-tensors source's original
                           is kept under ``slidesparse.source_quantization_config``) and a ``slidesparse``
                           block names the pattern, dtype and metadata file
  slidesparse_config.json  everything needed to load without flags (see :func:`_metadata`)
  model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json;
                           every shard's header metadata holds the same JSON under "slidesparse"
  tokenizer / generation files of the source, copied

Tensor naming: each linear keeps its HF name, ``model.layers.{i}.self_attn.q_proj.weight``, and holds
the int8 | float8_e4m3fn weight [N, K'] (K' = pattern.slid_k(K), dense: K' = K); its per-output-channel
scale is ``<weight name>_scale``, i.e. ``...q_proj.weight_scale``, float32 [N] (compressed-tensors'
name, kept 1-D). ``unslide(W) * scale[:, None]`` is the pruned float weight. Everything else
(embeddings, norms, lm_head, biases) is copied unchanged. The runtime fuses q,k,v and gate,up along N.

Bad input raises one clear error before anything is written; the output is assembled in a temporary
directory next to the target (same filesystem) and renamed into place only when complete; on any
failure, KeyboardInterrupt included, the temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import struct
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .models import (BUILTIN_MODELS, LINEAR_PARTS, PROJ_MODULES, ModelConfig, check_gemm_shapes,
                     parse_linear_weight_name)
from .pattern import Pattern
from .quant import parse_qdtype, quantize_weight, torch_qdtype
from .sparsify import check_pattern, is_2to4, lift, prune, slide, unslide

FORMAT = "slidesparse"
FORMAT_VERSION = 1
CONFIG_NAME = "slidesparse_config.json"
SCALE_SUFFIX = "_scale"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 1024**3
PRUNE_MODES = ("magnitude", "random")
SYNTHETIC_RECIPE = "v1: normal(0, 0.02) per tensor (bf16), norms = 1, generator seeded per tensor"
_SYNTH_STD = 0.02
_SYNTH_CHUNK = 1 << 22  # elements generated at a time (fixed: part of the recipe)
_AUX_FILES = ("tokenizer*", "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt",
              "added_tokens.json", "chat_template*", "*.tiktoken")
_FLOAT_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
_QUANT_DTYPES = {"I8": "int8", "F8_E4M3": "fp8"}
_CT_FORMATS = (None, "int-quantized", "float-quantized", "naive-quantized", "dense")

Progress = Callable[[int, int, str], None]  # (done, total, tensor name)


# --- small helpers ---------------------------------------------------------------------------
def tensor_seed(seed: int, name: str) -> int:
    """The per-tensor seed (random pruning, synthetic weights): stable across runs and machines."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def parse_pattern_or_dense(pattern: "Pattern | str | None") -> Pattern | None:
    """None / 'dense' -> None (quantize only); anything else goes through Pattern.parse."""
    if pattern is None or (isinstance(pattern, str) and pattern.strip().lower() == "dense"):
        return None
    return Pattern.parse(pattern)


def pattern_label(pattern: Pattern | None) -> str:
    return "dense" if pattern is None else pattern.label


def default_out_dir(model_name: str, pattern: "Pattern | str | None", qdtype: str,
                    root: "str | Path" = "checkpoints") -> Path:
    """checkpoints/<model>-SlideSparse-<2_L | dense>-<int8 | fp8>."""
    p = parse_pattern_or_dense(pattern)
    return Path(root) / f"{model_name}-SlideSparse-{pattern_label(p)}-{parse_qdtype(qdtype)}"


def scale_name(weight_name: str) -> str:
    return weight_name + SCALE_SUFFIX


def _order_key(name: str):
    m = re.match(r"model\.layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if "embed" in name else 2, 0, name)


def _header_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read(8)
        (n,) = struct.unpack("<Q", raw)
        return raw + f.read(n)


def _to_float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype.is_floating_point else t.to(torch.int32)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality of values (fp8 -0.0 equals +0.0: both are zeros to the GEMM)."""
    return a.shape == b.shape and bool(torch.equal(_to_float(a), _to_float(b)))


def _parse_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"bad device {device!r} ({e}); e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use cpu")
    return dev


# --- sources -----------------------------------------------------------------------------------
class _Source:
    """What conversion reads: names, shapes and dtypes up front (headers only), tensors on demand."""

    kind: str
    cfg: ModelConfig
    raw_config: dict
    entries: dict[str, tuple[tuple[int, ...], str]]  # name -> (shape, safetensors dtype string)

    def get(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        raise NotImplementedError


class _SyntheticSource(_Source):
    """Seeded random weights of a real architecture, generated one tensor at a time."""

    kind = "synthetic"

    def __init__(self, cfg: ModelConfig, seed: int):
        self.cfg, self.seed = cfg, int(seed)
        self.raw_config = cfg.to_hf_config()
        self.entries = {n: (s, "BF16") for n, s in cfg.tensor_shapes().items()}

    def get(self, name: str) -> torch.Tensor:
        shape = self.entries[name][0]
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            return torch.ones(shape, dtype=torch.bfloat16)
        g = torch.Generator().manual_seed(tensor_seed(self.seed, name))
        flat = torch.empty(int(torch.Size(shape).numel()), dtype=torch.bfloat16)
        for lo in range(0, flat.numel(), _SYNTH_CHUNK):
            hi = min(lo + _SYNTH_CHUNK, flat.numel())
            flat[lo:hi] = (torch.randn(hi - lo, generator=g) * _SYNTH_STD).to(torch.bfloat16)
        return flat.view(shape)

    def fingerprint(self) -> str:
        blob = json.dumps({"arch": self.cfg.to_dict(), "seed": self.seed, "recipe": SYNTHETIC_RECIPE},
                          sort_keys=True)
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()

    def describe(self) -> dict:
        return {"kind": "synthetic", "name": self.cfg.name, "seed": self.seed, "recipe": SYNTHETIC_RECIPE,
                "weights": "bf16", "fingerprint": self.fingerprint()}


class _HFSource(_Source):
    """A Hugging Face safetensors directory (single file or sharded with an index)."""

    kind = "hf"

    def __init__(self, path: Path):
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"source model directory {path} does not exist")
        if not path.is_dir():
            raise NotADirectoryError(f"source {path} is not a directory (expected a Hugging Face model "
                                     "directory with config.json and *.safetensors)")
        self.path = path.resolve()
        if (path / CONFIG_NAME).exists():
            raise ValueError(f"{path} is already a SlideSparse conversion ({CONFIG_NAME} present); "
                             "convert the original Hugging Face checkpoint instead")
        cfg_path = path / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path} is missing: a Hugging Face model directory needs config.json")
        try:
            self.config_bytes = cfg_path.read_bytes()
            raw = json.loads(self.config_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{cfg_path} is corrupt: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{cfg_path} is corrupt: expected a JSON object, got {type(raw).__name__}")
        qc = raw.get("quantization_config") or raw.get("compression_config") or {}
        if "slidesparse" in raw or (isinstance(qc, dict) and qc.get("quant_method") == FORMAT):
            raise ValueError(f"{path} is already a SlideSparse conversion (config.json has a slidesparse "
                             "block); convert the original Hugging Face checkpoint instead")
        self.raw_config = raw
        self.cfg = ModelConfig.from_hf_config(raw, name=path.name)
        self.quant_config = self._check_quant_config(qc, cfg_path)
        self.files, self.index_bytes = self._weight_files(path)
        self.entries, self._file_of = self._read_headers(path)
        self._handles: dict[str, object] = {}

    # validation -----------------------------------------------------------------------------
    @staticmethod
    def _check_quant_config(qc, where: Path) -> dict | None:
        if not qc:
            return None
        if not isinstance(qc, dict):
            raise ValueError(f"{where}: quantization_config must be an object")
        method = qc.get("quant_method")
        if method != "compressed-tensors":
            raise ValueError(f"{where}: quantization method {method!r} is not supported; the source must be "
                             "unquantized (bf16/fp16/fp32) or a compressed-tensors W8A8 checkpoint")
        fmt = qc.get("format")
        if fmt not in _CT_FORMATS:
            raise ValueError(f"{where}: compressed-tensors format {fmt!r} is not supported; need int8/fp8 "
                             "weights stored unpacked ('int-quantized' or 'float-quantized')")
        sp = qc.get("sparsity_config") or {}
        if isinstance(sp, dict) and sp.get("format") not in (None, "dense"):
            raise ValueError(f"{where}: compressed-tensors sparse storage {sp.get('format')!r} is not supported; "
                             "save the checkpoint with dense weights")
        for gname, group in (qc.get("config_groups") or {}).items():
            if not isinstance(group, dict):
                continue
            w = group.get("weights") or {}
            if w.get("num_bits", 8) != 8 or w.get("symmetric", True) is False:
                raise ValueError(f"{where}: config group {gname!r} quantizes weights to {w.get('num_bits')} bits "
                                 f"(symmetric={w.get('symmetric')}); only symmetric 8-bit weights are supported")
            if w.get("strategy", "channel") not in ("channel", "tensor"):
                raise ValueError(f"{where}: config group {gname!r} uses weight strategy {w.get('strategy')!r}; "
                                 "only per-channel (or per-tensor) weight scales are supported")
            a = group.get("input_activations") or {}
            if a and a.get("dynamic") is False:
                raise ValueError(f"{where}: config group {gname!r} has static activation scales; SlideSparse "
                                 "quantizes activations dynamically per token (use a dynamic W8A8 checkpoint)")
        return qc

    @staticmethod
    def _weight_files(path: Path) -> tuple[list[Path], bytes | None]:
        index = path / INDEX_NAME
        if index.exists():
            try:
                data = index.read_bytes()
                wm = json.loads(data).get("weight_map")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise ValueError(f"{index} is corrupt ({e})") from None
            if not isinstance(wm, dict) or not wm:
                raise ValueError(f"{index} is corrupt: no weight_map")
            files = [path / f for f in sorted(set(wm.values()))]
            for f in files:
                if not f.exists():
                    raise FileNotFoundError(f"{index} lists shard {f.name}, which is missing")
            return files, data
        single = path / "model.safetensors"
        if single.exists():
            return [single], None
        others = sorted(p.name for p in path.glob("*.safetensors"))
        bins = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        hint = (f"found {', '.join(others)} without {INDEX_NAME}" if others else
                f"found only {', '.join(bins)}: only safetensors are supported" if bins else "no weight files found")
        raise FileNotFoundError(f"{path}: no model.safetensors or {INDEX_NAME} ({hint})")

    def _read_headers(self, path: Path):
        entries, file_of = {}, {}
        for f in self.files:
            try:
                with safe_open(str(f), framework="pt") as h:
                    for name in h.keys():
                        sl = h.get_slice(name)
                        if name in entries:
                            raise ValueError(f"tensor {name} appears in both {file_of[name].name} and {f.name}")
                        entries[name] = (tuple(sl.get_shape()), sl.get_dtype())
                        file_of[name] = f
            except SafetensorError as e:
                raise ValueError(f"{f} is corrupt or truncated: {e}") from None
        if self.index_bytes is not None:
            wm = json.loads(self.index_bytes)["weight_map"]
            for name, fname in wm.items():
                if file_of.get(name) is None or file_of[name].name != fname:
                    raise ValueError(f"{INDEX_NAME} maps {name} to {fname}, but that shard does not hold it")
        return entries, file_of

    # reading ---------------------------------------------------------------------------------
    def get(self, name: str) -> torch.Tensor:
        f = self._file_of[name]
        h = self._handles.get(f.name)
        if h is None:
            h = self._handles[f.name] = safe_open(str(f), framework="pt")
        try:
            return h.get_tensor(name)
        except SafetensorError as e:
            raise ValueError(f"{f}: cannot read {name}: {e}") from None

    def close(self) -> None:
        self._handles.clear()

    def fingerprint(self) -> str:
        """sha256 over config.json, the index and every shard's name, size and header (shapes, dtypes,
        offsets): stable when the directory is copied, changes when the weights are rewritten."""
        h = hashlib.sha256(self.config_bytes)
        if self.index_bytes is not None:
            h.update(self.index_bytes)
        for f in self.files:
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            h.update(_header_bytes(f))
        return "sha256:" + h.hexdigest()

    def weights_kind(self) -> str:
        dts = sorted({self.entries[n][1] for n in self.entries if parse_linear_weight_name(n)})
        return "+".join(dts)

    def describe(self) -> dict:
        return {"kind": "hf", "path": str(self.path), "name": self.cfg.name, "weights": self.weights_kind(),
                "quantization": None if self.quant_config is None else "compressed-tensors",
                "files": {f.name: f.stat().st_size for f in self.files}, "fingerprint": self.fingerprint()}


def _open_source(source, seed: int) -> _Source:
    if isinstance(source, ModelConfig):
        return _SyntheticSource(source, seed)
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return _HFSource(path)
    if text.strip().lower() in BUILTIN_MODELS:
        return _SyntheticSource(BUILTIN_MODELS[text.strip().lower()], seed)
    if "/" in text or text.startswith((".", "~")):
        raise FileNotFoundError(f"source model directory {text} does not exist")
    raise ValueError(f"unknown source {text!r}: not a directory and not a built-in model "
                     f"({', '.join(BUILTIN_MODELS)})")


# --- the plan: what each source tensor becomes -------------------------------------------------
@dataclass
class _Plan:
    linears: dict[str, dict]       # weight name -> {N, K, K_slid, quantized: None|'int8'|'fp8', scale, zp}
    copies: list[str]              # names copied unchanged
    consumed: set[str] = field(default_factory=set)  # source scales / zero points folded into the output
    order: list[str] = field(default_factory=list)


def _plan(src: _Source, pattern: Pattern | None, qdtype: str) -> _Plan:
    cfg, ent = src.cfg, src.entries
    expected = cfg.tensor_shapes()
    missing = [n for n in expected if n not in ent]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"source is missing {len(missing)} tensor(s) the {cfg.family} config implies: "
                         f"{', '.join(missing[:5])}{more}")
    for n, shape in expected.items():
        if tuple(ent[n][0]) != tuple(shape):
            raise ValueError(f"tensor {n} has shape {list(ent[n][0])}, config.json implies {list(shape)}")
    quant_cfg = getattr(src, "quant_config", None)
    linears, consumed = {}, set()
    for name, (shape, dt) in ent.items():
        parsed = parse_linear_weight_name(name)
        if parsed is None:
            continue
        layer, proj = parsed
        if layer >= cfg.layers:
            raise ValueError(f"tensor {name} belongs to layer {layer}, but config.json has {cfg.layers} layers")
        N, K = shape
        info = {"N": N, "K": K, "K_slid": K if pattern is None else pattern.slid_k(K), "quantized": None}
        sname = scale_name(name)
        zp = name[: -len("weight")] + "weight_zero_point"
        if dt in _FLOAT_DTYPES:
            if sname in ent:
                raise ValueError(f"unquantized weight {name} has a {sname} tensor; not a checkpoint layout "
                                 "this tool knows (expected plain bf16/fp16/fp32 or compressed-tensors W8A8)")
        elif dt in _QUANT_DTYPES:
            if quant_cfg is None:
                raise ValueError(f"weight {name} is {dt} but config.json has no compressed-tensors "
                                 "quantization_config; only compressed-tensors W8A8 checkpoints are supported")
            have = _QUANT_DTYPES[dt]
            if have != qdtype:
                raise ValueError(f"source weights are already {have} (W8A8) but {qdtype} was requested; "
                                 f"re-quantizing {have} to {qdtype} is not supported: pass dtype {have}, or "
                                 "convert the unquantized (bf16) checkpoint")
            if sname not in ent:
                raise ValueError(f"quantized weight {name} has no per-channel scale tensor {sname}")
            s_shape, s_dt = ent[sname]
            if s_dt not in _FLOAT_DTYPES or tuple(s_shape) not in ((N,), (N, 1), (1,), (1, 1), ()):
                raise ValueError(f"{sname} has shape {list(s_shape)} ({s_dt}); expected a float per-channel "
                                 f"scale [{N}] or [{N}, 1] (or one per-tensor scale)")
            info.update(quantized=have, scale=sname)
            consumed.add(sname)
            if zp in ent:
                info["zp"] = zp
                consumed.add(zp)
            if name[: -len("weight")] + "input_scale" in ent:
                raise ValueError(f"{name[: -len('.weight')]} has a static input_scale; SlideSparse quantizes "
                                 "activations dynamically per token (use a dynamic W8A8 checkpoint)")
        else:
            raise ValueError(f"weight {name} has dtype {dt}; supported: BF16, F16, F32, or compressed-tensors "
                             "I8 / F8_E4M3 (unpacked W8A8)")
        linears[name] = info
    copies = [n for n in ent if n not in linears and n not in consumed]
    for n in copies:
        if n.endswith(SCALE_SUFFIX) and n[: -len(SCALE_SUFFIX)] in linears:
            raise ValueError(f"tensor {n} collides with the scale this tool writes for its weight")
    order = sorted(list(linears) + copies, key=_order_key)
    return _Plan(linears=linears, copies=copies, consumed=consumed, order=order)


def _quantize_prune(src: _Source, name: str, info: dict, pattern: Pattern | None, qdtype: str,
                    prune_mode: str, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The pruned quantized weight [N, K] and its scale float32 [N] (before sliding)."""
    w = src.get(name)
    if info["quantized"] is None:
        w = w.to(device)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"weight {name} holds NaN or Inf values")
        q, s = quantize_weight(w, qdtype)
    else:
        q = w.to(device)
        s = src.get(info["scale"]).float().reshape(-1)
        if s.numel() == 1:
            s = s.expand(info["N"])
        if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
            raise ValueError(f"{info['scale']} holds non-positive or non-finite scales")
        if "zp" in info and bool(src.get(info["zp"]).ne(0).any()):
            raise ValueError(f"{info['zp']} is not zero: asymmetric weights are not supported")
        if q.dtype != torch_qdtype(qdtype):  # header said I8/F8_E4M3; the data must agree
            raise ValueError(f"weight {name} loaded as {q.dtype}, expected {torch_qdtype(qdtype)}")
    if pattern is not None:
        q = prune(q, pattern, mode=prune_mode, seed=tensor_seed(seed, name))
    return q, s.float().contiguous()


# --- output --------------------------------------------------------------------------------------
_DT_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _shard_layout(src: _Source, plan: _Plan, max_bytes: int) -> tuple[list[str], list[list[str]]]:
    """Output tensor names grouped into shards (in writing order) and the shards' final file names.

    Planned from the headers before anything is written, so every shard's header can carry the
    complete metadata, file list included."""
    sizes: list[tuple[str, int]] = []
    for name in plan.order:
        info = plan.linears.get(name)
        if info is None:
            shape, dt = src.entries[name]
            sizes.append((name, int(torch.Size(shape).numel()) * _DT_BYTES.get(dt, 4)))
        else:
            sizes += [(name, info["N"] * info["K_slid"]), (scale_name(name), 4 * info["N"])]
    shards: list[list[str]] = [[]]
    acc = 0
    for name, b in sizes:
        if shards[-1] and acc >= max_bytes:
            shards.append([])
            acc = 0
        shards[-1].append(name)
        acc += b
    n = len(shards)
    files = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    return files, shards


class _ShardWriter:
    """Writes each shard as soon as all its tensors have arrived (memory stays at about one shard)."""

    def __init__(self, directory: Path, files: list[str], shards: list[list[str]], header: dict[str, str]):
        self.dir, self.files, self.shards, self.header = directory, files, shards, header
        self.next = 0
        self.total = 0  # tensor bytes, HF's index "total_size"
        self.buf: dict[str, torch.Tensor] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        if name not in self.shards[self.next]:
            raise AssertionError(f"tensor {name} arrived out of the planned order")
        t = self.buf[name] = t.detach().to("cpu").contiguous()
        self.total += t.numel() * t.element_size()
        if len(self.buf) == len(self.shards[self.next]):
            save_file(self.buf, str(self.dir / self.files[self.next]), metadata=self.header)
            self.buf = {}
            self.next += 1

    def finish(self) -> None:
        if self.next != len(self.shards):
            raise AssertionError(f"only {self.next} of {len(self.shards)} shards were written")
        if len(self.files) > 1:
            wm = {n: f for f, names in zip(self.files, self.shards) for n in names}
            index = {"metadata": {"total_size": self.total}, "weight_map": wm}
            (self.dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def _metadata(src: _Source, plan: _Plan, pattern: Pattern | None, qdtype: str, prune_mode: str,
              seed: int) -> dict:
    from . import __version__  # noqa: PLC0415 - the package imports this module's siblings first
    import safetensors  # noqa: PLC0415

    cfg = src.cfg
    info = src.describe()
    lin = {}
    for name, (n, k) in cfg.linear_shapes().items():
        lin[name] = {"N": n, "K": k, "K_slid": k if pattern is None else pattern.slid_k(k),
                     "parts": [PROJ_MODULES[p] for p in LINEAR_PARTS[name]]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": cfg.name,
        "architecture": cfg.to_dict(),
        "pattern": None if pattern is None else {"label": pattern.label, "paper": pattern.paper,
                                                 "window": pattern.window},
        "qdtype": qdtype,
        "weight_dtype": str(torch_qdtype(qdtype)).replace("torch.", ""),
        "prune_mode": None if pattern is None else prune_mode,
        "seed": int(seed),
        "tensor_naming": {
            "weight": "HF linear weight name; quantized, pruned and slid: [N, K_slid] (dense: [N, K])",
            "scale": f"<weight name>{SCALE_SUFFIX}: float32 [N], per output channel",
            "fused": "the runtime concatenates q,k,v and gate,up along N",
        },
        "scale_suffix": SCALE_SUFFIX,
        "linears": lin,
        "layers": {n: {k: plan.linears[n][k] for k in ("N", "K", "K_slid")}
                   for n in sorted(plan.linears, key=_order_key)},
        "source": f"synthetic:{cfg.name}" if src.kind == "synthetic" else str(info["path"]),
        "source_info": info,
        "tool": {"slidesparse": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _out_config(src: _Source, meta: dict) -> dict:
    cfg = dict(src.raw_config)
    src_qc = cfg.pop("quantization_config", None) or cfg.pop("compression_config", None)
    block = {"format_version": FORMAT_VERSION, "config": CONFIG_NAME, "pattern": meta["pattern"],
             "qdtype": meta["qdtype"]}
    if src_qc:
        block["source_quantization_config"] = src_qc
    cfg["quantization_config"] = {"quant_method": FORMAT, "qdtype": meta["qdtype"],
                                  "pattern": None if meta["pattern"] is None else meta["pattern"]["paper"],
                                  "weight_scale": "per-channel", "activation_scale": "dynamic per-token"}
    cfg["slidesparse"] = block
    return cfg


def _prepare_out(out_dir, force: bool, src: _Source) -> Path:
    out = Path(out_dir).expanduser().absolute()
    src_path = getattr(src, "path", None)
    if src_path is not None:
        rs, ro = src_path.resolve(), out.resolve()
        if ro == rs:
            raise ValueError(f"output {out} is the source directory; choose another --out")
        if force and ro in rs.parents:
            raise ValueError(f"output {out} contains the source {rs}; replacing it would delete the source")
    if out.exists() or out.is_symlink():
        if not force:
            raise FileExistsError(f"output {out} already exists; pass force=True (--force) to replace it")
        if out.is_symlink() or not out.is_dir():
            raise FileExistsError(f"output {out} exists and is not a directory; refusing to replace it")
        if any(out.iterdir()) and not (out / CONFIG_NAME).exists():
            raise FileExistsError(f"output {out} is a non-empty directory that is not a SlideSparse checkpoint "
                                  f"(no {CONFIG_NAME}); refusing to replace it")
    return out


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temp dir next to ``out``; renamed onto ``out`` on success, removed (with any parent dirs we
    created) on any failure."""
    created = []
    d = out.parent
    while not d.exists():
        created.append(d)
        d = d.parent
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for c in created:  # deepest first
            with contextlib.suppress(OSError):
                c.rmdir()
        raise


def convert_checkpoint(source, out_dir, pattern, qdtype: str, *, force: bool = False,
                       prune_mode: str = "magnitude", seed: int = 0, progress: Progress | None = None,
                       device: "str | torch.device" = "cpu", shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Convert ``source`` into a SlideSparse checkpoint at ``out_dir``; returns the output path.

    source: a Hugging Face safetensors directory (bf16/fp16/fp32, or compressed-tensors W8A8 int8/fp8
    with per-channel ``weight_scale``), a built-in model name (seeded synthetic weights of that
    architecture), or a :class:`ModelConfig` (synthetic). pattern: '6:8' / '2_8' / ... or None /
    'dense' (quantize only). qdtype: 'int8' | 'fp8'. prune_mode: 'magnitude' | 'random' (seeded per
    tensor from ``seed``). progress(done, total, name) is called after each tensor. ``device`` runs
    the quantize/prune/slide math (results are identical on CPU and GPU).
    """
    p = parse_pattern_or_dense(pattern)
    qd = parse_qdtype(qdtype)
    if prune_mode not in PRUNE_MODES:
        raise ValueError(f"prune mode must be one of {', '.join(PRUNE_MODES)}, got {prune_mode!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if shard_bytes <= 0:
        raise ValueError(f"shard size must be positive, got {shard_bytes}")
    device = _parse_device(device)
    src = _open_source(source, seed)
    try:
        check_gemm_shapes(src.cfg, p)
        plan = _plan(src, p, qd)
        out = _prepare_out(out_dir, force, src)
        meta = _metadata(src, plan, p, qd, prune_mode, seed)
        files, shards = _shard_layout(src, plan, shard_bytes)
        meta["files"] = files
        header = {"format": "pt", FORMAT: json.dumps(meta, separators=(",", ":"))}
        total = len(plan.order)
        with _staging(out) as tmp:
            writer = _ShardWriter(tmp, files, shards, header)
            for i, name in enumerate(plan.order, 1):
                info = plan.linears.get(name)
                if info is None:
                    writer.add(name, src.get(name))
                else:
                    q, s = _quantize_prune(src, name, info, p, qd, prune_mode, seed, device)
                    writer.add(name, q if p is None else slide(q, p))
                    writer.add(scale_name(name), s)
                if progress is not None:
                    progress(i, total, name)
            writer.finish()
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            (tmp / "config.json").write_text(json.dumps(_out_config(src, meta), indent=2) + "\n")
            if src.kind == "hf":
                for pat in _AUX_FILES:
                    for f in sorted(src.path.glob(pat)):
                        if f.is_file():
                            shutil.copy2(f, tmp / f.name)
        return out
    finally:
        src.close()


# --- loading --------------------------------------------------------------------------------------
class ConvertedTensors(Mapping):
    """Lazily-read tensors of a converted checkpoint: a read-only mapping name -> tensor."""

    def __init__(self, path: Path, entries: dict[str, tuple[Path, tuple[int, ...], str]]):
        self.path = path
        self._entries = entries
        self._handles: dict[Path, object] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        f = self._entries[name][0]
        h = self._handles.get(f)
        if h is None:
            h = self._handles[f] = safe_open(str(f), framework="pt")
        return h.get_tensor(name)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype_str(self, name: str) -> str:
        return self._entries[name][2]

    def linear(self, layer: int, linear: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The fused linear ('qkv', 'o', 'gate_up', 'down') of ``layer``: (weight [N, K'], scale [N],
        bias [N] or None), q,k,v / gate,up concatenated along N."""
        if linear not in LINEAR_PARTS:
            raise ValueError(f"unknown linear {linear!r}; one of {', '.join(LINEAR_PARTS)}")
        names = [f"model.layers.{layer}.{PROJ_MODULES[p]}" for p in LINEAR_PARTS[linear]]
        for n in names:
            if n + ".weight" not in self._entries:
                raise KeyError(f"{n}.weight is not in {self.path}")
        w = torch.cat([self[n + ".weight"] for n in names])
        s = torch.cat([self[scale_name(n + ".weight")] for n in names])
        has_b = [n + ".bias" in self._entries for n in names]
        b = torch.cat([self[n + ".bias"] for n in names]) if all(has_b) else None
        if any(has_b) and not all(has_b):
            raise ValueError(f"{linear} of layer {layer}: only some of {names} have a bias")
        return w, s, b

    def close(self) -> None:
        self._handles.clear()


def checkpoint_pattern(meta: dict) -> Pattern | None:
    p = meta.get("pattern")
    return None if p is None else Pattern(int(p["window"]))


def load_converted(path) -> tuple[dict, ConvertedTensors]:
    """Open a converted checkpoint: (metadata from slidesparse_config.json, lazily-read tensors)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"converted checkpoint directory {path} does not exist")
    mfile = path / CONFIG_NAME
    if not mfile.exists():
        raise ValueError(f"{path} is not a SlideSparse checkpoint (no {CONFIG_NAME}); create one with "
                         "`slidesparse convert`")
    try:
        meta = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{mfile} is corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{mfile} is not SlideSparse checkpoint metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format version {meta.get('format_version')}; this slidesparse "
                         f"reads version {FORMAT_VERSION}: convert it again")
    for key in ("qdtype", "layers", "files", "architecture", "seed"):
        if key not in meta:
            raise ValueError(f"{mfile} lacks {key!r}")
    try:
        ModelConfig(**meta["architecture"])
        checkpoint_pattern(meta)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{mfile} has a malformed architecture or pattern ({e})") from None
    entries = {}
    for fname in meta["files"]:
        f = path / fname
        if not f.exists():
            raise FileNotFoundError(f"{path}: weight file {fname} listed in {CONFIG_NAME} is missing")
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():
                    sl = h.get_slice(name)
                    entries[name] = (f, tuple(sl.get_shape()), sl.get_dtype())
        except SafetensorError as e:
            raise ValueError(f"{f} is corrupt or truncated: {e}") from None
    for name in meta["layers"]:
        for n in (name, scale_name(name)):
            if n not in entries:
                raise ValueError(f"{path}: tensor {n} (listed in {CONFIG_NAME}) is missing from the weight files")
    return meta, ConvertedTensors(path, entries)


# --- verification -----------------------------------------------------------------------------
@dataclass
class CheckReport:
    path: Path
    pattern: Pattern | None
    qdtype: str
    weights_checked: int = 0
    sampled_layers: list[int] = field(default_factory=list)
    matmuls_checked: int = 0
    source_compared: int = 0
    source_note: str = ""
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _source_for_check(meta: dict, source) -> tuple[_Source | None, str]:
    """The conversion's source, when it can still be read unchanged; else (None, why)."""
    info = meta.get("source_info") or {}
    try:
        if info.get("kind") == "synthetic":
            src = _SyntheticSource(ModelConfig(**meta["architecture"]), int(info["seed"]))
        else:
            where = source if source is not None else info.get("path")
            if where is None or not Path(where).is_dir():
                return None, f"source {where} is not available"
            src = _HFSource(Path(where))
    except (ValueError, OSError, TypeError, KeyError) as e:
        return None, f"source cannot be opened ({e})"
    if src.fingerprint() != info.get("fingerprint"):
        src.close()
        return None, "source changed since the conversion (fingerprint differs)"
    return src, ""


def check_converted(path, samples: int = 2, *, seed: int = 0, source=None, rows: int = 16,
                    progress: Progress | None = None) -> CheckReport:
    """Verify a converted checkpoint; raises ValueError naming the first problem, returns a report.

    Every linear weight: dtype, shape [N, K'], scale float32 [N] finite and positive; for a sparse
    pattern, every 4-column quartet has <= 2 non-zeros (what the 2:4 hardware takes), unslide(W)
    satisfies the pattern, and slide(unslide(W)) == W (the canonical, lossless placement).
    On ``samples`` seeded random layers: lift(X) @ W.T == X @ unslide(W).T exactly for random int8 X
    (int32 math for INT8; float64 for FP8, exact because every partial sum is a multiple of 2^-9 far
    below 2^53), and, when the source is still readable and unchanged (fingerprint), unslide(W) and the
    scale equal prune(quantize_weight(source)) of that layer bit for bit.
    """
    meta, tensors = load_converted(path)
    p = checkpoint_pattern(meta)
    qd = parse_qdtype(meta["qdtype"])
    want = torch_qdtype(qd)
    rep = CheckReport(path=Path(path), pattern=p, qdtype=qd)
    cfg = ModelConfig(**meta["architecture"])
    try:
        names = list(meta["layers"])
        total = len(names)
        for i, name in enumerate(names, 1):
            d = meta["layers"][name]
            N, K, Ks = d["N"], d["K"], d["K_slid"]
            W, s = tensors[name], tensors[scale_name(name)]
            if W.dtype != want or tuple(W.shape) != (N, Ks):
                raise ValueError(f"{name}: stored {W.dtype} {list(W.shape)}, metadata says {want} [{N}, {Ks}]")
            if s.dtype != torch.float32 or tuple(s.shape) != (N,):
                raise ValueError(f"{scale_name(name)}: stored {s.dtype} {list(s.shape)}, expected float32 [{N}]")
            if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
                raise ValueError(f"{scale_name(name)} holds non-positive or non-finite scales")
            if p is not None:
                if Ks != p.slid_k(K):
                    raise ValueError(f"{name}: K_slid {Ks} != {p}.slid_k({K}) = {p.slid_k(K)}")
                if not is_2to4(W):
                    raise ValueError(f"{name} is not 2:4 along K: the sparse GEMM cannot take it")
                U = unslide(W, p, K)
                check_pattern(U, p, name=f"unslide({name})")
                if not _same_values(slide(U, p), W):
                    raise ValueError(f"{name} is not the canonical slide of its values "
                                     "(slide(unslide(W)) != W)")
            rep.weights_checked += 1
            if progress is not None:
                progress(i, total, name)
        scope = "every" if rep.weights_checked else "no"
        if p is not None:
            rep.lines.append(f"{scope} one of {rep.weights_checked} slid weights is 2:4 along K, unslides to "
                             f"{p}, and is the canonical slide of its values")
        else:
            rep.lines.append(f"{rep.weights_checked} dense weights have dtype {qd}, shape [N, K] and valid scales")

        n = max(0, min(int(samples), cfg.layers))
        rep.sampled_layers = sorted(random.Random(seed).sample(range(cfg.layers), n))
        src, why = _source_for_check(meta, source) if n else (None, "no layers sampled")
        try:
            g = torch.Generator().manual_seed(seed)
            for layer in rep.sampled_layers:
                for proj, name in cfg.linear_weight_names(layer).items():
                    if name not in meta["layers"]:
                        continue
                    d = meta["layers"][name]
                    W = tensors[name]
                    U = W if p is None else unslide(W, p, d["K"])
                    if p is not None:
                        X = torch.randint(-127, 128, (rows, d["K"]), generator=g, dtype=torch.int8)
                        if qd == "int8":
                            a = lift(X, p).to(torch.int32) @ W.to(torch.int32).T
                            b = X.to(torch.int32) @ U.to(torch.int32).T
                        else:
                            a = lift(X, p).double() @ W.double().T
                            b = X.double() @ U.double().T
                        if not torch.equal(a, b):
                            raise ValueError(f"{name}: lift(X) @ W_slid.T != X @ unslide(W).T "
                                             f"({int((a != b).sum())} of {a.numel()} outputs differ)")
                        rep.matmuls_checked += 1
                    if src is not None:
                        info = {"N": d["N"], "quantized": None}
                        sname = scale_name(name)
                        if src.entries.get(name, (None, ""))[1] in _QUANT_DTYPES:
                            info.update(quantized=qd, scale=sname)
                        zp = name[: -len("weight")] + "weight_zero_point"
                        if zp in src.entries:
                            info["zp"] = zp
                        q, s = _quantize_prune(src, name, info, p, qd, meta.get("prune_mode") or "magnitude",
                                               int(meta["seed"]), "cpu")
                        if not _same_values(U, q):
                            raise ValueError(f"{name}: unslide(W) differs from prune(quantize(source)) in "
                                             f"{int((_to_float(U) != _to_float(q)).sum())} entries")
                        if not torch.equal(tensors[sname], s):
                            raise ValueError(f"{sname} differs from the scale recomputed from the source")
                        rep.source_compared += 1
        finally:
            if src is not None:
                src.close()
        rep.source_note = why
        if rep.sampled_layers:
            lay = ", ".join(map(str, rep.sampled_layers))
            if p is not None:
                rep.lines.append(f"layers {lay}: lift(X) @ W_slid.T == X @ unslide(W).T exactly for random int8 X "
                                 f"({rep.matmuls_checked} weights, {'int32' if qd == 'int8' else 'float64'} math)")
            if src is not None or rep.source_compared:
                what = "unslide(W)" if p is not None else "W"
                rep.lines.append(f"layers {lay}: {what} and scales equal the source re-quantized"
                                 f"{' and re-pruned' if p is not None else ''} ({rep.source_compared} weights)")
            else:
                rep.lines.append(f"source comparison skipped: {why}")
    finally:
        tensors.close()
    return rep
