"""Model configs -> GEMM shapes; `slidesparse models`."""

import json

import click
import pytest
from click.testing import CliRunner

from slidesparse.cli import _Group
from slidesparse.commands.models import models_command
from slidesparse.models import (BUILTIN_MODELS, ModelConfig, check_gemm_shapes, gemm_nk_list, gemm_shape_problems,
                                get_model, parse_linear_weight_name, slid_shapes)

# reference-brief §7: (N, K) per linear, extracted from the real checkpoints' layer 0
REFERENCE_SHAPES = {
    "llama3.2-1b": {"qkv": (3072, 2048), "o": (2048, 2048), "gate_up": (16384, 2048), "down": (2048, 8192)},
    "llama3.2-3b": {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)},
    "qwen2.5-7b": {"qkv": (4608, 3584), "o": (3584, 3584), "gate_up": (37888, 3584), "down": (3584, 18944)},
    "qwen2.5-14b": {"qkv": (7168, 5120), "o": (5120, 5120), "gate_up": (27648, 5120), "down": (5120, 13824)},
}
# reference-brief §1.5 / §7: slid K for 2:6 / 2:8 / 2:10 (committed runtime JSONs of the reference)
REFERENCE_SLID_K = {
    2048: (2752, 3072, 3296), 8192: (10944, 12288, 13120), 3072: (4096, 4608, 4928),
    3584: (4800, 5376, 5760), 18944: (25280, 28416, 30336), 5120: (6848, 7680, 8192), 13824: (18432, 20736, 22144),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SHAPES))
def test_builtin_shapes_match_reference_table(name):
    cfg = get_model(name)
    assert cfg.linear_shapes() == REFERENCE_SHAPES[name]
    assert list(cfg.linear_shapes()) == ["qkv", "o", "gate_up", "down"]
    assert check_gemm_shapes(cfg, "6:8") is None and check_gemm_shapes(cfg, None) is None


@pytest.mark.parametrize("name", sorted(REFERENCE_SHAPES))
def test_builtin_slid_k_match_reference(name):
    cfg = get_model(name)
    for label, idx in (("2:6", 0), ("2:8", 1), ("2:10", 2)):
        for lin, (n, k, ks) in slid_shapes(cfg, label).items():
            assert ks == REFERENCE_SLID_K[k][idx], (name, lin, label)
            assert (n, k) == REFERENCE_SHAPES[name][lin]
    # 2:4 slides to K itself (already a multiple of 32)
    assert all(ks == k for _, k, ks in slid_shapes(cfg, "2:4").values())


def test_builtin_architecture_numbers():
    c = BUILTIN_MODELS["llama3.2-1b"]
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab) == \
        (2048, 16, 32, 8, 64, 8192, 128256)
    assert c.rope_theta == 500000.0 and c.tie_embeddings and not c.attention_bias
    c = BUILTIN_MODELS["llama3.2-3b"]
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab, c.tie_embeddings) == \
        (3072, 28, 24, 8, 128, 8192, 128256, True)
    c = BUILTIN_MODELS["qwen2.5-7b"]
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab) == \
        (3584, 28, 28, 4, 128, 18944, 152064)
    assert c.rope_theta == 1e6 and not c.tie_embeddings and c.attention_bias and c.family == "qwen2"
    c = BUILTIN_MODELS["qwen2.5-14b"]
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab) == \
        (5120, 48, 40, 8, 128, 13824, 152064)
    assert not c.tie_embeddings and c.attention_bias


def test_tiny_model_dims_are_multiples_of_32():
    cfg = get_model("tiny")
    assert cfg.family == "llama"
    for n, k in cfg.linear_shapes().values():
        assert n % 32 == 0 and k % 32 == 0
    assert cfg.vocab % 32 == 0 and cfg.hidden % 32 == 0


def test_gemm_nk_list_matches_reference_count():
    # reference: 4 original pairs + slid K for L = 4..10, deduplicated -> 16 pairs
    nk = gemm_nk_list(get_model("qwen2.5-7b"), ["2:4", "2:6", "2:8", "2:10"])
    assert len(nk) == 16 and (37888, 3584) in nk and (3584, 28416) in nk
    assert len(set(nk)) == len(nk)


