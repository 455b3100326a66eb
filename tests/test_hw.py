"""Hardware tag and GPU short names (the folder names results and tuning data live under)."""

import re

import pytest
import torch

from slidesparse.hw import MachineInfo, hardware_tag, machine_info, short_gpu_name


@pytest.mark.parametrize("full, short", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100"),
    ("NVIDIA H100 NVL", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA GB10", "GB10"),
    ("NVIDIA GeForce RTX 5080", "RTX5080"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("Tesla V100-SXM2-16GB", "V100"),
    ("NVIDIA B200", "B200"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA GH200 480GB", "GH200"),
    ("", "GPU"),
])
def test_short_gpu_name(full, short):
    assert short_gpu_name(full) == short


def fake_gpu(**kw) -> MachineInfo:
    base = dict(gpu="GB10", gpu_full="NVIDIA GB10", cc="121", memory_gb=119.7, cuda="12.9", driver="13.0",
                python="3.12", arch="aarch64", torch="2.9.0+cu129")
    base.update(kw)
    return MachineInfo(**base)


def test_gpu_tag_forms():
    m = fake_gpu()
    assert m.has_cuda
    assert m.tag("int8") == "GB10_cc121_INT8_py312_cu129_aarch64"
    assert m.tag("fp8") == "GB10_cc121_FP8E4M3_py312_cu129_aarch64"
    assert m.tag() == "GB10_cc121_py312_cu129_aarch64"  # tuning data: no dtype part
    h = fake_gpu(gpu="H100", gpu_full="NVIDIA H100 80GB HBM3", cc="90", cuda="13.0", arch="x86_64")
    assert h.tag("fp8e4m3") == "H100_cc90_FP8E4M3_py312_cu130_x86_64"


def test_cpu_tag_form():
    m = MachineInfo(gpu="CPU", gpu_full="x86_64", cc="", memory_gb=24.0, cuda="", driver="", python="3.11",
                    arch="x86_64", torch="2.13.0+cpu")
    assert not m.has_cuda
    assert m.tag("int8") == "CPU_INT8_py311_cpu_x86_64"
    assert m.tag() == "CPU_py311_cpu_x86_64"


def test_tag_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="unknown quantized dtype"):
        fake_gpu().tag("fp16")


def test_this_machine():
    m = machine_info()
    assert m.has_cuda == torch.cuda.is_available()
    assert m.to_dict()["torch"] == torch.__version__
    tag = hardware_tag("int8")
    assert tag == m.tag("int8")
    if m.has_cuda:
        assert re.fullmatch(r"[A-Za-z0-9]+_cc\d+_INT8_py\d+_cu\d+_\w+", tag)
    else:
        assert re.fullmatch(r"CPU_INT8_py\d+_cpu_\w+", tag)
    # a tag is a single path component
    assert "/" not in tag and " " not in tag


@pytest.mark.parametrize("text, want", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu Sep  4 2025\nGCC version:  gcc 12\n",
     "580.159.04"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.95.05  Release Build  (dvs-builder)\n",
     "580.95.05"),
])
def test_driver_version_is_the_nvidia_release_from_proc(tmp_path, text, want):
    """The report's 'Driver' is the NVIDIA driver release, not the CUDA driver API version."""
    from slidesparse.hw import _driver_version

    f = tmp_path / "version"
    f.write_text(text)
    assert _driver_version(f) == want


def test_driver_version_without_the_proc_file_is_the_driver_api_or_empty(tmp_path):
    from slidesparse.hw import _driver_version

    v = _driver_version(tmp_path / "missing")
    assert v == "" or (v.startswith("CUDA ") and v.endswith(" driver API"))
