"""The pipeline ledger: one JSON line per (case, M) outcome, the record a rerun resumes from.

File: ``<results>/logs/ledger_<hwtag>.jsonl`` with hwtag = the machine's hardware tag WITHOUT the
dtype part (``H100_cc90_py312_cu130_x86_64``, ``CPU_py311_cpu_x86_64``): one ledger per machine,
covering every dtype. Each line is one JSON object with exactly these keys:

    case        case id, e.g. "decode/qwen2.5-7b/INT8/cusparselt/2_8" (see pipeline.cases)
    stage       "prefill" | "decode"
    model       model name as in the case id
    dtype       "int8" | "fp8" (the case id carries the tag, INT8 / FP8E4M3)
    backend     the role: "cublaslt" (dense baseline) | "cusparselt" (sparse)
    pattern     "dense" | "2_L"
    M           int
    status      "done" | "failed"
    error_type  null, or an exception class ("torch.OutOfMemoryError", "RuntimeError"),
                "Signal SIGABRT" / "Signal SIGSEGV" / ..., "Timeout", "Exit code N"
    message     null, or a one-paragraph description of the failure
    location    null, or "file:line" of the innermost frame in slidesparse's source (else the
                innermost frame) of the failing worker's stack
    duration_s  seconds the M took (start of the M to its result or failure)
    time_utc    "YYYY-mm-ddTHH:MM:SSZ" when the line was written
    hwtag       the ledger's hardware tag (no dtype)
    impl        what actually ran the GEMMs: "cublaslt", "cusparselt", "reference-dense",
                "reference-sparse" (the planned one when the worker died before saying)

Durability: a line is appended with ONE ``os.write`` of the complete line (O_APPEND) followed by
``fsync``, so a process killed at any moment (SIGKILL included) leaves whole lines only. A torn
last line can still come from a power loss or a full disk: reading ignores any line that does not
parse (with a :class:`LedgerWarning`), and the first append of a process first ends such a line
with a newline so later lines stay whole.

Resume rule: the LATEST line of a (case, M) is its state. A rerun skips every (case, M) whose latest
line is "done"; a "failed" one is skipped too (and reported) unless the pipeline runs with
``--retry-failed``; ``--fresh`` ignores the ledger (and keeps appending to it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

KEYS = ("case", "stage", "model", "dtype", "backend", "pattern", "M", "status", "error_type", "message",
        "location", "duration_s", "time_utc", "hwtag", "impl")
STATUSES = ("done", "failed")


class LedgerWarning(UserWarning):
    """A ledger line that could not be read (torn by a crash, or edited by hand) was ignored."""


def ledger_path(results: str | os.PathLike, hwtag: str) -> Path:
    if not hwtag or "/" in hwtag or hwtag in (".", ".."):
        raise ValueError(f"hardware tag must be one folder name, got {hwtag!r}")
    return Path(results) / "logs" / f"ledger_{hwtag}.jsonl"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class LedgerProblem:
    line: int      # 1-based line number
    text: str      # the start of the offending line
    reason: str


def _check_entry(e) -> str | None:
    """Why ``e`` is not a ledger entry (None when it is one)."""
    if not isinstance(e, dict):
        return f"not a JSON object ({type(e).__name__})"
    missing = [k for k in KEYS if k not in e]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if e["status"] not in STATUSES:
        return f"status {e['status']!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(e["M"], int) or isinstance(e["M"], bool):
        return f"M {e['M']!r} is not an integer"
    if not isinstance(e["case"], str):
        return "case is not a string"
    return None


class Ledger:
    """Append-only JSON-lines ledger (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.problems: list[LedgerProblem] = []
        self._repaired = False

    # --- reading ------------------------------------------------------------------------
    def read(self) -> list[dict]:
        """All readable entries in file order; unreadable lines are skipped with a warning and
        listed in ``self.problems``."""
        self.problems = []
        if not self.path.exists():
            return []
        entries = []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                e = json.loads(raw.decode("utf-8"))
                why = _check_entry(e)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                e, why = None, f"not valid JSON ({err.msg if hasattr(err, 'msg') else err})"
            if why is not None:
                torn = i == len(lines) and not data.endswith(b"\n")
                reason = ("torn last line (the writer was cut off); ignored" if torn
                          else f"unreadable line ignored: {why}")
                text = raw[:120].decode("utf-8", "replace")
                self.problems.append(LedgerProblem(i, text, reason))
                warnings.warn(f"{self.path}:{i}: {reason}: {text!r}", LedgerWarning, stacklevel=2)
                continue
            entries.append(e)
        return entries

    def latest(self) -> dict[tuple[str, int], dict]:
        """(case id, M) -> its latest entry."""
        out: dict[tuple[str, int], dict] = {}
        for e in self.read():
            out[(e["case"], e["M"])] = e
        return out

    # --- writing ------------------------------------------------------------------------
    def append(self, entry: dict) -> dict:
        """Validate and append one entry durably (one os.write of the whole line, then fsync)."""
        e = {k: entry.get(k) for k in KEYS}
        extra = sorted(set(entry) - set(KEYS))
        if extra:
            raise ValueError(f"ledger entry has unknown key(s) {', '.join(extra)}; allowed: {', '.join(KEYS)}")
        if e["time_utc"] is None:
            e["time_utc"] = utc_now()
        why = _check_entry(e)
        if why is not None:
            raise ValueError(f"invalid ledger entry ({why}): {e}")
        line = (json.dumps(e, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not self._repaired:
                self._repaired = True
                if self._ends_torn(fd):
                    line = b"\n" + line  # end the torn line so this one stays whole
            n = os.write(fd, line)
            if n != len(line):  # a regular file only writes short on a full disk
                raise OSError(f"short write to {self.path} ({n} of {len(line)} bytes); disk full?")
            os.fsync(fd)
        finally:
            os.close(fd)
        return e

    def _ends_torn(self, fd: int) -> bool:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"
