"""Plan caches of the GPU GEMM backends: an LRU that destroys what it evicts, and the cache keys.

Why per exact M: cuBLASLt matrix layouts and cuSPARSELt matrix descriptors both carry the row
count, so a plan built for one M cannot run another M. A plan costs little host memory (a few
descriptors) and, for cuSPARSELt, ~0.1-1 ms to build, so we build one per distinct M on first use
(or ahead of time with ``warmup``) and keep the most recent ``capacity`` of them; an evicted plan is
destroyed, its next use rebuilds it. cuSPARSELt rounds M up to a multiple of 16 (the dense 8-bit
operand's rule), so at most ceil(M_max / 16) sparse plans exist per shape.

Keys are plain tuples (hashing a tuple of ints is the cheapest lookup Python has; the hot path
does one lookup per call):
    dense  (N, K, M,     qdtype, out_dtype, algo)                  algo: 64 algo bytes | None (auto)
    sparse (N, K, M_pad, qdtype, out_dtype, alpha_vector, config)  config: SparseConfig | None (auto)
"auto" resolves once per key through the tuning DB (bucketed by M) or the library heuristic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import torch

M_ALIGN_SPARSE = 16  # cuSPARSELt: the dense 8-bit operand's dims are multiples of 16

DTYPE_NAMES = {torch.int32: "int32", torch.bfloat16: "bfloat16", torch.float32: "float32",
               torch.float16: "float16"}
NAME_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"unsupported GEMM output dtype {dtype}; "
                         f"use one of {', '.join(DTYPE_NAMES.values())}") from None


def name_dtype(name: str) -> torch.dtype:
    key = str(name).strip().lower().replace("torch.", "")
    key = {"bf16": "bfloat16", "fp32": "float32", "i32": "int32", "fp16": "float16"}.get(key, key)
    try:
        return NAME_DTYPES[key]
    except KeyError:
        raise ValueError(f"unknown GEMM output dtype {name!r}; use one of {', '.join(DTYPE_NAMES.values())}") from None


def pad_m(m: int, align: int = M_ALIGN_SPARSE) -> int:
    """M rounded up to a multiple of ``align`` (at least ``align``)."""
    if m <= 0:
        raise ValueError(f"M must be positive, got {m}")
    return -(-m // align) * align


class SparseConfig(NamedTuple):
    """One cuSPARSELt algorithm choice: kernel config id, split-K, split-K mode (0 = leave the default).

    split_k: 1 = no split; -1 = the library's own split-K choice (what an untouched selection uses;
    cuSPARSELt 0.8 on sm90 accepts it with mode 1 or 2 and rejects explicit factors > 1); n > 1 = n
    splits where the library accepts it. Mode: 1 = one kernel, 2 = two kernels (split + reduce).
    """

    alg_id: int
    split_k: int = 1
    split_k_mode: int = 0

    def label(self) -> str:
        s = f"alg{self.alg_id}"
        if self.split_k != 1:
            s += f"/sk{self.split_k}"
        if self.split_k_mode:
            s += f"/mode{self.split_k_mode}"
        return s


def dense_plan_key(n: int, k: int, m: int, qdtype: str, out_dtype: torch.dtype,
                   algo: bytes | None = None) -> tuple:
    return (n, k, m, qdtype, out_dtype, algo)


def sparse_plan_key(n: int, k: int, m: int, qdtype: str, out_dtype: torch.dtype, alpha_vector: bool = False,
                    config: SparseConfig | None = None, m_align: int = M_ALIGN_SPARSE) -> tuple:
    """The key of the plan that runs an M-row activation (M is padded to ``m_align``)."""
    return (n, k, pad_m(m, m_align), qdtype, out_dtype, bool(alpha_vector), config)


class LruCache:
    """A bounded mapping that calls ``on_evict(value)`` for every value it drops (eviction or clear)."""

    def __init__(self, capacity: int, on_evict: Callable[[Any], None] | None = None):
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._on_evict = on_evict
        self._d: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: Hashable, value: Any) -> None:
        if value is None:
            raise ValueError("LruCache does not store None")
        old = self._d.pop(key, None)
        if old is not None and old is not value:
            self._evict(old)
        self._d[key] = value
        while len(self._d) > self.capacity:
            _, v = self._d.popitem(last=False)
            self._evict(v)

    def clear(self) -> None:
        while self._d:
            _, v = self._d.popitem(last=False)
            self._evict(v)

    def keys(self) -> list:
        return list(self._d)

    def values(self) -> list:
        return list(self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._d

    def _evict(self, v: Any) -> None:
        if self._on_evict is not None:
            self._on_evict(v)
