#!/usr/bin/env python3
"""GPU smoke test (``make smoke-gpu``): is this GPU machine set up right, in at most ~10 minutes?

Steps, each a subprocess sharing one time budget (--time-limit, default 600 s):
  1. the GPU tests: ``pytest -q -m gpu tests/`` (bit-exact Triton kernels, cuBLASLt/cuSPARSELt GEMMs),
     which must include the M*N > 2**31 dequant case ([65536, 37888], test_dequant_beyond_2_31_elements):
     the JUnit file is checked for it, so a renamed or deselected test fails the smoke;
  2. a mini pipeline: tasks 5 (quick check), 6 (prefill), 7 (decode) over tiny + llama3.2-1b,
     int8 + fp8, dense + 2:4 + 6:8, two prefill M and two decode M (--fresh: every case runs);
  3. ``slidesparse report`` on its results.

Before them, the Triton ptxas policy (slidesparse.ptxas) is applied once, so the subprocesses inherit
an override the GPU needs (GB10 with an old Triton). Without CUDA it stops at once (exit code 2).
Exit code 0: every step passed; 1: some step failed. The last lines say where the results are.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIG_CASE = "test_dequant_beyond_2_31_elements"   # [65536, 37888] int32: M*N > 2**31
EXIT_NO_CUDA = 2
PREFILL_M = "256,1024"
DECODE_M = "16,64"


@dataclass(frozen=True)
class Step:
    name: str
    cmd: list[str]


def cli_command() -> list[str]:
    """The `slidesparse` console script of this interpreter's environment, else the one on PATH, else
    ``python -m slidesparse`` when the package is importable without being installed (PYTHONPATH=src)."""
    script = Path(sys.executable).with_name("slidesparse")
    if script.exists():
        return [str(script)]
    found = shutil.which("slidesparse")
    if found is not None:
        return [found]
    if importlib.util.find_spec("slidesparse") is not None:
        return [sys.executable, "-m", "slidesparse"]
    raise FileNotFoundError("no 'slidesparse' command next to this Python or on PATH, and the package is not "
                            "importable: run `make install`")


def plan(results: Path, search: Path, junit: Path, case_timeout: int, cli: list[str],
         python: str = sys.executable) -> list[Step]:
    return [
        Step("gpu tests", [python, "-m", "pytest", "-q", "-m", "gpu", str(ROOT / "tests"), "-p", "no:cacheprovider",
                           f"--junitxml={junit}"]),
        Step("mini pipeline", [*cli, "pipeline", "--tasks", "5,6,7", "--models", "tiny,llama3.2-1b",
                               "--dtypes", "int8,fp8", "--patterns", "2:4,6:8", "--prefill-m", PREFILL_M,
                               "--decode-m", DECODE_M, "--results", str(results), "--search", str(search),
                               "--fresh", "--timeout", str(case_timeout), "--setup-timeout", str(case_timeout)]),
        Step("report", [*cli, "report", str(results)]),
    ]


def check_junit(path: Path, name: str = BIG_CASE) -> str | None:
    """None when test ``name`` ran and passed in the JUnit file, else what went wrong."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return f"cannot read the pytest JUnit file {path}: {e}"
    cases = [c for c in root.iter("testcase") if c.get("name", "").split("[")[0] == name]
    if not cases:
        return f"{name} (the M*N > 2**31 dequant case) did not run: not in {path}"
    for c in cases:
        for tag in ("skipped", "failure", "error"):
            if c.find(tag) is not None:
                return f"{name} (the M*N > 2**31 dequant case) {tag if tag != 'failure' else 'failed'}"
    return None


def cuda_problem() -> str | None:
    """Why this machine cannot run the smoke test, or None."""
    try:
        import torch  # noqa: PLC0415
    except ImportError as e:
        return f"torch is not importable ({e}): run `make install` on the GPU machine"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        return (f"no CUDA GPU visible to torch {torch.__version__} ({build}); run this on a GPU machine "
                "(check nvidia-smi, the driver, CUDA_VISIBLE_DEVICES, and that torch is a CUDA build)")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None,
                    help="results folder (default: a new results/smoke_<UTC time>)")
    ap.add_argument("--search", type=Path, default=Path("search"), help="tuning DB read by the GPU backends")
    ap.add_argument("--time-limit", type=int, default=600, help="seconds for all steps together (default 600)")
    a = ap.parse_args(argv)

    problem = cuda_problem()
    if problem:
        print(f"smoke-gpu: {problem}", file=sys.stderr)
        return EXIT_NO_CUDA

    import torch  # noqa: PLC0415

    from slidesparse.ptxas import apply_ptxas_policy  # noqa: PLC0415

    results = a.results or Path("results") / time.strftime("smoke_%Y%m%d_%H%M%S", time.gmtime())
    results.mkdir(parents=True, exist_ok=True)
    print(f"smoke-gpu: {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
          f"results in {results}; time limit {a.time_limit}s", flush=True)
    try:
        issue = apply_ptxas_policy(lambda s: print(f"smoke-gpu: {s}", flush=True))
    except RuntimeError as e:
        print(f"smoke-gpu: FAIL before any step: {e}", file=sys.stderr)
        return 1
    if issue:
        print(f"smoke-gpu: {issue['detail']}", flush=True)

    junit = results / "pytest_gpu.xml"
    deadline = time.monotonic() + a.time_limit
    outcomes: list[tuple[str, str, float]] = []
    for step in plan(results, a.search, junit, a.time_limit, cli_command()):
        left = deadline - time.monotonic()
        if left <= 0:
            outcomes.append((step.name, "FAIL (time limit reached before it started)", 0.0))
            continue
        print(f"\n=== smoke-gpu: {step.name}: {' '.join(step.cmd)}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(step.cmd, timeout=left, env=os.environ.copy()).returncode
            verdict = "PASS" if rc == 0 else f"FAIL (exit code {rc})"
        except subprocess.TimeoutExpired:
            verdict = f"FAIL (killed at the {a.time_limit}s time limit)"
        if step.name == "gpu tests" and verdict == "PASS":
            why = check_junit(junit)
            verdict = f"FAIL ({why})" if why else verdict
        outcomes.append((step.name, verdict, time.monotonic() - t0))

    print("\n=== smoke-gpu summary")
    for name, verdict, dt in outcomes:
        print(f"  {name:<14} {verdict}  ({dt:.0f}s)")
    ok = all(v == "PASS" for _, v, _ in outcomes)
    print(f"smoke-gpu: {'PASS' if ok else 'FAIL'}; results: {results} (report: {results / 'REPORT.md'}, "
          f"pytest: {junit}, pipeline logs: {results / 'logs'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
