"""Deployment files checked on a CPU machine without Docker: the Dockerfile and bake file as text, the
Makefile's docker / smoke / wheelhouse targets as `make -n` dry runs, the ptxas policy with fake
versions and paths, the wheelhouse's pip calls, and the GPU smoke script's refusal without CUDA."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from slidesparse import ptxas
from slidesparse.report.known_issues import _issue_text

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
INSTALL = ROOT / "docker" / "install_gpu_deps.sh"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod   # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _code_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


# --- Dockerfile and bake file ------------------------------------------------------------------
def test_dockerfile_base_is_pinned_by_arg():
    lines = _code_lines(DOCKERFILE)
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU}"]
    before = lines[:lines.index(froms[0])]
    assert "ARG CUDA_VERSION=13.0.1" in before and "ARG UBUNTU=ubuntu24.04" in before
    # re-declared after FROM so the install step sees it (checks the torch CUDA line against it)
    assert "ARG CUDA_VERSION" in lines[lines.index(froms[0]):]


def test_dockerfile_picks_wheels_by_targetarch_and_cuda_line():
    assert "ARG TARGETARCH" in DOCKERFILE and 'TARGETARCH="${TARGETARCH}"' in DOCKERFILE
    assert "ARG TORCH_CUDA=cu130" in DOCKERFILE
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}" in DOCKERFILE
    assert "ARG NVMATH_SPEC=nvmath-python==1.0.*" in DOCKERFILE
    script = INSTALL.read_text()
    assert re.search(r"amd64\) machine=x86_64", script) and re.search(r"arm64\) machine=aarch64", script)
    assert '--index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"' in script
    assert "nvidia-cusparselt" in script and "import triton" in script and '"$NVMATH_SPEC"' in script


def test_dockerfile_entrypoint_workdir_and_no_host_paths():
    lines = _code_lines(DOCKERFILE)
    assert 'ENTRYPOINT ["slidesparse"]' in lines
    assert "WORKDIR /workspace" in lines
    assert "/workspace/results" in DOCKERFILE and "/workspace/search" in DOCKERFILE
    for text in (DOCKERFILE, INSTALL.read_text(), (ROOT / "docker" / "docker-bake.hcl").read_text()):
        assert not re.search(r"(?<![\w/])/(root|home)\b", text), "host paths do not belong in the image files"
        assert "/work/" not in text


def test_image_applies_the_ptxas_policy():
    # the devel base carries /usr/local/cuda/bin/ptxas (CUDA >= 12.9), and the CLI the image runs
    # applies the policy in the pipeline (bench decode/prefill run through it)
    assert "-devel-" in DOCKERFILE and "ptxas" in DOCKERFILE
    runner = (ROOT / "src" / "slidesparse" / "pipeline" / "runner.py").read_text()
    assert "from ..ptxas import apply_ptxas_policy" in runner
    assert "apply_ptxas_policy(self.log, cc=info.cc)" in runner
    assert 'self.status.add_issue(ptxas_issue["kind"], ptxas_issue["detail"])' in runner


def test_bake_file_builds_both_arches_and_cuda_lines():
    hcl = (ROOT / "docker" / "docker-bake.hcl").read_text()
    assert 'platforms  = ["linux/amd64", "linux/arm64"]' in hcl
    assert 'CUDA_VERSION = "13.0.1"' in hcl and 'TORCH_CUDA   = "cu130"' in hcl
    assert 'CUDA_VERSION = "12.9.1"' in hcl and 'TORCH_CUDA   = "cu129"' in hcl
    assert f'default = "{VERSION}"' in hcl, "the bake file's VERSION must follow pyproject.toml"
    assert "slidesparse:${VERSION}-cu130" in hcl and "slidesparse:${VERSION}-cu129" in hcl


def _install(env):
    base = {"PATH": "/usr/bin:/bin", "CUDA_VERSION": "13.0.1", "TORCH_CUDA": "cu130", "TORCH_INDEX_URL": "x",
            "TORCH_SPEC": "torch", "NVMATH_SPEC": "nvmath-python==1.0.*"}
    return subprocess.run(["bash", str(INSTALL)], env={**base, **env}, capture_output=True, text=True, timeout=30)


def test_install_script_rejects_other_arches_and_mismatched_cuda_lines():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
    r = _install({"TARGETARCH": "riscv64"})
    assert r.returncode == 1 and "TARGETARCH=riscv64 is not supported (amd64 or arm64)" in r.stderr
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(__import__("platform").machine())
    if arch is None:
        pytest.skip("needs an x86_64 or aarch64 machine")
    r = _install({"TARGETARCH": arch, "TORCH_CUDA": "cu129"})
    assert r.returncode == 1 and "base image CUDA 13.0.1 needs TORCH_CUDA=cu130, got cu129" in r.stderr


# --- Makefile ------------------------------------------------------------------------------------
def _make(*args, check=True):
    r = subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    # one line per command, single spaces: continuation lines joined
    r.stdout = re.sub(r" +", " ", re.sub(r"\\\n\s*", " ", r.stdout))
    return r


@needs_make
def test_make_help_lists_the_deploy_targets():
    out = _make("help").stdout
    for t in ("docker-build", "smoke-gpu", "wheelhouse", "bench-decode"):
        assert re.search(rf"^ +{t} ", out, re.M), t


@needs_make
def test_make_docker_build_local_arch():
    out = _make("-n", "docker-build").stdout
    assert "DOCKER_BUILDKIT=1 docker build" in out and "buildx" not in out
    assert "--build-arg CUDA_VERSION=13.0.1 --build-arg TORCH_CUDA=cu130" in out
    assert f"-t slidesparse:{VERSION}-cu130 ." in out and "-f docker/Dockerfile" in out
    out = _make("-n", "docker-build", "CUDA_LINE=cu129").stdout
    assert "--build-arg CUDA_VERSION=12.9.1 --build-arg TORCH_CUDA=cu129" in out
    assert f"-t slidesparse:{VERSION}-cu129 ." in out


@needs_make
def test_make_docker_build_both_platforms_uses_buildx():
    out = _make("-n", "docker-build", "PLATFORMS=linux/amd64,linux/arm64").stdout
    assert "docker buildx build --platform 'linux/amd64,linux/arm64' --load" in out
    assert f"-t slidesparse:{VERSION}-cu130 ." in out


@needs_make
def test_make_docker_build_rejects_an_unknown_cuda_line():
    r = _make("docker-build", "CUDA_LINE=cu118", check=False)
    assert r.returncode != 0 and "CUDA_LINE=cu118 is not cu129 or cu130" in r.stderr


@needs_make
def test_make_docker_build_then_bench_decode_runs_in_the_image():
    out = _make("-n", "docker-build", "bench-decode", "MODELS=tiny").stdout
    build = out.index("docker build")
    run = out.index("docker run --rm --gpus all")
    assert build < run, "the image is built before the benchmark runs"
    assert f"-v '{ROOT / 'results'}':/workspace/results" in out
    assert f"-v '{ROOT / 'search'}':/workspace/search" in out
    tail = out[run:]
    assert f"slidesparse:{VERSION}-cu130 bench decode --results 'results' --search 'search'" in tail
    assert "--models 'tiny'" in tail
    assert "pip install" not in out and ".venv/bin/slidesparse" not in out  # no host venv in docker mode


@needs_make
def test_make_docker_1_uses_the_built_image_without_building():
    out = _make("-n", "DOCKER=1", "bench-decode").stdout
    assert "docker run --rm --gpus all" in out and "docker build" not in out


@needs_make
def test_make_bench_decode_without_docker_is_unchanged():
    out = _make("-n", "bench-decode", "VENV=/nonexistent-venv").stdout
    assert "docker" not in out
    assert "/nonexistent-venv/bin/slidesparse bench decode --results 'results' --search 'search'" in out
    out = _make("-n", "report", "RESULTS=a b", "VENV=/nonexistent-venv").stdout
    assert "/nonexistent-venv/bin/slidesparse report a b" in out


@needs_make
def test_make_smoke_gpu_and_wheelhouse_call_their_scripts():
    out = _make("-n", "smoke-gpu", "VENV=/nonexistent-venv", "SMOKE_RESULTS=out/s").stdout
    assert "/nonexistent-venv/bin/python tools/smoke_gpu.py --results 'out/s' --search 'search'" in out
    out = _make("-n", "wheelhouse", "PY_VERSION=3.12", "PLATFORM=aarch64", "CUDA_LINE=cu129").stdout
    assert ("tools/wheelhouse.py --python '3.12' --platform 'aarch64' --cuda 'cu129' "
            "--dest 'wheelhouse/py3.12_aarch64_cu129'") in out


# --- ptxas policy ------------------------------------------------------------------------------
BIN = "/t/triton/backends/nvidia/bin"


def _probe(versions):
    return lambda path: versions.get(path)


def test_ptxas_no_override_off_gb10():
    d = ptxas.decide((9, 0), "3.5.0", BIN, ["/usr/local/cuda/bin/ptxas"], _probe({}))
    assert not d.override and d.error is None
    assert not ptxas.decide(None, "3.5.0", BIN, [], _probe({})).override


def test_ptxas_override_gb10_triton_35_with_system_129():
    probe = _probe({f"{BIN}/ptxas": (12, 8), "/usr/local/cuda/bin/ptxas": (12, 9)})
    d = ptxas.decide("121", "3.5.0", BIN, ["/opt/cuda/bin/ptxas", "/usr/local/cuda/bin/ptxas"], probe)
    assert d.override and d.error is None
    assert (d.env_var, d.path, d.ptxas_version) == ("TRITON_PTXAS_PATH", "/usr/local/cuda/bin/ptxas", (12, 9))
    assert "sm_121a" in d.reason and "12.8" in d.reason


def test_ptxas_no_override_gb10_triton_36_blackwell():
    probe = _probe({f"{BIN}/ptxas": (12, 8), f"{BIN}/ptxas-blackwell": (12, 9), "/usr/local/cuda/bin/ptxas": (13, 0)})
    d = ptxas.decide((12, 1), "3.6.0", BIN, ["/usr/local/cuda/bin/ptxas"], probe)
    assert not d.override and d.error is None and "ptxas-blackwell 12.9" in d.reason


def test_ptxas_gb10_nothing_suitable_says_what_to_install():
    probe = _probe({f"{BIN}/ptxas": (12, 8), "/usr/local/cuda/bin/ptxas": (12, 4)})
    d = ptxas.decide("12.1", "3.5.0", BIN, ["/usr/local/cuda/bin/ptxas", "/usr/bin/ptxas"], probe)
    assert not d.override and d.error
    assert "ptxas >= 12.9 for sm_121a" in d.error and "Triton 3.5.0 bundles ptxas 12.8" in d.error
    assert "/usr/local/cuda/bin/ptxas (12.4)" in d.error and "/usr/bin/ptxas (not runnable)" in d.error
    assert "CUDA toolkit >= 12.9" in d.error and "Triton to >= 3.6" in d.error


def test_ptxas_keeps_a_good_user_override_and_replaces_a_bad_one():
    probe = _probe({f"{BIN}/ptxas": (12, 8), "/mine/ptxas": (13, 0), "/old/ptxas": (12, 6),
                    "/usr/local/cuda/bin/ptxas": (12, 9)})
    d = ptxas.decide("121", "3.5.0", BIN, ["/usr/local/cuda/bin/ptxas"], probe,
                     current={"TRITON_PTXAS_PATH": "/mine/ptxas"})
    assert d.path == "/mine/ptxas" and "already set" in d.reason
    d = ptxas.decide("121", "3.5.0", BIN, ["/usr/local/cuda/bin/ptxas"], probe,
                     current={"TRITON_PTXAS_PATH": "/old/ptxas"})
    assert d.path == "/usr/local/cuda/bin/ptxas"


def test_ptxas_triton_36_with_an_old_blackwell_binary_overrides_its_own_variable():
    versions = {f"{BIN}/ptxas": (12, 8), f"{BIN}/ptxas-blackwell": (12, 8), "/usr/local/cuda/bin/ptxas": (13, 0)}
    d = ptxas.decide("121", "3.6.0", BIN, ["/usr/local/cuda/bin/ptxas"], _probe(versions))
    assert d.env_var == "TRITON_PTXAS_BLACKWELL_PATH" and d.path == "/usr/local/cuda/bin/ptxas"
    del versions[f"{BIN}/ptxas-blackwell"]  # the binary is missing: Triton 3.6 still uses that slot
    d = ptxas.decide("121", "3.6.0", BIN, ["/usr/local/cuda/bin/ptxas"], _probe(versions))
    assert d.env_var == "TRITON_PTXAS_BLACKWELL_PATH" and d.path == "/usr/local/cuda/bin/ptxas"


def test_ptxas_parsing():
    assert ptxas.parse_cc("121") == (12, 1) and ptxas.parse_cc("90") == (9, 0) and ptxas.parse_cc("100") == (10, 0)
    assert ptxas.parse_cc("12.1") == (12, 1) and ptxas.parse_cc((12, 1)) == (12, 1) and ptxas.parse_cc("") is None
    with pytest.raises(ValueError, match="compute capability 'sm90'"):
        ptxas.parse_cc("sm90")
    assert ptxas.parse_version("3.5.0+git1") == (3, 5)
    with pytest.raises(ValueError, match="expected MAJOR.MINOR"):
        ptxas.parse_version("dev")
    assert ptxas.system_candidates("/opt/cuda", "/usr/bin/ptxas") == [
        "/opt/cuda/bin/ptxas", "/usr/local/cuda/bin/ptxas", "/usr/bin/ptxas"]
    assert ptxas.ptxas_version("/nonexistent/ptxas") is None


def test_ptxas_real_triton_wheel():
    """The installed Triton: its bundled binaries run and report their CUDA release, and on a (pretend)
    GB10 the policy needs no override with Triton >= 3.6."""
    version, bundled = ptxas._triton()
    if bundled is None or not (bundled / "ptxas").exists():
        pytest.skip("no Triton with bundled ptxas here")
    assert ptxas.ptxas_version(str(bundled / "ptxas")) is not None
    env = {}
    record = ptxas.apply_ptxas_policy(lambda s: None, cc="121", environ=env)
    if ptxas.parse_version(version) >= (3, 6) and (bundled / "ptxas-blackwell").exists():
        assert record is None and env == {}


def test_apply_ptxas_policy_sets_the_variable_and_records_it(monkeypatch, tmp_path):
    monkeypatch.setattr(ptxas, "_triton", lambda: ("3.5.0", tmp_path))
    versions = {str(tmp_path / "ptxas"): (12, 8), "/cuda/bin/ptxas": (13, 0)}
    monkeypatch.setattr(ptxas, "ptxas_version", lambda p: versions.get(p))
    env, said = {"CUDA_HOME": "/cuda"}, []
    record = ptxas.apply_ptxas_policy(said.append, cc="121", environ=env)
    assert env["TRITON_PTXAS_PATH"] == "/cuda/bin/ptxas"
    assert record["kind"] == "ptxas_override" and record["detail"].startswith("TRITON_PTXAS_PATH=/cuda/bin/ptxas")
    assert "ptxas" in _issue_text(record).lower()   # the report's known-issue detection sees it
    assert said and said[0].startswith("ptxas: ")
    env = {}
    assert ptxas.apply_ptxas_policy(said.append, cc="90", environ=env) is None and env == {}


def test_apply_ptxas_policy_fails_clearly_without_a_usable_ptxas(monkeypatch, tmp_path):
    monkeypatch.setattr(ptxas, "_triton", lambda: ("3.5.0", tmp_path))
    monkeypatch.setattr(ptxas, "ptxas_version", lambda p: (12, 8) if p == str(tmp_path / "ptxas") else None)
    monkeypatch.setattr(ptxas.shutil, "which", lambda name: None)
    env = {}
    with pytest.raises(RuntimeError, match=r"needs ptxas >= 12\.9 for sm_121a.*install a CUDA toolkit >= 12\.9"):
        ptxas.apply_ptxas_policy(lambda s: None, cc="121", environ=env)
    assert env == {}


# --- wheelhouse ----------------------------------------------------------------------------------
def test_wheelhouse_commands():
    wh = _load_tool("wheelhouse")
    cmds = wh.commands("3.12", "aarch64", "cu129", Path("/w"), pip=("pip",), extras=("test",))
    torch_cmd, deps_cmd, own_cmd = cmds
    target = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312"]
    assert torch_cmd[:4] == ["pip", "download", "--dest", "/w"] and torch_cmd[4:11] == target
    assert torch_cmd[-3:] == ["--index-url", "https://download.pytorch.org/whl/cu129", "torch"]
    plats = [torch_cmd[i + 1] for i, x in enumerate(torch_cmd) if x == "--platform"]
    assert plats[0] == "manylinux_2_35_aarch64" and "manylinux_2_28_aarch64" in plats
    assert plats[-1] == "manylinux2014_aarch64" and all("aarch64" in p for p in plats)
    assert deps_cmd[:4] == ["pip", "download", "--dest", "/w"] and "--index-url" not in deps_cmd
    reqs = deps_cmd[deps_cmd.index(plats[-1]) + 1:]
    assert "nvmath-python==1.0.*" in reqs and any(r.startswith("triton") for r in reqs)
    assert "pytest>=8" in reqs and not any(r.startswith("torch") for r in reqs)
    assert own_cmd == ["pip", "wheel", "--no-deps", "--wheel-dir", "/w", str(ROOT)]
    cmds = wh.commands("3.11", "x86_64", "cu130", Path("/w"), pip=("pip",), torch_spec="torch==2.10.0")
    assert cmds[0][-3:] == ["--index-url", "https://download.pytorch.org/whl/cu130", "torch==2.10.0"]
    assert "cp311" in cmds[0] and "manylinux_2_35_x86_64" in cmds[1]


@pytest.mark.parametrize("kw, msg", [
    ({"cuda": "cu118"}, "--cuda 'cu118': expected one of cu129, cu130"),
    ({"machine": "arm64"}, "--platform 'arm64': expected one of x86_64, aarch64"),
    ({"py": "312"}, "--python '312': expected MAJOR.MINOR"),
    ({"glibc": "2.5"}, "--glibc '2.5': expected 2.N with N >= 17"),
    ({"extras": ("nope",)}, "extra 'nope' is not declared"),
])
def test_wheelhouse_rejects_bad_targets(kw, msg):
    wh = _load_tool("wheelhouse")
    args = {"py": "3.12", "machine": "x86_64", "cuda": "cu130", **kw}
    with pytest.raises(ValueError, match=re.escape(msg)):
        wh.commands(args.pop("py"), args.pop("machine"), args.pop("cuda"), Path("/w"), **args)


def test_wheelhouse_dry_run_prints_and_runs_nothing(tmp_path, capsys):
    wh = _load_tool("wheelhouse")
    dest = tmp_path / "wh"
    assert wh.main(["--dest", str(dest), "--platform", "x86_64", "--cuda", "cu130", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n+ ") + out.startswith("+ ") == 3 and "download.pytorch.org/whl/cu130" in out
    assert not dest.exists()
    assert wh.main(["--dest", str(dest), "--cuda", "cu1", "--dry-run"]) == 2
    assert "wheelhouse: error: --cuda 'cu1'" in capsys.readouterr().err


# --- GPU smoke script ------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_smoke_gpu_refuses_without_cuda(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "smoke_gpu.py"), "--results", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert "smoke-gpu: no CUDA GPU visible to torch" in r.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "results").exists()


def test_smoke_gpu_plan():
    sm = _load_tool("smoke_gpu")
    steps = sm.plan(Path("R"), Path("S"), Path("R/j.xml"), 600, ["slidesparse"], python="py")
    assert [s.name for s in steps] == ["gpu tests", "mini pipeline", "report"]
    assert steps[0].cmd[:6] == ["py", "-m", "pytest", "-q", "-m", "gpu"] and "--junitxml=R/j.xml" in steps[0].cmd
    pipe = steps[1].cmd
    assert pipe[:2] == ["slidesparse", "pipeline"]
    opts = dict(zip(pipe[2::2], pipe[3::2], strict=False))
    assert opts["--tasks"] == "5,6,7" and opts["--models"] == "tiny,llama3.2-1b"
    assert opts["--dtypes"] == "int8,fp8" and opts["--patterns"] == "2:4,6:8" and opts["--results"] == "R"
    assert len(opts["--prefill-m"].split(",")) == 2 and len(opts["--decode-m"].split(",")) == 2
    assert "--fresh" in pipe
    assert steps[2].cmd == ["slidesparse", "report", "R"]


def test_smoke_gpu_falls_back_to_python_m_slidesparse(monkeypatch, tmp_path):
    """Without a console script (package on PYTHONPATH only) the CLI is `python -m slidesparse`."""
    sm = _load_tool("smoke_gpu")
    monkeypatch.setattr(sm.sys, "executable", str(tmp_path / "python"))  # no `slidesparse` beside it
    monkeypatch.setattr(sm.shutil, "which", lambda name: None)
    assert sm.cli_command() == [str(tmp_path / "python"), "-m", "slidesparse"]
    monkeypatch.setattr(sm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="make install"):
        sm.cli_command()


def test_smoke_gpu_pipeline_options_exist():
    """The options the smoke script passes are the pipeline command's real ones."""
    from click.testing import CliRunner

    from slidesparse.cli import main

    help_text = CliRunner().invoke(main, ["pipeline", "--help"]).output
    sm = _load_tool("smoke_gpu")
    pipe = sm.plan(Path("R"), Path("S"), Path("j"), 1, ["x"])[1].cmd
    for opt in (a for a in pipe if a.startswith("--")):
        assert opt in help_text, opt


