"""Hardware tag and machine description, as the seed's folder names: 

    {GPU}_cc{cc}_{DTYPE}_py{XY}_cu{XYZ}_{arch}     e.g. GB10_cc121_INT8_py312_cu129_aarch64
    {GPU}_cc{cc}_py{XY}_cu{XYZ}_{arch}             tuning data (no dtype part)

A machine without CUDA gets an honest CPU tag, e.g. ``CPU_INT8_py311_cpu_x86_64``.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

DTYPE_TAGS = {"int8": "INT8", "fp8": "FP8E4M3"}


def short_gpu_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA A100-SXM4-80GB' -> 'A100', 'NVIDIA GeForce RTX 5080'
    -> 'RTX5080', 'NVIDIA GB10' -> 'GB10': the model, without vendor, memory size or form factor."""
    s = re.sub(r"^(NVIDIA|Nvidia)\s+", "", name.strip())
    s = re.sub(r"^(GeForce|Tesla|Quadro)\s+", "", s)
    s = re.sub(r"[\s-]*\b\d+\s*GB\b.*$", "", s)  # memory size and anything after it
    # form factors, spelled with a space or a dash ('H100 PCIe', 'A100-SXM4-80GB')
    s = re.sub(r"[\s-]+(PCIE|SXM\d*|NVL|HBM\d*E?)(?=[\s-]|$)", "", s, flags=re.IGNORECASE)
    s = re.sub(r"[^A-Za-z0-9]+", "", s)
    return s or "GPU"


@dataclass(frozen=True)
class MachineInfo:
    gpu: str          # short name, "CPU" without CUDA
    gpu_full: str     # the device name as the driver reports it
    cc: str           # "90", "121"; "" on CPU
    memory_gb: float  # GPU memory (GiB); host memory on CPU
    cuda: str         # torch's CUDA runtime, "13.0"; "" on CPU
    driver: str       # driver version, "" when unknown
    python: str       # "3.12"
    arch: str         # machine(), "x86_64" / "aarch64"
    torch: str

    @property
    def has_cuda(self) -> bool:
        return self.gpu != "CPU"

    def tag(self, qdtype: str | None = None) -> str:
        py = "py" + self.python.replace(".", "")
        parts = [self.gpu]
        if self.has_cuda:
            parts.append(f"cc{self.cc}")
        if qdtype is not None:
            from .quant import parse_qdtype  # noqa: PLC0415 - keeps this module torch-free
            parts.append(DTYPE_TAGS[parse_qdtype(qdtype)])
        parts.append(py)
        parts.append("cu" + self.cuda.replace(".", "") if self.has_cuda else "cpu")
        parts.append(self.arch)
        return "_".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")


def _driver_version(proc_version: Path = NVIDIA_PROC_VERSION) -> str:
    """The NVIDIA driver release ("580.159.04") from the kernel module's /proc file (Linux, also inside
    containers run with --gpus), else the CUDA driver API version it supports ("CUDA 13.0 driver API"),
    else "". Informative only (report header, tuning DB meta)."""
    try:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", proc_version.read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        from cuda.bindings import driver  # noqa: PLC0415 - optional
        err, v = driver.cuDriverGetVersion()
        if int(err) == 0:
            return f"CUDA {v // 1000}.{(v % 1000) // 10} driver API"
    except Exception:  # noqa: BLE001 - the driver version is informative only
        pass
    return ""


def machine_info(device: int = 0) -> MachineInfo:
    import torch  # noqa: PLC0415

    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = platform.machine() or "unknown"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        return MachineInfo(
            gpu=short_gpu_name(props.name), gpu_full=props.name, cc=f"{props.major}{props.minor}",
            memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda or "",
            driver=_driver_version(), python=py, arch=arch, torch=torch.__version__,
        )
    try:
        import os  # noqa: PLC0415
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = 0.0
    return MachineInfo(gpu="CPU", gpu_full=platform.processor() or arch, cc="", memory_gb=round(mem, 1),
                       cuda="", driver="", python=py, arch=arch, torch=torch.__version__)


def hardware_tag(qdtype: str | None = None, device: int = 0) -> str:
    """The folder name for results (with ``qdtype``) or tuning data (without)."""
    return machine_info(device).tag(qdtype)
