#!/usr/bin/env python3
"""Download every wheel SlideSparse needs on a GPU machine into one folder, for an offline install:

    python tools/wheelhouse.py --python 3.12 --platform aarch64 --cuda cu130 --dest wheelhouse/spark
    # on the offline machine:
    pip install --no-index --find-links wheelhouse/spark slidesparse

Three pip calls (``--dry-run`` prints them):
  1. torch of the CUDA line from the PyTorch index (download.pytorch.org/whl/<cu129|cu130>), with the
     wheels it pins (nvidia-* incl. cuSPARSELt, triton, ...): that index carries them all;
  2. the package's other requirements (pyproject.toml, torch left out) from PyPI, triton included
     for torch builds that do not declare it;
  3. SlideSparse itself, built as a wheel (``pip wheel --no-deps``).

Each download names the target (``--python-version/--implementation/--abi/--platform``) and takes
binary wheels only, so a wheelhouse can be made for another Python. pip evaluates environment markers
such as ``platform_machine`` for the machine it runs on, not for ``--platform``: make an aarch64
wheelhouse on an aarch64 machine (a warning says so otherwise).
"""

from __future__ import annotations

import argparse
import platform
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_INDEX = "https://download.pytorch.org/whl/{cuda}"
CUDA_LINES = ("cu129", "cu130")
MACHINES = ("x86_64", "aarch64")
DEFAULT_GLIBC = "2.35"   # Ubuntu 22.04 (24.04 has 2.39); every older manylinux tag is accepted too


def _req_name(req: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements(pyproject: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The package's requirements (plus the given extras'), torch left out (it comes from the CUDA index)."""
    data = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(data.get("dependencies", []))
    opt = data.get("optional-dependencies", {})
    for e in extras:
        if e not in opt:
            raise ValueError(f"extra {e!r} is not declared in {pyproject} (declared: {', '.join(sorted(opt))})")
        reqs += opt[e]
    return [r for r in reqs if _req_name(r) != "torch"]


def target_args(py: str, machine: str, glibc: str = DEFAULT_GLIBC) -> list[str]:
    """pip's options naming the target interpreter and platform (binary wheels only)."""
    if not re.fullmatch(r"3\.\d+", py):
        raise ValueError(f"--python {py!r}: expected MAJOR.MINOR, e.g. 3.12")
    if machine not in MACHINES:
        raise ValueError(f"--platform {machine!r}: expected one of {', '.join(MACHINES)}")
    if not re.fullmatch(r"2\.\d+", glibc) or int(glibc.split(".")[1]) < 17:
        raise ValueError(f"--glibc {glibc!r}: expected 2.N with N >= 17, e.g. 2.35")
    nodot = py.replace(".", "")
    # every manylinux tag the target accepts: pip matches --platform literally (it does not widen
    # manylinux_2_35 to the 2_28 / 2_17 wheels most projects ship)
    minor = int(glibc.split(".")[1])
    plats = [f"manylinux_2_{m}_{machine}" for m in range(minor, 16, -1)] + [f"manylinux2014_{machine}"]
    return ["--only-binary=:all:", "--python-version", py, "--implementation", "cp", "--abi", f"cp{nodot}",
            *[x for p in plats for x in ("--platform", p)]]


def commands(py: str, machine: str, cuda: str, dest: Path, *, torch_spec: str = "torch",
             extras: tuple[str, ...] = (), glibc: str = DEFAULT_GLIBC, pip: tuple[str, ...] | None = None,
             root: Path = ROOT) -> list[list[str]]:
    """The pip calls that fill ``dest`` (see the module docstring)."""
    if cuda not in CUDA_LINES:
        raise ValueError(f"--cuda {cuda!r}: expected one of {', '.join(CUDA_LINES)}")
    pip = list(pip or (sys.executable, "-m", "pip"))
    target = target_args(py, machine, glibc)
    d = str(dest)
    return [
        [*pip, "download", "--dest", d, *target, "--index-url", TORCH_INDEX.format(cuda=cuda), torch_spec],
        [*pip, "download", "--dest", d, *target, *requirements(root / "pyproject.toml", extras)],
        [*pip, "wheel", "--no-deps", "--wheel-dir", d, str(root)],
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="3.12", help="target Python MAJOR.MINOR (default 3.12)")
    ap.add_argument("--platform", default=platform.machine(), help="x86_64 | aarch64 (default: this machine)")
    ap.add_argument("--cuda", default="cu130", help="torch's CUDA line: cu129 | cu130 (default cu130)")
    ap.add_argument("--dest", type=Path, required=True, help="folder for the wheels")
    ap.add_argument("--torch-spec", default="torch", help="torch requirement, e.g. torch==2.10.0")
    ap.add_argument("--extra", action="append", default=[], help="package extras to include too, e.g. test")
    ap.add_argument("--glibc", default=DEFAULT_GLIBC, help=f"target glibc (default {DEFAULT_GLIBC})")
    ap.add_argument("--dry-run", action="store_true", help="print the pip calls, run nothing")
    a = ap.parse_args(argv)
    try:
        cmds = commands(a.python, a.platform, a.cuda, a.dest, torch_spec=a.torch_spec, extras=tuple(a.extra),
                        glibc=a.glibc)
    except ValueError as e:
        print(f"wheelhouse: error: {e}", file=sys.stderr)
        return 2
    if a.platform != platform.machine():
        print(f"wheelhouse: warning: pip evaluates markers (platform_machine) for this {platform.machine()} "
              f"machine, not for {a.platform}: some wheels may be missing; run it on an {a.platform} machine",
              file=sys.stderr)
    for cmd in cmds:
        print("+ " + shlex.join(cmd), flush=True)
        if not a.dry_run and (rc := subprocess.run(cmd).returncode) != 0:
            print(f"wheelhouse: error: pip exited with {rc} (command above); {a.dest} is incomplete", file=sys.stderr)
            return rc
    if not a.dry_run:
        print(f"wheelhouse: {a.dest}; install with: pip install --no-index --find-links {a.dest} slidesparse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
