"""`slidesparse convert` through click's CliRunner: exit codes, one-line errors, --help."""

import json
import click
import pytest
from click.testing import CliRunner

from hf_fixtures import build
from slidesparse.checkpoint import CONFIG_NAME, load_converted
from slidesparse.cli import _Group
from slidesparse.commands.convert import convert_command


@click.group(cls=_Group)
def app():
    """test group with the real error handling of `slidesparse`"""


app.add_command(convert_command)


def run(*args):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


def assert_one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    for f in fragments:
        assert f in res.stderr
    assert res.stdout == ""


def test_convert_builtin_with_check(tmp_path):
    res = run("tiny", "--pattern", "6:8", "--dtype", "int8", "--out", tmp_path / "o", "--check")
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stdout and "6:8 (2_8)" in res.stdout and "source: synthetic:tiny" in res.stdout
    assert "check passed" in res.stdout and "2:4 along K" in res.stdout and "exactly for random int8 X" in res.stdout
    assert "equal the source" in res.stdout
    assert (tmp_path / "o" / CONFIG_NAME).exists()


def test_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("tiny", "-p", "2_10", "--dtype", "FP8")
    assert res.exit_code == 0, res.output
    meta, _ = load_converted(tmp_path / "checkpoints" / "tiny-SlideSparse-2_10-fp8")
    assert meta["pattern"]["paper"] == "8:10" and meta["qdtype"] == "fp8"


def test_convert_hf_dir_random_prune_dense_and_check(tmp_path, monkeypatch):
    src = build(tmp_path / "Qwen-tiny", "qwen2", shards=2)
    res = run(src, "-p", "4:6", "--dtype", "fp8", "--prune-mode", "random", "--seed", "7",
              "--out", tmp_path / "o", "--check", "--samples", "1", "--max-shard-gb", "0.00002")
    assert res.exit_code == 0, res.output
    meta, _ = load_converted(tmp_path / "o")
    assert meta["prune_mode"] == "random" and meta["seed"] == 7 and len(meta["files"]) > 1
    assert "float64 math" in res.stdout
    monkeypatch.chdir(tmp_path)
    res = run(src, "-p", "dense", "--dtype", "int8", "--check")
    assert res.exit_code == 0, res.output
    assert "dense (quantized only)" in res.stdout
    assert (tmp_path / "checkpoints" / "Qwen-tiny-SlideSparse-dense-int8" / CONFIG_NAME).exists()


def test_existing_output_needs_force(tmp_path):
    assert run("tiny", "-p", "6:8", "--dtype", "int8", "-o", tmp_path / "o").exit_code == 0
    res = run("tiny", "-p", "2:4", "--dtype", "int8", "-o", tmp_path / "o")
    assert_one_line_error(res, "already exists", "--force")
    res = run("tiny", "-p", "2:4", "--dtype", "int8", "-o", tmp_path / "o", "--force")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / CONFIG_NAME).read_text())["pattern"]["label"] == "2_4"


@pytest.mark.parametrize("args,fragments", [
    (["tiny", "-p", "5:8", "--dtype", "int8"], ["cannot parse sparsity pattern", "accepted forms"]),
    (["llama-99b", "-p", "6:8", "--dtype", "int8"], ["unknown model", "tiny"]),
    (["./missing/dir", "-p", "6:8", "--dtype", "int8"], ["does not exist"]),
    (["tiny", "-p", "6:8", "--dtype", "int8", "--device", "bogus"], ["bad device"]),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run(*args), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_bad_hf_source_writes_nothing(tmp_path):
    src = build(tmp_path / "src", "llama")
    (src / "model.safetensors").write_bytes(b"\x00" * 64)
    res = run(src, "-p", "6:8", "--dtype", "int8", "-o", tmp_path / "o")
    assert_one_line_error(res, "corrupt or truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_dtype_mismatch_with_w8a8_source(tmp_path):
    src = build(tmp_path / "ct", "llama", quant="fp8")
    res = run(src, "-p", "6:8", "--dtype", "int8", "-o", tmp_path / "o")
    assert_one_line_error(res, "already fp8", "int8 was requested")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [
    ["tiny", "--dtype", "int8"],          # --pattern missing
    ["tiny", "-p", "6:8"],                # --dtype missing
    ["tiny", "-p", "6:8", "--dtype", "int4"],
    ["tiny", "-p", "6:8", "--dtype", "int8", "--prune-mode", "biggest"],
    ["tiny", "-p", "6:8", "--dtype", "int8", "--seed", "-3"],
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    res = run(*args)
    assert res.exit_code == 2 and "Usage:" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_option():
    res = run("--help")
    assert res.exit_code == 0
    for opt in ("--pattern", "--dtype", "--out", "--force", "--prune-mode", "--seed", "--check", "--samples",
                "--device", "--max-shard-gb"):
        assert opt in res.stdout
    assert "Examples:" in res.stdout and "slidesparse convert qwen2.5-7b" in res.stdout
    assert "checkpoints/<model>-SlideSparse-<2_L|dense>-<dtype>" in "".join(res.stdout.split())
