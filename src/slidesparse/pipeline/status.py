"""Run status (JSON, rewritten atomically after every change) and the run's timestamped text log.

Files of one run, under ``<results>/logs/``:
    pipeline_<YYYYmmdd_HHMMSS>.log            timestamped text log ("2026-01-27 21:10:03  message")
    pipeline_<YYYYmmdd_HHMMSS>_status.json    the status document below
(a run starting in the same second as an earlier one gets ``_<n>`` after the timestamp).

Status document (schema 1)::

    {"schema": 1,
     "started": "2026-01-27T05:39:00Z", "finished": "...Z" | null (still running or killed),
     "machine": hw.MachineInfo.to_dict(),        # the CPU's, with gpu "CPU", on the reference backend
     "hwtag": "H100_cc90_py312_cu130_x86_64",    # without dtype (ledger / tuning); results add it
     "argv": [...],                              # the command line
     "matrix": {"models", "model_sources", "dtypes", "backends", "patterns", "patterns_paper",
                "impl": {"dense", "sparse"}, "prefill_m", "decode_m"},
     "tasks": {"1": {"name": "download", "status": S, "reason": str, "start": "...Z" | null,
                     "duration_s": float | null, "details": {...}}, ... "7": {...}},
     "cases": {case_id: {"stage", "model", "dtype", "backend", "pattern", "status": S,
                         "done_m": [M...], "failed_m": [M...],   # the ledger's state after this run
                         "resumed_m": [M...],     # done in an earlier run, not rerun
                         "skipped_failed_m": [M...],  # failed earlier, not retried (no --retry-failed)
                         "failures": [{"M", "error_type", "message", "location"}],
                         "impl", "setup_s", "duration_s", "log": "logs/cases_<hwtag>/<case>.log"}},
     "known_issues": [{"kind": str, "detail": str}],
     "reference_backend": bool,
     "ledger": "logs/ledger_<hwtag>.jsonl", "results": "<results dir as given>"}

Task "details" (free-form but stable):
    1 download   {"downloaded": ["org/name -> path"], "notes": [str]}
    2 convert    {"converted": [dir], "existing": [dir], "failed": [str], "notes": [str]}
    3/4 tune     {"library", "shapes": [[N, K]], "m_list", "gemm": {dtype: {"out_dtype", "tuned", "present",
                  "failed": [str]}}, "kernels": [str]}  (or {"error_type", "location"} when the worker failed)
    5 check      {"checks": [{"model", "dtype", "pattern", "pattern_paper", "M", "layers", "layers_total",
                  "max_abs_diff", "max_abs_ref", "rel_err" (max |diff| / max |ref|), "rel_l2"
                  (||diff|| / ||ref||), "identical", "metric" ("rel_err" INT8 | "rel_l2" FP8),
                  "tolerance", "passed", "impl_dense", "impl_sparse",
                  FP8 only: "noise_floor_rel_l2", "impl_floor"; INT8 only: "fast_gemm_out" (the
                  benchmarked epilogue, e.g. "bfloat16+alpha"), "fast_rel_l2", "fast_tolerance"}]}
    6/7 sweep    {"cases", "case_m", "done", "failed", "resumed", "skipped_failed", "ran"}

Task status S: PENDING (not started yet), RUNNING, SUCCESS, FAILED, SKIPPED (with the reason:
not selected, reference backend, nothing to do, not run after an interruption), INTERRUPTED.
Case status: PENDING, RUNNING, SUCCESS (every M done), FAILED (some M failed), INTERRUPTED.
A finished run has no PENDING or RUNNING task. Paths inside are relative to the results root.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from pathlib import Path

from ..fsutil import atomic_write_text

SCHEMA = 1
TASK_STATES = ("PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED", "INTERRUPTED")
CASE_STATES = ("PENDING", "RUNNING", "SUCCESS", "FAILED", "INTERRUPTED")


def iso_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_run_files(logs_dir: Path) -> tuple[str, Path, Path]:
    """(run id, log path, status path): the log is created exclusively, so two runs never share."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    for n in range(1000):
        run = stamp if n == 0 else f"{stamp}_{n}"
        log = logs_dir / f"pipeline_{run}.log"
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return run, log, logs_dir / f"pipeline_{run}_status.json"
    raise FileExistsError(f"too many pipeline runs started at {stamp} in {logs_dir}")


class RunLog:
    """Timestamped text log; every line is flushed at once (a killed run keeps all it logged)."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            for i, line in enumerate(str(message).splitlines() or [""]):
                self._f.write(f"{stamp}  {'  ' if i else ''}{line}\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


class RunStatus:
    """The status document of one run; ``write()`` replaces the file atomically."""

    def __init__(self, path: Path, *, machine: dict, hwtag: str, argv: list[str], matrix: dict,
                 reference_backend: bool, task_names: dict[int, str], ledger: str, results: str):
        self.path = path
        self.doc = {
            "schema": SCHEMA, "started": iso_now(), "finished": None, "machine": machine, "hwtag": hwtag,
            "argv": list(argv), "matrix": matrix,
            "tasks": {str(n): {"name": name, "status": "PENDING", "reason": "", "start": None,
                               "duration_s": None, "details": {}} for n, name in task_names.items()},
            "cases": {}, "known_issues": [], "reference_backend": bool(reference_backend),
            "ledger": ledger, "results": results,
        }
        self.write()

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.doc, indent=1, default=str) + "\n")

    # --- tasks ----------------------------------------------------------------------------
    def task(self, n: int) -> dict:
        return self.doc["tasks"][str(n)]

    def task_set(self, n: int, status: str, reason: str = "", details: dict | None = None,
                 duration_s: float | None = None, start: str | None = None) -> None:
        if status not in TASK_STATES:
            raise ValueError(f"unknown task status {status!r}")
        t = self.task(n)
        t["status"] = status
        t["reason"] = reason
        if start is not None:
            t["start"] = start
        if duration_s is not None:
            t["duration_s"] = round(duration_s, 3)
        if details is not None:
            t["details"] = details
        self.write()

    # --- cases ----------------------------------------------------------------------------
    def case(self, case_id: str) -> dict:
        return self.doc["cases"][case_id]

    def case_init(self, case, *, log: str, impl: str, resumed: list[int], failed_before: list[int],
                  failures_before: list[dict]) -> dict:
        c = {"stage": case.stage, "model": case.model, "dtype": case.qdtype, "backend": case.backend,
             "pattern": case.pattern_label, "status": "PENDING", "done_m": sorted(resumed),
             "failed_m": sorted(failed_before), "resumed_m": sorted(resumed),
             "skipped_failed_m": sorted(failed_before), "failures": list(failures_before), "impl": impl,
             "setup_s": None, "duration_s": 0.0, "log": log}
        self.doc["cases"][case.id] = c
        return c

    def add_issue(self, kind: str, detail: str) -> None:
        issue = {"kind": kind, "detail": detail}
        if issue not in self.doc["known_issues"]:
            self.doc["known_issues"].append(issue)
            self.write()

    def finish(self) -> None:
        self.doc["finished"] = iso_now()
        self.write()
