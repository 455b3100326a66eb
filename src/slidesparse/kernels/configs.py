"""Launch configs of the Triton kernels: untuned defaults in code, tuned ones as data.

Tuned configs live in ``<search_dir>/<hwtag>/kernels.json`` (hwtag = ``hw.hardware_tag()``, no
dtype part), written by ``tune.tune_kernel``::

    {"format": "slidesparse.kernel-configs", "version": 1, "hardware": "<hwtag>",
     "entries": {"quant/int8/2_8/3584": [{"m": 64, "config": {...}, "us": 3.1}, ...], ...}}

An entry key is ``kernel/dtype/pattern/K``: kernel in KERNELS; dtype the quantized dtype (int8|fp8)
for the quant kernels and the accumulator dtype (int32|bf16|fp16|fp32) for dequant; pattern the
label (``2_8``) or ``dense``; K the activation's K (for silu_mul_quant: I; for dequant: N).
Lookup by M (``gemm.tuning_db.serving_m``): the smallest bucket ``m >= M``, else the largest below
it, if within 8x of M (M counted as at least 16), else the default. A missing file or entry means
the defaults; a file that exists but cannot be read as this format is an error (ValueError naming
the file), because silently running untuned after a tuning run is how regressions hide.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..fsutil import atomic_write_text
from ..gemm.tuning_db import serving_m
from ..pattern import Pattern

KERNELS = ("quant", "rmsnorm_quant", "silu_mul_quant", "dequant")
QUANT_KERNELS = KERNELS[:3]
FORMAT = "slidesparse.kernel-configs"
VERSION = 1
FILENAME = "kernels.json"
DEFAULT_SEARCH_DIR = Path("search")
M_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

_KEYS = {
    "quant": ("BLOCK_K", "BLOCK_W", "ROWS", "num_warps", "num_stages", "SCATTER", "SPLIT", "PERSIST", "HOIST_W",
              "BLOCK_G", "MAXNREG", "UNIT", "SHRINK"),
    "dequant": ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"),
}
_POW2 = {"BLOCK_K", "BLOCK_W", "BLOCK_M", "BLOCK_N", "num_warps", "UNIT"}
_LIMITS = {"BLOCK_K": (16, 65536), "BLOCK_W": (4, 16384), "ROWS": (1, 64), "num_warps": (1, 32),
           "num_stages": (1, 8), "SCATTER": (0, 1), "SPLIT": (0, 1), "PERSIST": (0, 32), "HOIST_W": (0, 1),
           "BLOCK_G": (0, 16384), "MAXNREG": (0, 255), "UNIT": (1, 4), "SHRINK": (0, 1),
           "BLOCK_M": (1, 1024), "BLOCK_N": (16, 8192)}
# key: value when a config leaves it out. PERSIST: persistent programs per SM (0 = one program per
# row tile), each looping over row tiles with the next tile's loads in flight; it applies to rows
# held whole in registers (ONE_CHUNK), dense or lifted by SCATTER, and is ignored elsewhere.
# HOIST_W (needs PERSIST; RMSNorm only): the weight is loaded once per program, not per row.
# BLOCK_G (lifted rows only): > 0 holds the row as pair tiles of BLOCK_G groups (plus, with SPLIT,
# up to two smaller tiles) and writes its windows from registers in the widest stores its unit of
# groups allows (UNIT; ``quant_kernel_pairs``);
# it takes precedence over BLOCK_K / SCATTER / PERSIST when the windows fit, else it is ignored.
# UNIT (pair tiles): groups a thread holds together, 1 (the default: configs tuned before the key
# keep their meaning), 2 or 4; launch.pair_unit(L) is the fewest whose windows fill 16-byte stores
# (4 at 6:8). SHRINK (pair tiles with SPLIT): the tiles after the first take the largest unit <= UNIT
# that still gives every thread one (``launch.tile_units``): less padding where the rest of a row is
# small; 0 (the default) = every tile in units of UNIT. A split row with SHRINK needs BLOCK_G >=
# UNIT * threads (a unit a thread in the first tile), else the config takes the other kernels.
# MAXNREG: registers a thread may use (ptxas's maxnreg; 0 = the compiler's choice, else 32..255): a
# cap of 65536 / (programs * threads) lets that many programs share an SM, at the risk of spills.
_OPTIONAL = {"num_stages": 1, "SCATTER": 0, "SPLIT": 0, "PERSIST": 0, "HOIST_W": 0, "BLOCK_G": 0, "MAXNREG": 0,
             "UNIT": 1, "SHRINK": 0}
_ACC_NAMES = {torch.int32: "int32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
_ACC_ALIASES = {"int32": "int32", "i32": "int32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16",
                "float16": "fp16", "half": "fp16", "fp32": "fp32", "float32": "fp32", "float": "fp32"}


# Programs per SM of the persistent defaults: as many as an SM holds by the sm_90 compile's
# registers (what the H100 measurement's 'P auto' used): RMSNorm 4 warps with the weight hoisted,
# 156 registers at K = 5120 (tiles 4096 + 1024; 168 at 6144) -> 3, 245 at 8192 -> 2; SiLU 16 warps,
# 118-128 registers (I = 13824, 18944) -> 1.
SILU_PERSIST = 1


def rms_persist(K: int) -> int:
    return 3 if K <= 6144 else 2


# Pair tiles (BLOCK_G, quant_kernel_pairs) where they measured faster than the scatter / window
# re-reads on the H100 (probes of 2026-12-06, M = 4096 and 16384, % of copy bandwidth;
# docs/PERF.md), per (K or I, window L): (BLOCK_G, SPLIT, num_warps, MAXNREG, UNIT, PERSIST, SHRINK).
# SiLU rows not listed keep the scatter. UNIT 4 at 6:8 = 16-byte stores of 4 groups; 1 = a group a
# thread (I = 8192: 96 / 95 against 98 / 91 at M = 16384 / 4096). PERSIST 1 (persistent programs,
# the next row's loads in flight) at 6:8 I = 13824: 90 / 87 -> 98 / 94 (INT8), 90 / 87 -> 93 / 89
# (FP8); since the quantization lost its clamp (``triton_kernels._quantize``), 32 warps in units of
# 2 groups (8-byte stores) beat that: INT8 93 / 89 -> 101 / 98, FP8 96 / 92 -> 100 / 96 (a later
# probe). I = 18944 (2368 groups) in 2048 groups of 16-byte units plus 512 groups a thread (SHRINK),
# persistent: INT8 87 / 80 -> 96 / 93 (8-byte units, the rest padded to 1024 groups before), FP8
# 87 / 83 -> 99 / 95 (a group a thread before).
SILU_PAIRS = {(8192, 8): (1024, 0, 32, 0, 1, 0, 0), (13824, 8): (2048, 0, 32, 0, 2, 1, 0),
              (18944, 8): (2048, 1, 16, 0, 4, 1, 1),
              (8192, 10): (1024, 0, 8, 0, 1, 0, 0), (13824, 10): (1024, 1, 16, 64, 1, 0, 0),
              (18944, 10): (2048, 0, 16, 0, 1, 0, 0)}
# INT8 rows where units of 2 groups (8-byte stores at 6:8) beat the table above (FP8 lost 3-8 points
# there): I = 8192 96 / 94 -> 102 / 98 % (M = 16384 / 4096).
SILU_PAIRS_INT8 = {(8192, 8): (1024, 0, 16, 0, 2, 0, 0)}
# RMSNorm rows where a measured config beat the rule of ``pair_config`` (INT8 / FP8, % of copy at
# M = 16384 / 4096, with the tiles' reductions folded into one, ``triton_kernels._g_rows``): 8:10
# K = 2048 at 1 warp, three tiles (92 / 98 -> 100 / 98, FP8 92 / 99 -> 99 / 101), K = 3072 at 2 warps
# (91 / 93 at 4 warps -> 96 / 97, FP8 88 / 94 -> 96 / 97). 6:8 in 16-byte units, the rest of the row
# in smaller ones (SHRINK), as persistent programs with the weight hoisted: K = 3072 (384 groups) as
# 256 + 128 in units of 4 and 2 at 2 warps, 6 programs an SM: 90 / 92 -> 99 / 102, FP8 97 / 96 ->
# 98 / 100 (the rule's two tiles a group a thread at 4 warps before); K = 3584 (448 groups) as
# 256 + 128 + 64 groups in units of 4, 2, 1 at 2 warps, 4 programs an SM (246 registers in the
# sm_90 compile): 90 / 94 -> 94 / 99, FP8 88 / 96 -> 93 / 95 (one tile of 512 groups at 4 warps
# before); K = 5120 (640 groups) as 512 + 128 in units of 4 and 1 at 4 warps, 3 programs an SM:
# 84 / 90 -> 92 / 97 (units of 2 at 2 warps before), FP8 81 / 84 -> 89 / 95 (a group a thread before).
RMS_PAIRS = {(2048, 10): (128, 1, 1, 0, 1, 0, 0), (3072, 10): (256, 1, 2, 0, 1, 0, 0),
             (3072, 8): (256, 1, 2, 0, 4, 6, 1), (3584, 8): (256, 1, 2, 0, 4, 4, 1),
             (5120, 8): (512, 1, 4, 0, 4, 3, 1)}
PAIR_WINDOWS = (6, 8, 10)  # measured; longer windows (10:12 and up) not measured, no pair defaults


def _pair_entry(got, kernel: str) -> dict | None:
    if got is None:
        return None
    out = {"BLOCK_G": got[0], "SPLIT": got[1], "num_warps": got[2], "MAXNREG": got[3], "UNIT": got[4]}
    if got[6]:
        out["SHRINK"] = 1
    if got[5]:  # persistent; RMSNorm's weight then loaded once a program (as measured)
        out.update(PERSIST=got[5], HOIST_W=int(kernel == "rmsnorm_quant"))
    return out


def pair_groups(K: int, L: int) -> int:
    """Groups a pair-tile launch must cover: those with a slid column below gemm_k (ops.gemm_k)."""
    from .launch import window_groups  # noqa: PLC0415

    return window_groups(Pattern(L).slid_k(K), L)


def pair_config(kernel: str, K: int, L: int, fp8: bool = False) -> dict | None:
    """The pair-tile part of a default config ({BLOCK_G, SPLIT, num_warps, ...}), or None to keep the
    other kernels. SiLU and the RMSNorm rows of ``RMS_PAIRS``: the measured tables (INT8 has its own
    SiLU rows, ``SILU_PAIRS_INT8``). Plain quant up to 1024 groups, 512 at 6:8 (H100: 92-96 % -> 97-100
    % of copy at K = 3072 / 8192 8:10): about two groups a thread in one tile of the next power of two
    (one at 6:8 up to 256 groups); FP8 at 6:8 past 256 groups in two tiles of half that at 8 warps (K =
    3072 / 3584: 93 / 91 and 89 / 88 -> 100 / 98 and 100 / 100 %, where INT8 runs at 97-99 % with one
    tile). RMSNorm (4 warps): one tile up to 256 groups, else the largest power of two plus one more
    tile (2048-5120: 77-87 % -> 80-96 %); a row that needs three tiles keeps the scatter. Quant and
    RMSNorm hold a group a thread (UNIT 1: RMSNorm 6:8 with 16-byte units of 4 groups ran at 51-71 %
    against 81-93 %, fewer threads a row). INT8 and FP8 take the same configs elsewhere (FP8 converts
    pairs in hardware since 2026-12-06: within 2.5 points of the best FP8 candidate in 40 of 48 probed
    cells)."""
    if L not in PAIR_WINDOWS:
        return None
    need = pair_groups(K, L)
    if kernel == "silu_mul_quant":
        return _pair_entry((None if fp8 else SILU_PAIRS_INT8.get((K, L))) or SILU_PAIRS.get((K, L)), kernel)
    if kernel == "quant":
        if need > 1024 or (L == 8 and need > 512):  # 6:8 at 5120 / 8192: 74-90 % against 95-98 %
            return None
        if fp8 and L == 8 and need > 256:
            return {"BLOCK_G": _next_pow2(need) // 2, "SPLIT": 1, "num_warps": 8, "UNIT": 1}
        # about two groups a thread; 6:8 up to 256 groups one (K = 2048 FP8: 93 / 95 -> 98 / 100 %, INT8
        # 97 / 99.5 -> 98 / 99.7 at M = 4096 / 16384)
        per = 32 if L == 8 and need <= 256 else 64
        return {"BLOCK_G": _next_pow2(need), "SPLIT": 0, "num_warps": min(16, max(4, _next_pow2(-(-need // per)))),
                "UNIT": 1}
    if kernel == "rmsnorm_quant" and (got := RMS_PAIRS.get((K, L))) is not None:
        return _pair_entry(got, kernel)
    if kernel == "rmsnorm_quant" and need <= 8192:
        if need <= 256:
            return {"BLOCK_G": _next_pow2(need), "SPLIT": 0, "num_warps": 4, "UNIT": 1}
        bg = 1 << (need.bit_length() - 1)
        if need - bg > 128 and need != 2 * bg:  # rest in two tiles: three in all
            return None
        return {"BLOCK_G": bg, "SPLIT": int(need > bg), "num_warps": 4, "UNIT": 1}
    return None


def _is_fp8(dtype) -> bool:
    """Whether a quant dtype name (or None: unknown, taken as int8) is fp8."""
    if dtype is None:
        return False
    from ..quant import parse_qdtype  # noqa: PLC0415

    try:
        return parse_qdtype(str(dtype).replace("torch.", "")) == "fp8"
    except ValueError:
        return False


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _family(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    return "dequant" if kernel == "dequant" else "quant"


def norm_dtype(kernel: str, dtype) -> str:
    """The dtype part of a key: int8|fp8 for the quant kernels, the accumulator dtype for dequant."""
    if _family(kernel) == "quant":
        from ..quant import parse_qdtype  # noqa: PLC0415

        return parse_qdtype(dtype)
    if isinstance(dtype, torch.dtype):
        if dtype not in _ACC_NAMES:
            raise ValueError(f"dequant accumulator dtype must be int32/bf16/fp16/fp32, got {dtype}")
        return _ACC_NAMES[dtype]
    key = str(dtype).strip().lower().replace("torch.", "")
    if key not in _ACC_ALIASES:
        raise ValueError(f"dequant accumulator dtype must be int32/bf16/fp16/fp32, got {dtype!r}")
    return _ACC_ALIASES[key]


def norm_pattern(pattern) -> str:
    if pattern is None or (isinstance(pattern, str) and pattern.strip().lower() == "dense"):
        return "dense"
    return Pattern.parse(pattern).label


def entry_key(kernel: str, K: int, dtype, pattern) -> str:
    if int(K) <= 0:
        raise ValueError(f"K (or N) must be positive, got {K}")
    pat = "dense" if kernel == "dequant" else norm_pattern(pattern)
    return f"{kernel}/{norm_dtype(kernel, dtype)}/{pat}/{int(K)}"


def default_config(kernel: str, K: int, dtype=None, pattern=None, *, pairs: bool = True) -> dict:
    """Untuned launch config, from H100 sweeps (bf16 input, M = 4096..65536, % of copy bandwidth).

    Lifted rows take pair tiles (BLOCK_G, see ``pair_config``) where those measured faster, unless
    ``pairs`` is False (the config of the other kernels, for comparisons); the rest of this
    docstring is about those.

    Rows whose next power of two is <= 8192 (32768 for a lifted quant, two tiles for a long SiLU
    row) are read once into registers; short plain rows go two per program. A plain lifted row
    reads each window's columns again (BLOCK_W windows at a time, cheap for a plain load); the
    fused producers scatter their quantized columns instead of producing h again per window.

    PERSIST (persistent programs that load the next row while finishing the current one) only
    where it measured faster on an H100 (tools/kernel_variants.py --bench, the 'pf' schedule,
    % of copy bandwidth, production -> pf, M = 4096 / 16384): rmsnorm_quant dense K = 5120
    (int8 81 -> 88 / 80 -> 86, fp8 75 -> 90 / 71 -> 87; 4 warps, weight hoisted) and, since SiLU's
    division lost its slow-path call (triton_kernels._div_by_1pe: fewer registers), silu_mul_quant
    dense INT8 I = 13824 and every I = 18944 at 16 warps (2026-12-06 probes: INT8 97 / 93 and 100 / 96,
    FP8 99 / 94 at M = 16384 / 4096). FP8 at I = 8192 and 13824 does better without it (16 warps;
    13824 capped at 64 registers for two programs an SM). Not for scattered lifts (6:8 gained
    nothing or lost; the pair tiles have their own persistent rows, ``pair_config``), nor dense
    RMSNorm K <= 4096 (3584: 100 -> 79).
    """
    if _family(kernel) == "dequant":
        return {"BLOCK_M": 16, "BLOCK_N": 256, "num_warps": 4, "num_stages": 1}
    lifted = norm_pattern(pattern) not in ("dense", "2_4")
    if lifted and pairs:
        got = pair_config(kernel, K, Pattern.parse(pattern).window, _is_fp8(dtype))
        if got is not None:
            return {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_stages": 1, **got}
    kp = _next_pow2(max(K, 32))
    rows, block_w, extra = 1, 256, {}
    if kernel == "silu_mul_quant":
        # exp + IEEE division per element: h is produced once, from registers. Rows past 8192 go
        # in two tiles (18944 = 16384 + 4096 lanes) with 32 warps; lifted rows are scattered.
        block_w, num_warps = 1024, 8 if (kp <= 8192 and not lifted) else 16
        block_k = kp
        if kp > 32768:  # past 32768 lanes a row does not fit in registers: h produced twice, by chunks
            block_k, num_warps = 16384, 32
        elif kp > 8192:
            block_k, num_warps, extra = kp // 2, 32, {"SPLIT": 1}
        if lifted:
            extra = {**extra, "SCATTER": 1}
            if kp > 16384:  # the scatter at I = 18944 (FP8 6:8 before pair tiles took it: 60 -> 79 %, 32 -> 16 warps)
                num_warps = 16
        elif K == 8192 and _is_fp8(dtype):  # H100: 90 / 87 -> 102 / 99 % of copy (8 -> 16 warps)
            num_warps = 16
        elif 8192 < K <= 16384 and _is_fp8(dtype):  # two programs an SM: 84 / 80 -> 89 / 86 %
            num_warps, extra = 16, {**extra, "MAXNREG": 64}
        elif 8192 < K <= 32768:  # INT8 I = 13824: 97 / 93 %; I = 18944: 74 / 73 -> 100 / 96 %
            num_warps, extra = 16, {**extra, "PERSIST": SILU_PERSIST}
    elif kernel == "rmsnorm_quant" and kp <= 8192:  # three row reductions: one row, 4 warps
        block_k, num_warps = min(kp, 4096), 4
        if K > block_k:  # 5120 = 4096 + 1024 lanes, not 8192
            extra = {"SPLIT": 1}
            if not lifted:  # H100 K = 5120: 71-81 % -> 86-90 % of copy
                extra = {**extra, "PERSIST": rms_persist(K), "HOIST_W": 1}
        if lifted:  # x and w would be read again per window: scatter from registers instead
            extra = {**extra, "SCATTER": 1}
    elif lifted:
        limit = 32768 if kernel == "quant" else 8192
        block_k = kp if kp <= limit else limit // 2
        # about 14-24 columns a thread (H100: K=3072 4 warps 96 %, 5120 8 warps 98 %, 8192 16 warps 98 %)
        num_warps = min(16, max(4, _next_pow2(-(-K // 768))))
        block_w = 1024 if block_k >= 8192 else 256
    else:
        block_k = min(kp, 8192)
        if kp <= 4096:
            rows = 2
        num_warps = 8 if rows * block_k >= 4096 else 4
    return {"BLOCK_K": block_k, "BLOCK_W": block_w, "ROWS": rows, "num_warps": num_warps, "num_stages": 1, **extra}


def validate_config(kernel: str, config, where: str = "config") -> dict:
    """Return a clean copy of ``config`` or raise ValueError saying what is wrong."""
    keys = _KEYS[_family(kernel)]
    if not isinstance(config, dict):
        raise ValueError(f"{where}: a launch config must be an object with keys {keys}, got {config!r}")
    unknown = set(config) - set(keys)
    missing = set(keys) - set(config) - set(_OPTIONAL)
    if unknown or missing:
        raise ValueError(f"{where}: launch config for {kernel} needs keys {keys}"
                         f"{f'; unknown {sorted(unknown)}' if unknown else ''}"
                         f"{f'; missing {sorted(missing)}' if missing else ''}")
    out = {}
    for k in keys:
        v = config.get(k, _OPTIONAL.get(k))
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{where}: {k} must be an integer, got {v!r}")
        lo, hi = _LIMITS[k]
        if not lo <= v <= hi or ((k in _POW2 or (k == "BLOCK_G" and v)) and v & (v - 1)):
            kind = "a power of 2 " if k in _POW2 else "0 or a power of 2 " if k == "BLOCK_G" else ""
            raise ValueError(f"{where}: {k}={v} must be {kind}in [{lo}, {hi}]")
        out[k] = v
    if out.get("MAXNREG") and out["MAXNREG"] < 32:
        raise ValueError(f"{where}: MAXNREG={out['MAXNREG']} must be 0 (the compiler's choice) or in [32, 255]")
    if out.get("HOIST_W") and not out.get("PERSIST"):
        raise ValueError(f"{where}: HOIST_W=1 needs PERSIST > 0 (the weight is loaded once per persistent program)")
    if out.get("HOIST_W") and kernel != "rmsnorm_quant":
        raise ValueError(f"{where}: HOIST_W=1 applies to rmsnorm_quant only (the RMSNorm weight), not {kernel}")
    return out


class KernelConfigs:
    """Config lookups backed by one ``kernels.json`` (re-read when the file changes)."""

    def __init__(self, search_dir: Path | str = DEFAULT_SEARCH_DIR, hwtag: str | None = None,
                 recheck_s: float = 1.0):
        """``recheck_s``: how often (seconds) a lookup checks whether the file changed."""
        self.search_dir = Path(search_dir)
        self.recheck_s = float(recheck_s)
        self._hwtag = hwtag
        self._stamp = None
        self._checked: float | None = None
        self._entries: dict[str, list[tuple[int, dict]]] = {}
        self._memo: dict[tuple, dict] = {}

    @property
    def hwtag(self) -> str:
        if self._hwtag is None:
            from ..hw import hardware_tag  # noqa: PLC0415

            self._hwtag = hardware_tag()
        return self._hwtag

    @property
    def path(self) -> Path:
        return self.search_dir / self.hwtag / FILENAME

    def entries(self) -> dict[str, list[tuple[int, dict]]]:
        """The parsed file (re-read when its mtime or size changes; checked at most every
        ``recheck_s`` seconds, so a lookup on the launch path costs a dict access, not a stat)."""
        now = time.monotonic()
        if self._checked is not None and now - self._checked < self.recheck_s:
            return self._entries
        self._checked = now
        path = self.path
        try:
            st = path.stat()
        except FileNotFoundError:
            if self._stamp is not None or self._entries:
                self._memo.clear()
            self._stamp, self._entries = None, {}
            return self._entries
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._entries = load_entries(path)
            self._stamp = stamp
            self._memo.clear()
        return self._entries

    def lookup(self, kernel: str, K: int, M: int, dtype, pattern) -> dict:
        entries = self.entries()
        memo_key = (kernel, K, M, dtype, pattern)
        try:
            return dict(self._memo[memo_key])
        except (KeyError, TypeError):
            pass
        rows = entries.get(entry_key(kernel, K, dtype, pattern))
        # the tuned M that serves M as in the GEMM tuning DB; none within MAX_M_RATIO (a decode-M config
        # for a prefill) -> the default
        mb = serving_m([m for m, _ in rows], M) if rows else None
        cfg = dict(rows)[mb] if mb is not None else default_config(kernel, K, dtype, pattern)
        try:
            self._memo[memo_key] = cfg
        except TypeError:  # an unhashable argument: no memo
            pass
        return dict(cfg)


def load_entries(path: Path) -> dict[str, list[tuple[int, dict]]]:
    """Parse and validate a kernels.json -> {key: [(m, config), ...] sorted by m}."""
    def bad(why: str) -> ValueError:
        return ValueError(f"kernel config file {path} is not valid ({why}); fix it, or delete it to use "
                          f"the built-in defaults")

    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise bad(f"not JSON: {e}") from None
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"'format' must be {FORMAT!r}")
    if data.get("version") != VERSION:
        raise bad(f"'version' must be {VERSION}, got {data.get('version')!r}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise bad("'entries' must be an object")
    out = {}
    for key, rows in entries.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[0] not in KERNELS or not parts[3].isdigit():
            raise bad(f"entry key {key!r} is not kernel/dtype/pattern/K")
        try:
            if entry_key(parts[0], int(parts[3]), parts[1], parts[2]) != key:
                raise ValueError("not in normal form")
        except ValueError as e:
            raise bad(f"entry key {key!r}: {e}") from None
        if not isinstance(rows, list) or not rows:
            raise bad(f"entry {key!r} must be a non-empty list of buckets")
        parsed = []
        for r in rows:
            if not isinstance(r, dict) or not isinstance(r.get("m"), int) or r["m"] <= 0:
                raise bad(f"entry {key!r}: each bucket needs a positive integer 'm'")
            try:
                parsed.append((r["m"], validate_config(parts[0], r.get("config"), f"{key} m={r['m']}")))
            except ValueError as e:
                raise bad(str(e)) from None
        parsed.sort(key=lambda t: t[0])
        if len({m for m, _ in parsed}) != len(parsed):
            raise bad(f"entry {key!r} repeats an m bucket")
        out[key] = parsed
    return out


def save_entries(path: Path, new: dict[str, list[dict]], hwtag: str) -> Path:
    """Merge ``new`` ({key: [{"m", "config", "us"?}, ...]}) into ``path`` atomically; buckets of the
    same key and m are replaced."""
    path = Path(path)
    if path.exists():
        load_entries(path)  # refuses to merge into a corrupt file
        data = json.loads(path.read_text())
    else:
        data = {"format": FORMAT, "version": VERSION, "hardware": hwtag, "entries": {}}
    for key, rows in new.items():
        merged = {r["m"]: r for r in data["entries"].get(key, [])}
        for r in rows:
            merged[r["m"]] = r
        data["entries"][key] = [merged[m] for m in sorted(merged)]
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    load_entries(path)
    return path


_CACHE: dict[tuple[Path, str | None], KernelConfigs] = {}


def config_for(kernel: str, K: int, M: int, dtype, pattern=None, search_dir: Path | str = DEFAULT_SEARCH_DIR,
               hwtag: str | None = None) -> dict:
    """The launch config for one call: tuned if ``search_dir`` has one for this bucket, else default."""
    key = (Path(search_dir), hwtag)
    if key not in _CACHE:
        _CACHE[key] = KernelConfigs(search_dir, hwtag)
    return _CACHE[key].lookup(kernel, K, M, dtype, pattern)