def test_from_hf_config_dict_file_and_dir(tmp_path):
    d = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 8,
         "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "rope_theta": 5e5,
         "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "max_position_embeddings": 4096}
    a = ModelConfig.from_hf_config(d, name="x")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(d))
    b = ModelConfig.from_hf_config(tmp_path / "m" / "config.json", name="x")
    c = ModelConfig.from_hf_config(tmp_path / "m")
    assert a == b and c.name == "m"
    assert a.head_dim == 32 and a.kv_heads == 2 and a.rope_theta == 5e5 and a.rms_eps == 1e-5
    assert a.tie_embeddings and a.max_position == 4096 and not a.attention_bias
    assert a.linear_shapes() == {"qkv": (384, 256), "o": (256, 256), "gate_up": (1024, 256), "down": (256, 512)}


def test_explicit_head_dim_is_honoured():
    d = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 256, "vocab_size": 64}
    cfg = ModelConfig.from_hf_config(d)
    # q: 2*32 = 64 rows (not hidden=128); o reads heads*head_dim = 64 columns
    assert cfg.linear_shapes() == {"qkv": (128, 128), "o": (128, 64), "gate_up": (512, 128), "down": (128, 256)}
    assert cfg.proj_shapes()["q"] == (64, 128)


def test_qwen2_detected_by_architectures_and_has_qkv_bias():
    d = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 128, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 64}
    cfg = ModelConfig.from_hf_config(d)
    assert cfg.family == "qwen2" and cfg.attention_bias and cfg.bias_projections() == ("q", "k", "v")
    names = cfg.tensor_shapes()
    assert names["model.layers.0.self_attn.q_proj.bias"] == (128,)
    assert "model.layers.0.self_attn.o_proj.bias" not in names
    assert names["lm_head.weight"] == (64, 128)


def test_llama_attention_bias_covers_o_proj():
    d = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 128, "vocab_size": 64, "attention_bias": True, "tie_word_embeddings": True}
    cfg = ModelConfig.from_hf_config(d)
    assert cfg.bias_projections() == ("q", "k", "v", "o") and cfg.kv_heads == 2
    assert "lm_head.weight" not in cfg.tensor_shapes()


def test_rope_theta_from_rope_parameters():
    d = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 128, "vocab_size": 64, "rope_parameters": {"rope_theta": 1e6}}
    assert ModelConfig.from_hf_config(d).rope_theta == 1e6


