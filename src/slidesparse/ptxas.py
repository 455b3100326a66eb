"""Which ptxas Triton should use on this GPU (GB10 / DGX Spark, sm_121a), decided once per process.

Triton assembles its PTX with a ptxas it bundles (``triton/backends/nvidia/bin/``):

* Triton <= 3.5 has one binary, ``ptxas`` (CUDA 12.8 in 3.5), used for every arch and overridden by
  ``TRITON_PTXAS_PATH``. CUDA 12.8 does not know sm_121a: on GB10 every kernel fails with
  "ptxas fatal: Value 'sm_121a' is not defined for option 'gpu-name'" (triton-lang/triton#8539).
* Triton >= 3.6 also ships ``ptxas-blackwell`` (12.9 in 3.6, 13.1 in 3.7), used for arch >= 100 and
  overridden by ``TRITON_PTXAS_BLACKWELL_PATH`` (knobs.py derives the variable from the binary's name).

``decide`` is the pure decision (every input explicit, so tests pass fakes); ``apply_ptxas_policy``
reads the real machine, sets the variable in ``os.environ`` (Triton reads it when it compiles, and
spawned workers inherit it) and returns the record for a pipeline status's ``known_issues``. This
module is the one place in the project that writes those variables.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# compute capability -> the oldest CUDA release whose ptxas assembles its arch-specific target
MIN_PTXAS: dict[tuple[int, int], tuple[int, int]] = {
    (12, 1): (12, 9),   # GB10 (DGX Spark): sm_121a arrived in CUDA 12.9
}
BLACKWELL_MIN_ARCH = 100         # Triton >= 3.6 sends arch >= 100 to ptxas-blackwell
ISSUE_KIND = "ptxas_override"    # the report flags this kind (and any text mentioning ptxas)
INSTALL_HINT = ("install a CUDA toolkit >= {need} (ideally 13.0, as on DGX Spark; e.g. the "
                "'cuda-toolkit-13-0' apt package, or use the nvidia/cuda:13.0.1-devel image) so that "
                "/usr/local/cuda/bin/ptxas exists, or upgrade Triton to >= 3.6 (it bundles ptxas-blackwell "
                "12.9+)")

Version = tuple[int, int]


@dataclass(frozen=True)
class PtxasDecision:
    """``env_var`` = ``path`` to set (None: nothing to set); ``error``: nothing usable was found."""

    reason: str
    env_var: str | None = None
    path: str | None = None
    ptxas_version: Version | None = None
    error: str | None = None

    @property
    def override(self) -> bool:
        return self.env_var is not None


def parse_cc(cc: str | Sequence[int] | None) -> Version | None:
    """'121' / '12.1' / (12, 1) -> (12, 1); '' or None (no GPU) -> None."""
    if cc is None or cc == "":
        return None
    if isinstance(cc, str):
        text = cc.strip()
        m = re.fullmatch(r"(\d+)\.(\d+)", text) or re.fullmatch(r"(\d+)(\d)", text)
        if not m:
            raise ValueError(f"compute capability {cc!r}: expected '12.1', '121' or (12, 1)")
        return int(m.group(1)), int(m.group(2))
    major, minor = cc
    return int(major), int(minor)


def parse_version(text: str) -> Version:
    """'3.6.0' / '3.5.0+git1234' -> (3, 6)."""
    m = re.match(r"(\d+)\.(\d+)", text.strip())
    if not m:
        raise ValueError(f"version {text!r}: expected MAJOR.MINOR[...]")
    return int(m.group(1)), int(m.group(2))


def ptxas_version(path: str) -> Version | None:
    """``ptxas --version`` -> its CUDA release, e.g. (12, 9); None when it cannot run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _v(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


def decide(cc: str | Sequence[int] | None, triton_version: str, bundled_dir: str | os.PathLike | None,
           candidates: Sequence[str], probe: Callable[[str], Version | None],
           current: Mapping[str, str] | None = None) -> PtxasDecision:
    """The ptxas policy for one machine.

    cc: the GPU's compute capability (None: no GPU); triton_version: the installed Triton's version;
    bundled_dir: Triton's ``backends/nvidia/bin``; candidates: system ptxas paths in order of
    preference; probe(path) -> CUDA release of that ptxas or None (missing / not runnable);
    current: the variables already set (an override the user made is kept when it is good enough)."""
    arch = parse_cc(cc)
    if arch is None:
        return PtxasDecision("no GPU: Triton does not assemble anything")
    need = MIN_PTXAS.get(arch)
    if need is None:
        return PtxasDecision(f"cc {_v(arch)}: Triton's bundled ptxas supports it")
    tv = parse_version(triton_version)
    bundled = Path(bundled_dir) if bundled_dir is not None else None
    blackwell = bundled / "ptxas-blackwell" if bundled is not None else None
    # Triton >= 3.6 sends arch >= 100 to its ptxas-blackwell slot (even when that binary is missing)
    uses_blackwell = tv >= (3, 6) and blackwell is not None and arch[0] * 10 + arch[1] >= BLACKWELL_MIN_ARCH
    env_var = "TRITON_PTXAS_BLACKWELL_PATH" if uses_blackwell else "TRITON_PTXAS_PATH"
    own = str(blackwell) if uses_blackwell else (str(bundled / "ptxas") if bundled is not None else None)
    own_v = probe(own) if own else None
    target = f"sm_{arch[0]}{arch[1]}a"

    user = (current or {}).get(env_var)
    if user:
        uv = probe(user)
        if uv is not None and uv >= need:
            return PtxasDecision(f"{env_var}={user} (ptxas {_v(uv)}) was already set and assembles {target}",
                                 env_var, user, uv)
    if own_v is not None and own_v >= need:
        return PtxasDecision(f"Triton {triton_version}'s bundled {Path(own).name} {_v(own_v)} assembles {target}")
    found = []
    for path in dict.fromkeys(candidates):
        v = probe(path)
        found.append(f"{path} ({_v(v) if v else 'not runnable'})")
        if v is not None and v >= need:
            return PtxasDecision(f"Triton {triton_version}'s bundled "
                                 f"{Path(own).name + ' ' + _v(own_v) if own_v else 'ptxas (not found)'} "
                                 f"cannot assemble {target}; using {path} (ptxas {_v(v)})", env_var, path, v)
    looked = ", ".join(found) or "no system ptxas found"
    bad_user = f"; {env_var}={user} is too old or not runnable" if user else ""
    return PtxasDecision(
        f"no ptxas >= {_v(need)} for {target}", error=(
            f"GPU cc {_v(arch)} needs ptxas >= {_v(need)} for {target}, but Triton {triton_version} bundles "
            f"{'ptxas ' + _v(own_v) if own_v else 'no usable ptxas'}{bad_user} and the system has none "
            f"(looked at: {looked}): {INSTALL_HINT.format(need=_v(need))}"))


def system_candidates(cuda_home: str | None, path_ptxas: str | None) -> list[str]:
    """System ptxas paths in order of preference: $CUDA_HOME/bin/ptxas, /usr/local/cuda/bin/ptxas, PATH."""
    out = [str(Path(cuda_home) / "bin" / "ptxas")] if cuda_home else []
    out.append("/usr/local/cuda/bin/ptxas")
    if path_ptxas:
        out.append(path_ptxas)
    return list(dict.fromkeys(out))


def _gpu_cc() -> Version | None:
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability())


