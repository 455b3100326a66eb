"""The tuning database: the best GEMM algorithm per (N, K, out dtype, M), per library and input dtype.

Layout: ``<search>/<hwtag>/<library>_<DTYPE>.json`` with hwtag = ``hw.hardware_tag()`` (no dtype
part, e.g. ``H100_cc90_py312_cu130_x86_64``), library ``cublaslt`` | ``cusparselt`` and DTYPE
``INT8`` | ``FP8E4M3``. One JSON object per file:

    {"format": 1,
     "meta": {"library", "qdtype", "hwtag", "gpu", "cc", "driver", "versions": {...},
              "created", "updated", "m_list": [...], "timing": {...}},
     "entries": {"N,K,out": {"n": N, "k": K, "out": "int32",
                             "by_m": {"64": {"best": CONFIG, "top": [CONFIG + {"us": t}, ...]}}}}}

CONFIG: cuBLASLt ``{"algo": base64 of the 64-byte cublasLtMatmulAlgo_t, "workspace": bytes,
"attrs": {readable config attributes}}``; cuSPARSELt ``{"alg_id", "split_k", "split_k_mode",
"workspace"}``; both may carry "us" (median time) and "source".

Lookup is by M bucket: the smallest tuned M >= the actual M (its workspace / split-K suit a larger
problem), else the largest tuned M below it, but only within ``MAX_M_RATIO`` (8x) of the actual M
(``serving_m``): a config tuned at M = 64 ran the M = 32768 FP8 down projection of Qwen2.5-7B 3x
slower than a tuned one (H100, 2026-11-25), so a far bucket is a miss. On a miss (no entry, or none
near enough) the caller uses the library heuristic and this module warns once per key, naming the
nearest tuned M. Files are written atomically (a temp file in the same folder, then os.replace), so
an interrupted tune never leaves a half-written DB, and tuning resumes by skipping (N, K, M) already
present.
"""

from __future__ import annotations

import base64
import bisect
import datetime as _dt
import json
import warnings
from pathlib import Path

from ..fsutil import atomic_write_text
from ..hw import DTYPE_TAGS
from ..quant import parse_qdtype

FORMAT_VERSION = 1
LIBRARIES = ("cublaslt", "cusparselt")
OUT_NAMES = ("int32", "bfloat16", "float32", "float16")
ALGO_BYTES = 64  # sizeof(cublasLtMatmulAlgo_t)
MAX_M_RATIO = 8  # a tuned M serves an actual M at most this factor away (see the module docstring)

_REQUIRED = {
    "cublaslt": {"algo": str, "workspace": int},
    "cusparselt": {"alg_id": int, "split_k": int, "split_k_mode": int, "workspace": int},
}


_SUBCOMMAND = {"cublaslt": "coarse", "cusparselt": "fine"}


def serving_m(tuned: list[int], m: int) -> int | None:
    """Of the sorted tuned Ms, the one that serves an actual ``m``: the smallest >= m, else the
    largest < m, the first of these within MAX_M_RATIO of m (m counted as at least 16, the padded M
    the libraries run); None when neither is near enough. Shared with the kernel launch configs."""
    i = bisect.bisect_left(tuned, m)
    run = max(m, 16)
    for mb in (tuned[i] if i < len(tuned) else None, tuned[i - 1] if i > 0 else None):
        if mb is not None and max(mb, run) <= MAX_M_RATIO * min(mb, run):
            return mb
    return None


class TuningMissWarning(UserWarning):
    """No tuned entry for a GEMM shape: the library heuristic runs instead."""