def test_smoke_gpu_checks_the_big_dequant_case_ran(tmp_path):
    sm = _load_tool("smoke_gpu")
    j = tmp_path / "j.xml"

    def write(body):
        j.write_text(f'<testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')

    write('<testcase classname="tests.test_kernels_gpu" name="test_dequant_beyond_2_31_elements"/>')
    assert sm.check_junit(j) is None
    write('<testcase name="test_dequant_beyond_2_31_elements"><skipped message="x"/></testcase>')
    assert "skipped" in sm.check_junit(j)
    write('<testcase name="test_dequant_model_shapes[2048]"/>')
    assert "did not run" in sm.check_junit(j)
    assert "cannot read" in sm.check_junit(tmp_path / "missing.xml")
    tests = (ROOT / "tests" / "test_kernels_gpu.py").read_text()
    assert f"def {sm.BIG_CASE}(" in tests and "65536, 37888" in tests


def test_gpu_smoke_workflow():
    yml = (ROOT / ".github" / "workflows" / "gpu-smoke.yml").read_text()
    assert "runs-on: [self-hosted, gpu]" in yml
    assert "make install" in yml and "make smoke-gpu" in yml
    assert "uses: actions/upload-artifact@" in yml and "path: results/" in yml
    assert "if: always()" in yml