def _triton() -> tuple[str, Path | None]:
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return "0.0", None
    return importlib.metadata.version("triton"), Path(spec.origin).parent / "backends" / "nvidia" / "bin"


def apply_ptxas_policy(log: Callable[[str], object] = print, *, cc: str | Sequence[int] | None = None,
                       environ: dict | None = None) -> dict | None:
    """Decide for this machine and set the override (when one is needed) in ``environ`` (os.environ).

    cc: the GPU's compute capability when the caller already knows it (the pipeline probes the GPU in
    a worker); None asks torch. Returns {"kind": "ptxas_override", "detail": ...} for a status's
    ``known_issues`` when an override is in effect, else None. RuntimeError, naming what to install,
    when the GPU needs a newer ptxas than any found (every Triton kernel would fail to compile)."""
    env = os.environ if environ is None else environ
    arch = _gpu_cc() if cc is None else parse_cc(cc)
    if arch is None or arch not in MIN_PTXAS:
        return None
    version, bundled = _triton()
    d = decide(arch, version, bundled,
               system_candidates(env.get("CUDA_HOME") or env.get("CUDA_PATH"), shutil.which("ptxas")),
               ptxas_version, current=env)
    if d.error:
        raise RuntimeError(d.error)
    log(f"ptxas: {d.reason}")
    if not d.override:
        return None
    env[d.env_var] = d.path
    return {"kind": ISSUE_KIND, "detail": f"{d.env_var}={d.path} (ptxas {_v(d.ptxas_version)}): {d.reason}"}