class TuningStaleWarning(UserWarning):
    """The DB was tuned with other library versions than the ones loaded now."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def db_filename(library: str, qdtype: str) -> str:
    if library not in LIBRARIES:
        raise ValueError(f"unknown GEMM library {library!r}; use one of {', '.join(LIBRARIES)}")
    return f"{library}_{DTYPE_TAGS[parse_qdtype(qdtype)]}.json"


def entry_key(n: int, k: int, out: str) -> str:
    return f"{int(n)},{int(k)},{out}"


def encode_algo(raw: bytes) -> str:
    if len(raw) != ALGO_BYTES:
        raise ValueError(f"a cuBLASLt algo is {ALGO_BYTES} bytes, got {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def decode_algo(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError(f"algo is not valid base64 ({e})") from None
    if len(raw) != ALGO_BYTES:
        raise ValueError(f"algo decodes to {len(raw)} bytes, a cuBLASLt algo has {ALGO_BYTES}")
    return raw


class TuningDB:
    """One DB file (library x input dtype). Missing file = empty DB; a corrupt file raises ValueError."""

    def __init__(self, path: Path, library: str, qdtype: str, meta: dict | None = None,
                 entries: dict | None = None):
        self.path = Path(path)
        self.library = library
        self.qdtype = parse_qdtype(qdtype)
        db_filename(library, qdtype)  # validates the library name
        self.meta: dict = meta if meta is not None else {"library": library, "qdtype": self.qdtype}
        self.entries: dict = entries if entries is not None else {}
        self._warned: set = set()
        self._sorted_ms: dict[str, list[int]] = {}

    # --- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: "Path | str", library: str, qdtype: str) -> "TuningDB":
        path = Path(path)
        qd = parse_qdtype(qdtype)
        if not path.exists():
            return cls(path, library, qd)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"tuning DB {path} is not valid JSON ({e}); "
                             "delete it and re-run `slidesparse tune`") from None
        where = f"tuning DB {path}"
        if not isinstance(data, dict):
            raise ValueError(f"{where} must hold a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"{where} has format {data.get('format')!r}, this slidesparse reads format "
                             f"{FORMAT_VERSION}; delete it and re-run `slidesparse tune`")
        meta, entries = data.get("meta"), data.get("entries")
        if not isinstance(meta, dict) or not isinstance(entries, dict):
            raise ValueError(f"{where} needs a 'meta' object and an 'entries' object")
        if meta.get("library") != library or meta.get("qdtype") != qd:
            raise ValueError(f"{where} describes library {meta.get('library')!r} / dtype {meta.get('qdtype')!r}, "
                             f"expected {library!r} / {qd!r}")
        for key, ent in entries.items():
            cls._check_entry(where, library, key, ent)
        return cls(path, library, qd, meta, entries)

    @staticmethod
    def _check_entry(where: str, library: str, key: str, ent) -> None:
        if not isinstance(ent, dict) or not isinstance(ent.get("by_m"), dict):
            raise ValueError(f"{where}: entry {key!r} needs a 'by_m' object")
        n, k, out = ent.get("n"), ent.get("k"), ent.get("out")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, k)) or out not in OUT_NAMES:
            raise ValueError(f"{where}: entry {key!r} needs positive integers n, k and out in {OUT_NAMES}")
        if key != entry_key(n, k, out):
            raise ValueError(f"{where}: entry key {key!r} does not match its n/k/out ({entry_key(n, k, out)})")
        for m, rec in ent["by_m"].items():
            if not (isinstance(m, str) and m.isdigit() and int(m) > 0):
                raise ValueError(f"{where}: entry {key!r} has M {m!r}; M keys are positive integers")
            if not isinstance(rec, dict) or not isinstance(rec.get("best"), dict):
                raise ValueError(f"{where}: entry {key!r} M={m} needs a 'best' object")
            for cfg in [rec["best"], *rec.get("top", [])]:
                TuningDB._check_config(f"{where}: entry {key!r} M={m}", library, cfg)

    @staticmethod
    def _check_config(where: str, library: str, cfg) -> None:
        if not isinstance(cfg, dict):
            raise ValueError(f"{where}: a config must be an object, got {type(cfg).__name__}")
        for field, typ in _REQUIRED[library].items():
            v = cfg.get(field)
            if not isinstance(v, typ) or isinstance(v, bool):
                raise ValueError(f"{where}: config field {field!r} must be {typ.__name__}, got {v!r}")
        if library == "cublaslt":
            try:
                decode_algo(cfg["algo"])
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None

    # --- queries ----------------------------------------------------------------------------
    def tuned_ms(self, n: int, k: int, out: str) -> list[int]:
        key = entry_key(n, k, out)
        ms = self._sorted_ms.get(key)
        if ms is None:
            ent = self.entries.get(key)
            ms = sorted(int(m) for m in ent["by_m"]) if ent else []
            self._sorted_ms[key] = ms
        return ms

    def bucket(self, n: int, k: int, out: str, m: int) -> int | None:
        """The tuned M that serves ``m``: the smallest tuned M >= m, else the largest below it, the
        first of these within MAX_M_RATIO of m; None on a miss."""
        return serving_m(self.tuned_ms(n, k, out), m)

    def has(self, n: int, k: int, out: str, m: int) -> bool:
        ent = self.entries.get(entry_key(n, k, out))
        return bool(ent) and str(int(m)) in ent["by_m"]

    def lookup(self, n: int, k: int, out: str, m: int, *, warn: bool = True) -> dict | None:
        """The best config for this shape (a copy, with 'm_tuned' added), or None (warns once per key)."""
        mb = self.bucket(n, k, out, m)
        if mb is None:
            ms = self.tuned_ms(n, k, out)  # for the message: the tuned M closest to m by ratio
            near = min(ms, key=lambda t: max(t, m) / min(t, m)) if ms else None
            key = (n, k, out) if near is None else (n, k, out, near)
            if warn and key not in self._warned:
                self._warned.add(key)
                where = self.path if self.path.exists() else f"{self.path} (no such file)"
                what = (f"no tuned {self.library} {self.qdtype} config for N={n}, K={k}, out={out}" if near is None
                        else f"the {self.library} {self.qdtype} config for N={n}, K={k}, out={out} nearest to "
                             f"M={m} was tuned at M={near} (more than {MAX_M_RATIO}x away)")
                warnings.warn(
                    f"{what} in {where}; using the library heuristic "
                    f"(run `slidesparse tune {_SUBCOMMAND[self.library]}` with --m covering {m})",
                    TuningMissWarning, stacklevel=3)
            return None
        rec = self.entries[entry_key(n, k, out)]["by_m"][str(mb)]
        return {**rec["best"], "m_tuned": mb}

    def top(self, n: int, k: int, out: str, m: int) -> list[dict]:
        ent = self.entries.get(entry_key(n, k, out))
        if not ent or str(m) not in ent["by_m"]:
            return []
        return list(ent["by_m"][str(m)].get("top", []))

    # --- updates ----------------------------------------------------------------------------
    def put(self, n: int, k: int, out: str, m: int, best: dict, top: list[dict] | None = None, **extra) -> None:
        """Store the tuning result of one (N, K, out, M); ``extra``: JSON-able notes (candidate counts, ...)."""
        if out not in OUT_NAMES:
            raise ValueError(f"unknown output dtype name {out!r}; use one of {OUT_NAMES}")
        self._check_config(f"tuning result N={n} K={k} out={out} M={m}", self.library, best)
        for c in top or []:
            self._check_config(f"tuning result N={n} K={k} out={out} M={m}", self.library, c)
        key = entry_key(n, k, out)
        ent = self.entries.setdefault(key, {"n": int(n), "k": int(k), "out": out, "by_m": {}})
        ent["by_m"][str(int(m))] = {**extra, "best": dict(best), "top": [dict(c) for c in (top or [])]}
        self._sorted_ms.pop(key, None)

    def save(self) -> Path:
        """Write atomically: a temp file in the same folder, then os.replace."""
        self.meta.setdefault("created", now_iso())
        self.meta["updated"] = now_iso()
        self.meta["library"], self.meta["qdtype"] = self.library, self.qdtype
        data = {"format": FORMAT_VERSION, "meta": self.meta, "entries": self.entries}
        return atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def __len__(self) -> int:
        return sum(len(e["by_m"]) for e in self.entries.values())


class TuningStore:
    """The DB files of one machine: ``<search_dir>/<hwtag>/``. DBs load lazily, once."""

    def __init__(self, search_dir: "Path | str" = Path("search"), hwtag: str | None = None):
        self.search_dir = Path(search_dir)
        if hwtag is None:
            from ..hw import hardware_tag  # noqa: PLC0415
            hwtag = hardware_tag()
        self.hwtag = hwtag
        self._dbs: dict[tuple[str, str], TuningDB] = {}

    @property
    def folder(self) -> Path:
        return self.search_dir / self.hwtag

    def path(self, library: str, qdtype: str) -> Path:
        return self.folder / db_filename(library, qdtype)

    def db(self, library: str, qdtype: str) -> TuningDB:
        key = (library, parse_qdtype(qdtype))
        if key not in self._dbs:
            self._dbs[key] = TuningDB.load(self.path(library, qdtype), library, key[1])
        return self._dbs[key]


def check_versions(db: TuningDB, current: dict) -> str | None:
    """A message when ``db`` was tuned under other library versions than ``current`` (None when same/unknown)."""
    tuned = db.meta.get("versions") or {}
    diffs = [f"{k} {tuned[k]} -> {v}" for k, v in current.items() if k in tuned and tuned[k] and v and tuned[k] != v]
    if not diffs:
        return None
    return (f"tuning DB {db.path} was tuned with other library versions ({'; '.join(diffs)}); "
            "its algorithms are re-checked before use, re-run `slidesparse tune` for best speed")