def test_gpu_commands_outside_the_pipeline_apply_the_ptxas_policy(monkeypatch, tmp_path):
    """tune and bench quant compile Triton kernels in their own process: they set the GB10 ptxas too,
    and a missing one is a clear error before any kernel compiles."""
    import torch
    from click.testing import CliRunner

    import slidesparse.bench.quant as bq
    import slidesparse.commands.tune as ct
    import slidesparse.kernels.timing as timing
    from slidesparse import ptxas
    from slidesparse.cli import main

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ptxas, "apply_ptxas_policy", lambda log, **kw: calls.append(kw) or log("ptxas: checked"))
    ct._require_gpu()
    assert calls == [{}]

    monkeypatch.setattr(timing, "require_cuda", lambda: torch.device("cpu"))
    monkeypatch.setattr(bq, "run_quant_bench", lambda **kw: [])
    r = CliRunner().invoke(main, ["bench", "quant", "--model", "tiny", "--m", "64", "--results", str(tmp_path)])
    assert len(calls) == 2 and "ptxas: checked" in r.output, r.output

    def missing(log, **kw):
        raise RuntimeError("this GPU needs ptxas >= 12.9; install a CUDA toolkit >= 12.9")

    monkeypatch.setattr(ptxas, "apply_ptxas_policy", missing)
    r = CliRunner().invoke(main, ["bench", "quant", "--model", "tiny", "--m", "64", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "error:" in r.output and "ptxas" in r.output, r.output
