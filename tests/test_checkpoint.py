"""Checkpoint conversion, loading and verification on tiny checkpoints built on the fly."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import slidesparse
from hf_fixtures import build, hf_config, make_tensors, write_hf
from slidesparse.checkpoint import (CONFIG_NAME, check_converted, convert_checkpoint, default_out_dir,
                                    load_converted, tensor_seed)
from slidesparse.models import ModelConfig, get_model, parse_linear_weight_name
from slidesparse.pattern import Pattern
from slidesparse.sparsify import is_2to4, pattern_violations, unslide

PATTERNS = ["2:4", "2:6", "2:8", "2:10"]


def leftovers(parent, out_name):
    """Anything the converter may have left next to the output: the output or its temp dirs."""
    if not parent.exists():
        return []
    return sorted(p.name for p in parent.iterdir() if p.name == out_name or p.name.startswith(f".{out_name}."))


def fval(t):
    return t.float() if t.dtype.is_floating_point else t.to(torch.int32)


@pytest.fixture(scope="module")
def llama_bf16(tmp_path_factory):
    return build(tmp_path_factory.mktemp("src") / "llama-bf16", "llama")


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("qdtype", ["int8", "fp8"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_round_trip_every_pattern_and_dtype(llama_bf16, tmp_path, pattern, qdtype):
    p = Pattern.parse(pattern)
    out = convert_checkpoint(llama_bf16, tmp_path / "out", pattern, qdtype)
    meta, tensors = load_converted(out)
    src = load_file(str(llama_bf16 / "model.safetensors"))
    assert meta["pattern"] == {"label": p.label, "paper": p.paper, "window": p.window}
    assert meta["qdtype"] == qdtype and meta["prune_mode"] == "magnitude" and meta["seed"] == 0
    assert meta["tool"]["slidesparse"] == slidesparse.__version__ and meta["tool"]["torch"] == torch.__version__
    assert meta["source"] == str(llama_bf16.resolve()) and meta["source_info"]["fingerprint"].startswith("sha256:")
    assert len(meta["layers"]) == 2 * 7
    want = torch.int8 if qdtype == "int8" else torch.float8_e4m3fn
    qmax = 127.0 if qdtype == "int8" else 448.0
    for name, d in meta["layers"].items():
        W, s = tensors[name], tensors[name + "_scale"]
        N, K = src[name].shape
        assert (d["N"], d["K"], d["K_slid"]) == (N, K, p.slid_k(K))
        assert W.dtype == want and W.shape == (N, p.slid_k(K)) and s.dtype == torch.float32 and s.shape == (N,)
        assert is_2to4(W)
        U = unslide(W, p, K)
        assert not pattern_violations(U, p).any()
        # independent of quant.py: scale is the row absmax over qmax; kept values dequantize close to the source
        w = src[name].float()
        torch.testing.assert_close(s, w.abs().amax(1) / qmax, rtol=1e-6, atol=0)
        kept = fval(U) != 0
        err = (fval(U).float() * s[:, None] - w).abs()
        tol = s[:, None] * (0.5 if qdtype == "int8" else 0.0) + w.abs() * (0.0 if qdtype == "int8" else 2**-4)
        assert bool((err[kept] <= tol.expand_as(err)[kept] * 1.0001 + 1e-12).all())
        # at least 2 zeros in every full group (a ragged last group counts its padding as zeros)
        assert int((~kept).sum()) >= N * 2 * (K // p.window)
    # everything else copied bit for bit
    for name, t in src.items():
        if parse_linear_weight_name(name) is None:
            assert torch.equal(tensors[name], t), name
    rep = check_converted(out, samples=2)
    assert rep.weights_checked == 14 and rep.matmuls_checked == 14 and rep.source_compared == 14
    assert rep.sampled_layers == [0, 1]


def test_metadata_in_config_and_headers(llama_bf16, tmp_path):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")
    meta = json.loads((out / CONFIG_NAME).read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["slidesparse"]["pattern"]["paper"] == "6:8" and cfg["slidesparse"]["config"] == CONFIG_NAME
    assert cfg["quantization_config"]["quant_method"] == "slidesparse"
    assert cfg["hidden_size"] == 128 and cfg["model_type"] == "llama"
    assert meta["linears"]["down"] == {"N": 128, "K": 384, "K_slid": 576, "parts": ["mlp.down_proj"]}
    assert meta["files"] == ["model.safetensors"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["slidesparse"]) == meta  # file list included
    assert (out / "tokenizer_config.json").exists()  # tokenizer files travel along
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temp dir left


def test_qwen2_sharded_fp16_source(tmp_path):
    src = build(tmp_path / "qwen", "qwen2", dtype=torch.float16, shards=3)
    out = convert_checkpoint(src, tmp_path / "out", "4:6", "int8", shard_bytes=40_000)
    meta, t = load_converted(out)
    assert len(meta["files"]) > 1 and (out / "model.safetensors.index.json").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(t)
    orig = {}
    for f in sorted(src.glob("*.safetensors")):
        orig.update(load_file(str(f)))
    for i in range(2):
        for p in "qkv":
            b = f"model.layers.{i}.self_attn.{p}_proj.bias"
            assert torch.equal(t[b], orig[b]) and t[b].dtype == torch.float16
    w, s, b = t.linear(0, "qkv")
    assert w.shape == (256, Pattern.parse("4:6").slid_k(128)) and s.shape == (256,) and b.shape == (256,)
    w, s, b = t.linear(1, "gate_up")
    assert w.shape[0] == 768 and b is None
    rep = check_converted(out, samples=1, seed=3)
    assert rep.source_compared == 7


def test_fp32_source_dense_conversion(tmp_path):
    src = build(tmp_path / "f32", "llama", dtype=torch.float32, tie=True)
    out = convert_checkpoint(src, tmp_path / "dense", "dense", "fp8")
    meta, t = load_converted(out)
    assert meta["pattern"] is None and meta["prune_mode"] is None
    name = "model.layers.0.mlp.down_proj.weight"
    assert t[name].shape == (128, 384) and t[name].dtype == torch.float8_e4m3fn
    assert meta["layers"][name]["K_slid"] == 384
    assert "lm_head.weight" not in t  # tied: nothing invented
    rep = check_converted(out, samples=2)
    assert rep.source_compared == 14 and rep.matmuls_checked == 0
    assert default_out_dir("x", None, "fp8").name == "x-SlideSparse-dense-fp8"
    assert default_out_dir("x", "6:8", "int8").as_posix() == "checkpoints/x-SlideSparse-2_8-int8"


@pytest.mark.parametrize("qdtype", ["int8", "fp8"])
def test_compressed_tensors_w8a8_source(tmp_path, qdtype):
    src = build(tmp_path / f"ct-{qdtype}", "qwen2", quant=qdtype, shards=2,
                scale_dtype=torch.bfloat16 if qdtype == "fp8" else torch.float32, scale_2d=qdtype == "int8")
    out = convert_checkpoint(src, tmp_path / "out", "6:8", qdtype)
    meta, t = load_converted(out)
    orig = {}
    for f in sorted(src.glob("*.safetensors")):
        orig.update(load_file(str(f)))
    p = Pattern.parse("6:8")
    for name in meta["layers"]:
        U = unslide(t[name], p, orig[name].shape[1])
        kept = fval(U) != 0
        # quantized values pass through untouched: only pruned, never re-quantized
        assert torch.equal(fval(U)[kept], fval(orig[name])[kept])
        assert torch.equal(t[name + "_scale"], orig[name + "_scale"].float().reshape(-1))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["slidesparse"]["source_quantization_config"]["quant_method"] == "compressed-tensors"
    assert meta["source_info"]["quantization"] == "compressed-tensors"
    assert check_converted(out, samples=2).source_compared == 14


def test_compressed_tensors_dtype_mismatch_is_an_error(tmp_path):
    src = build(tmp_path / "ct", "llama", quant="int8")
    with pytest.raises(ValueError, match="already int8 .* but fp8 was requested"):
        convert_checkpoint(src, tmp_path / "out", "6:8", "fp8")
    assert leftovers(tmp_path, "out") == []


def test_synthetic_builtin_source(tmp_path):
    a = convert_checkpoint("tiny", tmp_path / "a", "8:10", "int8", seed=5)
    b = convert_checkpoint("tiny", tmp_path / "b", "8:10", "int8", seed=5)
    c = convert_checkpoint("tiny", tmp_path / "c", "8:10", "int8", seed=6)
    ma, ta = load_converted(a)
    _, tb = load_converted(b)
    _, tc = load_converted(c)
    assert ma["source"] == "synthetic:tiny" and ma["seed"] == 5 and ma["source_info"]["seed"] == 5
    name = "model.layers.1.mlp.gate_proj.weight"
    assert torch.equal(ta[name], tb[name]) and not torch.equal(ta[name], tc[name])
    cfg = get_model("tiny")
    assert set(ta) == set(cfg.tensor_shapes()) | {n + "_scale" for n in ma["layers"]}
    rep = check_converted(a, samples=2)
    assert rep.source_compared == 14  # synthetic weights are regenerated for the comparison


def test_random_prune_mode_is_seeded_per_tensor(llama_bf16, tmp_path):
    a = convert_checkpoint(llama_bf16, tmp_path / "a", "2:4", "int8", prune_mode="random", seed=1)
    b = convert_checkpoint(llama_bf16, tmp_path / "b", "2:4", "int8", prune_mode="random", seed=2)
    m = convert_checkpoint(llama_bf16, tmp_path / "m", "2:4", "int8")
    _, ta = load_converted(a)
    _, tb = load_converted(b)
    _, tm = load_converted(m)
    k, v = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"
    assert not torch.equal(ta[k] != 0, tb[k] != 0) and not torch.equal(ta[k] != 0, tm[k] != 0)
    assert not torch.equal(ta[k] != 0, ta[v] != 0)  # same shape, different per-tensor seed
    assert tensor_seed(1, k) != tensor_seed(1, v)
    assert check_converted(a, samples=2).source_compared == 14


def test_progress_callback_sees_every_tensor(llama_bf16, tmp_path):
    seen = []
    convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8", progress=lambda d, t, n: seen.append((d, t, n)))
    n_src = len(load_file(str(llama_bf16 / "model.safetensors")))
    assert [d for d, _, _ in seen] == list(range(1, n_src + 1)) and {t for _, t, _ in seen} == {n_src}


def test_force_replaces_previous_conversion(llama_bf16, tmp_path):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")
    with pytest.raises(FileExistsError, match="already exists.*--force"):
        convert_checkpoint(llama_bf16, out, "2:4", "int8")
    assert load_converted(out)[0]["pattern"]["label"] == "2_8"
    convert_checkpoint(llama_bf16, out, "2:4", "int8", force=True)
    assert load_converted(out)[0]["pattern"]["label"] == "2_4"
    assert leftovers(tmp_path, "o") == ["o"]


def test_force_refuses_foreign_directory_and_files(llama_bf16, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a SlideSparse checkpoint"):
        convert_checkpoint(llama_bf16, foreign, "6:8", "int8", force=True)
    assert (foreign / "precious.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        convert_checkpoint(llama_bf16, f, "6:8", "int8", force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    convert_checkpoint(llama_bf16, empty, "6:8", "int8", force=True)
    assert (empty / CONFIG_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "home"]


def test_failure_during_force_keeps_old_output(llama_bf16, tmp_path):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")
    before = sorted(p.name for p in out.iterdir())

    def boom(done, total, name):
        if done == 5:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_checkpoint(llama_bf16, out, "2:4", "int8", force=True, progress=boom)
    assert sorted(p.name for p in out.iterdir()) == before
    assert load_converted(out)[0]["pattern"]["label"] == "2_8"
    assert leftovers(tmp_path, "o") == ["o"]


def test_keyboard_interrupt_cleans_temp_and_created_parents(llama_bf16, tmp_path):
    def interrupt(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(llama_bf16, target, "6:8", "int8", progress=interrupt)
    assert not (tmp_path / "new").exists()  # parents this call created are gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- bad input: one clear error, nothing written ---------------------------------------------
def _expect_clean_error(src, tmp_path, exc, match, pattern="6:8", qdtype="int8", **kw):
    with pytest.raises(exc, match=match):
        convert_checkpoint(src, tmp_path / "out", pattern, qdtype, **kw)
    assert leftovers(tmp_path, "out") == []


def test_missing_source_dir(tmp_path):
    _expect_clean_error(tmp_path / "nope", tmp_path, FileNotFoundError, "does not exist")


def test_source_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    _expect_clean_error(tmp_path / "f", tmp_path, NotADirectoryError, "not a directory")


def test_unknown_source_name(tmp_path):
    _expect_clean_error("llama-99b", tmp_path, ValueError, "not a directory and not a built-in")


def test_missing_config(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    (src / "config.json").unlink()
    _expect_clean_error(src, tmp_path, FileNotFoundError, "config.json is missing")


def test_corrupt_config(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    (src / "config.json").write_text('{"model_type": "llama", ')
    _expect_clean_error(src, tmp_path, ValueError, "config.json is corrupt")


def test_unknown_architecture(tmp_path):
    cfg = hf_config("llama")
    src = write_hf(tmp_path / "src", cfg, make_tensors(cfg))
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (src / "config.json").write_text(json.dumps(cfg))
    _expect_clean_error(src, tmp_path, ValueError, r"unsupported architecture.*mistral.*supported: llama")


def test_corrupt_safetensors(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}" * 20)
    _expect_clean_error(src, tmp_path, ValueError, "model.safetensors is corrupt or truncated")


def test_truncated_safetensors(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:-1000])
    _expect_clean_error(src, tmp_path, ValueError, "corrupt or truncated")


def test_missing_tensor(tmp_path):
    cfg = hf_config("llama")
    t = make_tensors(cfg)
    del t["model.layers.1.mlp.up_proj.weight"]
    src = write_hf(tmp_path / "src", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, r"missing 1 tensor.*model.layers.1.mlp.up_proj.weight")


def test_wrong_tensor_shape(tmp_path):
    cfg = hf_config("llama")
    t = make_tensors(cfg)
    t["model.layers.0.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"][:, :96].contiguous()
    src = write_hf(tmp_path / "src", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, r"up_proj.weight has shape \[384, 96\], config.json implies")


def test_missing_shard_and_missing_weights(tmp_path, llama_bf16):
    src = build(tmp_path / "sh", "llama", shards=2)
    (src / "model-00002-of-00002.safetensors").unlink()
    _expect_clean_error(src, tmp_path, FileNotFoundError, "lists shard model-00002-of-00002.safetensors")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(llama_bf16 / "config.json", bare / "config.json")
    (bare / "pytorch_model.bin").write_bytes(b"x")
    _expect_clean_error(bare, tmp_path, FileNotFoundError, "only safetensors are supported")


def test_gemm_shape_rule(tmp_path):
    # hidden 80: o and down have N = 80, not a multiple of 32 -> cuSPARSELt cannot take them
    cfg = hf_config("llama", hidden=80, heads=2, kv=1, head_dim=40, inter=160)
    src = write_hf(tmp_path / "src", cfg, make_tensors(cfg))
    _expect_clean_error(src, tmp_path, ValueError, r"o: N=80 is not a multiple of 32.*rule: N % 32 == 0")
    # the same model converts dense (cuBLASLt needs N % 16 only)
    out = convert_checkpoint(src, tmp_path / "dense", "dense", "int8")
    assert check_converted(out).weights_checked == 14


def test_synthetic_custom_config_bad_shape(tmp_path):
    cfg = ModelConfig("odd", "llama", hidden=72, layers=1, heads=2, kv_heads=1, head_dim=36, intermediate=144,
                      vocab=64, rope_theta=1e4, rms_eps=1e-6, tie_embeddings=True, attention_bias=False,
                      max_position=128)
    _expect_clean_error(cfg, tmp_path, ValueError, "N=72 is not a multiple of 16", pattern="dense")


def test_already_converted_source(tmp_path, llama_bf16):
    out = convert_checkpoint(llama_bf16, tmp_path / "conv", "6:8", "int8")
    _expect_clean_error(out, tmp_path, ValueError, "already a SlideSparse conversion")
    # a copy whose slidesparse_config.json was dropped is still recognised by config.json
    cp = tmp_path / "cp"
    shutil.copytree(out, cp)
    (cp / CONFIG_NAME).unlink()
    _expect_clean_error(cp, tmp_path, ValueError, "already a SlideSparse conversion")


def test_output_is_source(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    with pytest.raises(ValueError, match="is the source directory"):
        convert_checkpoint(src, src, "6:8", "int8", force=True)
    with pytest.raises(ValueError, match="contains the source"):
        convert_checkpoint(src, tmp_path, "6:8", "int8", force=True)
    assert sorted(p.name for p in src.iterdir()) == sorted(p.name for p in llama_bf16.iterdir())


@pytest.mark.parametrize("kw,match", [
    ({"pattern": "3:8"}, "cannot parse sparsity pattern"),
    ({"qdtype": "int4"}, "unknown quantized dtype"),
    ({"prune_mode": "smallest"}, "prune mode must be one of"),
    ({"seed": -1}, "non-negative integer"),
    ({"device": "nonsense"}, "bad device"),
])
def test_bad_arguments(tmp_path, llama_bf16, kw, match):
    args = {"pattern": "6:8", "qdtype": "int8"} | kw
    _expect_clean_error(llama_bf16, tmp_path, ValueError, match, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda(tmp_path, llama_bf16):
    _expect_clean_error(llama_bf16, tmp_path, ValueError, "CUDA is not available", device="cuda")


def test_compressed_tensors_static_activations_and_zero_points(tmp_path):
    cfg = hf_config("llama")
    from hf_fixtures import ct_quant_config
    cfg["quantization_config"] = ct_quant_config("int8", dynamic=False)
    src = write_hf(tmp_path / "static", cfg, make_tensors(cfg, quant="int8"))
    _expect_clean_error(src, tmp_path, ValueError, "static activation scales")
    # a non-zero weight zero point (asymmetric) is found while converting: still nothing left behind
    cfg["quantization_config"] = ct_quant_config("int8")
    t = make_tensors(cfg, quant="int8")
    t["model.layers.1.mlp.down_proj.weight_zero_point"] = torch.ones(128, 1, dtype=torch.int8)
    src = write_hf(tmp_path / "zp", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, "weight_zero_point is not zero")
    # quantized weights without a compressed-tensors config are refused
    del cfg["quantization_config"]
    src = write_hf(tmp_path / "noqc", cfg, make_tensors(cfg, quant="int8"))
    _expect_clean_error(src, tmp_path, ValueError, "no compressed-tensors quantization_config")
    # and an unknown quantization method
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (src / "config.json").write_text(json.dumps(cfg))
    _expect_clean_error(src, tmp_path, ValueError, "quantization method 'gptq' is not supported")


def test_missing_weight_scale(tmp_path):
    cfg = hf_config("llama")
    from hf_fixtures import ct_quant_config
    cfg["quantization_config"] = ct_quant_config("fp8")
    t = make_tensors(cfg, quant="fp8")
    del t["model.layers.0.self_attn.o_proj.weight_scale"]
    src = write_hf(tmp_path / "src", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, "o_proj.weight has no per-channel scale", qdtype="fp8")


def test_non_finite_weights(tmp_path):
    cfg = hf_config("llama")
    t = make_tensors(cfg)
    t["model.layers.1.self_attn.q_proj.weight"][3, 7] = float("nan")
    src = write_hf(tmp_path / "src", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, "q_proj.weight holds NaN or Inf")


# --- the verifier catches broken checkpoints ---------------------------------------------------
def _rewrite(out, name, fn):
    """Apply fn to tensor ``name`` inside the converted checkpoint, keeping the header metadata."""
    f = out / "model.safetensors"
    with safe_open(str(f), "pt") as h:
        md = h.metadata()
    t = load_file(str(f))
    t[name] = fn(t[name].clone())
    save_file(t, str(f), metadata=md)


NAME = "model.layers.0.mlp.gate_proj.weight"


def test_check_detects_non_2to4_weight(tmp_path, llama_bf16):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")

    def fill_quartet(w):
        w[0, :4] = torch.tensor([1, 2, 3, 0], dtype=torch.int8)
        return w

    _rewrite(out, NAME, fill_quartet)
    with pytest.raises(ValueError, match=f"{NAME} is not 2:4 along K"):
        check_converted(out)


def test_check_detects_changed_value(tmp_path, llama_bf16):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")

    def bump(w):
        r, c = (int(v) for v in (w != 0).nonzero()[0])
        w[r, c] = -w[r, c] if w[r, c] != 0 else 1
        return w

    _rewrite(out, NAME, bump)
    with pytest.raises(ValueError, match="differs from prune\\(quantize\\(source\\)\\) in 1 entries"):
        check_converted(out, samples=2)


def test_check_detects_non_canonical_placement(tmp_path):
    # 6:8 windows of group 0: W0 = inputs 0..3 -> slid cols 0..3, W1 = inputs 2..5 -> cols 4..7,
    # W2 = inputs 4..7 -> cols 8..11. Row 0 = [0, 0, a, b, 0, 0, c, d]: greedy puts a, b in W0, c, d in W2.
    cfg = hf_config("llama")
    t = make_tensors(cfg)
    t[NAME][0, :8] = torch.tensor([0, 0, 0.1, 0.1, 0, 0, 0.1, 0.1], dtype=t[NAME].dtype)
    src = write_hf(tmp_path / "src", cfg, t)
    out = convert_checkpoint(src, tmp_path / "o", "6:8", "int8")
    W = load_converted(out)[1][NAME]
    assert (W[0, :12] != 0).tolist() == [False, False, True, True] + [False] * 4 + [False, False, True, True]

    def move(w):  # b (input 3) into W1's lane 1: still 2:4, same unslide, but not what slide() writes
        w[0, 5], w[0, 3] = w[0, 3], 0
        return w

    _rewrite(out, NAME, move)
    with pytest.raises(ValueError, match="not the canonical slide"):
        check_converted(out)


def test_check_detects_lying_metadata_and_missing_parts(tmp_path, llama_bf16):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")
    meta = json.loads((out / CONFIG_NAME).read_text())
    meta["layers"][NAME]["K_slid"] += 32
    (out / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="metadata says"):
        check_converted(out)
    meta["format_version"] = 99
    (out / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99"):
        load_converted(out)
    (out / CONFIG_NAME).unlink()
    with pytest.raises(ValueError, match="not a SlideSparse checkpoint"):
        load_converted(out)
    with pytest.raises(FileNotFoundError):
        load_converted(tmp_path / "nothing")


def test_check_missing_weight_file(tmp_path, llama_bf16):
    out = convert_checkpoint(llama_bf16, tmp_path / "o", "6:8", "int8")
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors listed in"):
        check_converted(out)


def test_check_source_moved_or_copied(tmp_path, llama_bf16):
    src = tmp_path / "src"
    shutil.copytree(llama_bf16, src)
    out = convert_checkpoint(src, tmp_path / "o", "6:8", "fp8")
    moved = tmp_path / "moved"
    src.rename(moved)
    rep = check_converted(out, samples=1)
    assert rep.source_compared == 0 and "not available" in rep.source_note
    assert any("source comparison skipped" in line for line in rep.lines)
    rep = check_converted(out, samples=1, source=moved)  # a copy keeps the fingerprint
    assert rep.source_compared == 7
    # a rewritten source (different tensor sizes -> different headers) is not compared
    cfg = hf_config("llama", vocab=288)
    write_hf(moved, cfg, make_tensors(cfg))
    rep = check_converted(out, samples=1, source=moved)
    assert rep.source_compared == 0 and "fingerprint differs" in rep.source_note


# --- GPU: the conversion math gives the same bytes on CUDA as on the CPU ----------------------------
def _bytes(t):
    return t.contiguous().view(torch.uint8)


@pytest.mark.gpu
@pytest.mark.parametrize("prune_mode", ["magnitude", "random"])
@pytest.mark.parametrize("qdtype", ["int8", "fp8"])
def test_cuda_conversion_matches_cpu(tmp_path, qdtype, prune_mode):
    cfg = ModelConfig("mid", "qwen2", hidden=512, layers=2, heads=8, kv_heads=2, head_dim=64, intermediate=1536,
                      vocab=1024, rope_theta=1e6, rms_eps=1e-6, tie_embeddings=False, attention_bias=True,
                      max_position=4096)
    a = convert_checkpoint(cfg, tmp_path / "cpu", "6:8", qdtype, prune_mode=prune_mode, seed=3)
    b = convert_checkpoint(cfg, tmp_path / "gpu", "6:8", qdtype, prune_mode=prune_mode, seed=3, device="cuda")
    _, ta = load_converted(a)
    _, tb = load_converted(b)
    assert set(ta) == set(tb)
    for n in ta:
        assert torch.equal(_bytes(ta[n]), _bytes(tb[n])), n


# --- less common layouts that must be refused cleanly --------------------------------------------
@pytest.mark.parametrize("change,match", [
    (lambda qc: qc.update(format="pack-quantized"), "format 'pack-quantized' is not supported"),
    (lambda qc: qc.update(sparsity_config={"format": "sparse-24-bitmask"}), "sparse storage 'sparse-24-bitmask'"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(symmetric=False), "only symmetric 8-bit"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(num_bits=4), "only symmetric 8-bit"),
    (lambda qc: qc["config_groups"]["group_0"]["weights"].update(strategy="group"), "strategy 'group'"),
])
def test_compressed_tensors_config_variants_refused(tmp_path, change, match):
    from hf_fixtures import ct_quant_config
    cfg = hf_config("llama")
    cfg["quantization_config"] = ct_quant_config("int8")
    change(cfg["quantization_config"])
    src = write_hf(tmp_path / "src", cfg, make_tensors(cfg, quant="int8"))
    _expect_clean_error(src, tmp_path, ValueError, match)


def _ct_tensors(cfg):
    from hf_fixtures import ct_quant_config
    cfg["quantization_config"] = ct_quant_config("int8")
    return make_tensors(cfg, quant="int8")


W0 = "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.update({"model.layers.0.self_attn.q_proj.input_scale": torch.ones(1)}), "static input_scale"),
    (lambda t: t.update({W0 + "_scale": torch.ones(7, 1)}), r"weight_scale has shape \[7, 1\]"),
    (lambda t: t.update({W0 + "_scale": -torch.ones(128, 1)}), "non-positive or non-finite scales"),
    (lambda t: t.update({W0: t[W0].to(torch.int32)}), "has dtype I32"),
    (lambda t: t.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(384, 128, dtype=torch.int8)}),
     "belongs to layer 2, but config.json has 2 layers"),
])
def test_tensor_level_problems_refused(tmp_path, edit, match):
    cfg = hf_config("llama")
    t = _ct_tensors(cfg)
    edit(t)
    src = write_hf(tmp_path / "src", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, match)


def test_unquantized_weight_with_scale_and_index_mismatch(tmp_path):
    cfg = hf_config("llama")
    t = make_tensors(cfg)
    t[W0 + "_scale"] = torch.ones(128)
    src = write_hf(tmp_path / "a", cfg, t)
    _expect_clean_error(src, tmp_path, ValueError, "unquantized weight .* has a .*weight_scale tensor")
    src = build(tmp_path / "b", "llama", shards=2)
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    first = next(iter(idx["weight_map"]))
    idx["weight_map"][first] = "model-00002-of-00002.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    _expect_clean_error(src, tmp_path, ValueError, f"maps {first} to model-00002-of-00002.safetensors, but")
    (src / "model.safetensors.index.json").write_text("{]")
    _expect_clean_error(src, tmp_path, ValueError, "index.json is corrupt")