@pytest.mark.parametrize("cfg,match", [
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]},
     r"'mistral'.*MistralForCausalLM.*supported: llama"),
    ({"architectures": ["GPT2LMHeadModel"]}, r"GPT2LMHeadModel.*supported: llama \(LlamaForCausalLM\), qwen2"),
    ({}, r"no model_type or architectures"),
])
def test_unknown_architecture_names_it_and_supported(cfg, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf_config(cfg)


def test_bad_configs():
    base = {"model_type": "llama", "hidden_size": 100, "num_hidden_layers": 1, "num_attention_heads": 3,
            "intermediate_size": 128, "vocab_size": 64}
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        ModelConfig.from_hf_config(base)
    with pytest.raises(ValueError, match="missing required key 'vocab_size'"):
        ModelConfig.from_hf_config({k: v for k, v in base.items() if k != "vocab_size"} | {"hidden_size": 96})
    with pytest.raises(ValueError, match="must be a multiple of kv_heads"):
        ModelConfig.from_hf_config({**base, "hidden_size": 96, "num_key_value_heads": 2})
    with pytest.raises(ValueError, match="mlp_bias"):
        ModelConfig.from_hf_config({**base, "hidden_size": 96, "mlp_bias": True})
    with pytest.raises(ValueError, match="must be an integer"):
        ModelConfig.from_hf_config({**base, "hidden_size": "96"})
    with pytest.raises(ValueError, match="positive integer"):
        ModelConfig.from_hf_config({**base, "hidden_size": 96, "num_hidden_layers": 0})


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ModelConfig.from_hf_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_hf_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_hf_config(tmp_path)


def test_get_model_resolution(tmp_path):
    assert get_model("Qwen2.5-7B") is BUILTIN_MODELS["qwen2.5-7b"]
    with pytest.raises(ValueError, match="unknown model 'llama9'.*tiny"):
        get_model("llama9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_model(str(tmp_path / "nope"))
    d = tmp_path / "tiny"  # an existing directory wins over the built-in of the same name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(BUILTIN_MODELS["qwen2.5-7b"].to_hf_config()))
    cfg = get_model(str(d))
    assert cfg.family == "qwen2" and cfg.linear_shapes() == REFERENCE_SHAPES["qwen2.5-7b"]


def test_to_hf_config_round_trip():
    for cfg in BUILTIN_MODELS.values():
        back = ModelConfig.from_hf_config(cfg.to_hf_config(), name=cfg.name)
        assert back == cfg


def test_gemm_shape_rules():
    cfg = ModelConfig("odd", "llama", hidden=80, layers=1, heads=2, kv_heads=1, head_dim=40, intermediate=160,
                      vocab=64, rope_theta=1e4, rms_eps=1e-6, tie_embeddings=True, attention_bias=False,
                      max_position=128)
    probs = gemm_shape_problems(cfg, "6:8")
    # qkv N = 160, o N = 80, gate_up N = 320, down N = 80: o and down break N % 32
    assert [p.split(":")[0] for p in probs] == ["o", "down"]
    assert "N=80 is not a multiple of 32" in probs[0]
    assert gemm_shape_problems(cfg, None) == []  # 80 % 16 == 0: the dense GEMM takes it
    with pytest.raises(ValueError, match=r"rule: N % 32 == 0"):
        check_gemm_shapes(cfg, "2:4")


def test_parse_linear_weight_name():
    assert parse_linear_weight_name("model.layers.12.mlp.up_proj.weight") == (12, "up")
    assert parse_linear_weight_name("model.layers.0.self_attn.k_proj.weight") == (0, "k")
    assert parse_linear_weight_name("model.layers.0.self_attn.k_proj.bias") is None
    assert parse_linear_weight_name("lm_head.weight") is None


# --- CLI ----------------------------------------------------------------------------------------
@click.group(cls=_Group)
def app():
    """test group with the real error handling"""


app.add_command(models_command)


def test_models_cli_default_table():
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    for name in REFERENCE_SHAPES:
        assert name in res.stdout
    for lab in ("2:4 (2_4)", "4:6 (2_6)", "6:8 (2_8)", "8:10 (2_10)"):
        assert lab in res.stdout
    assert "37888" in res.stdout and "28416" in res.stdout


def test_models_cli_json_and_patterns(tmp_path):
    res = CliRunner().invoke(app, ["models", "qwen2.5-7b", "tiny", "-p", "2_8", "--pattern", "8:10", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [d["model"] for d in data] == ["qwen2.5-7b", "tiny"]
    assert data[0]["linears"]["down"] == {"N": 3584, "K": 18944, "K_slid": {"2_8": 28416, "2_10": 30336}}


def test_models_cli_hf_dir_and_warning(tmp_path):
    d = {"model_type": "llama", "hidden_size": 80, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 160, "vocab_size": 64}
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps(d))
    res = CliRunner().invoke(app, ["models", str(tmp_path / "odd"), "-p", "6:8"])
    assert res.exit_code == 0, res.output
    assert "odd" in res.stdout and "warning" in res.stdout and "N=80" in res.stdout


@pytest.mark.parametrize("args,match", [
    (["models", "-p", "3:8"], "cannot parse sparsity pattern"),
    (["models", "nosuchmodel"], "unknown model"),
])
def test_models_cli_errors_are_one_line(args, match):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and match in res.stderr


def test_models_cli_help():
    res = CliRunner().invoke(app, ["models", "--help"])
    assert res.exit_code == 0 and "--pattern" in res.stdout and "--json" in res.stdout and "Examples" in res.stdout
