"""The decoder engine on the reference backend: shapes, the prefill mapping, dense vs sparse
equivalence, and loading a converted checkpoint."""

import pytest
import torch

from hf_fixtures import build
from slidesparse import Pattern
from slidesparse.checkpoint import convert_checkpoint
from slidesparse.engine import (EngineSpec, build_engine, build_engine_from_checkpoint, prefill_batch)
from slidesparse.gemm import make_backend
from slidesparse.models import get_model
from slidesparse.ops import ReferenceOps
from slidesparse.pipeline.tasks import INT8_FAST_TOL

DENSE, SPARSE = make_backend("reference"), make_backend("reference", sparse=True)


@pytest.mark.parametrize("M, expect", [(1, (1, 1)), (512, (1, 512)), (1024, (1, 1024)), (1025, (2, 1024)),
                                       (65536, (64, 1024))])
def test_prefill_batch_follows_the_seed_mapping(M, expect):
    assert prefill_batch(M) == expect


def test_prefill_batch_rejects_nonpositive():
    with pytest.raises(ValueError, match="positive"):
        prefill_batch(0)


def _logits(engine, batch=3, T=9, seed=0):
    engine.setup_cache(batch, T + 4)
    tok = torch.randint(0, engine.cfg.vocab, (batch, T), generator=torch.Generator().manual_seed(seed))
    pre = engine.prefill(tok).float()
    dec = engine.decode_step(tok[:, :1], torch.tensor([T])).float()
    return pre, dec


@pytest.mark.parametrize("qdtype", ["int8", "fp8"])
def test_shapes_and_finite(qdtype):
    cfg = get_model("tiny")
    pre, dec = _logits(build_engine(cfg, EngineSpec(qdtype), DENSE, ReferenceOps(), seed=3))
    assert pre.shape == dec.shape == (3, cfg.vocab)
    assert torch.isfinite(pre).all() and torch.isfinite(dec).all()


@pytest.mark.parametrize("pattern", ["2:4", "4:6", "6:8", "8:10"])
def test_int8_sparse_engine_equals_pruned_dense_engine(pattern):
    """INT8 GEMMs are exact: slid weights + lifted activations give the very same logits (on the int32
    epilogue; the default bf16 + alpha one is close, not identical)."""
    cfg, p = get_model("tiny"), Pattern.parse(pattern)
    sparse = build_engine(cfg, EngineSpec("int8", p, acc_dtype=torch.int32), SPARSE, ReferenceOps(), seed=1)
    pruned = build_engine(cfg, EngineSpec("int8", p, sparse=False), DENSE, ReferenceOps(), seed=1)
    dense = build_engine(cfg, EngineSpec("int8"), DENSE, ReferenceOps(), seed=1)
    (ps, ds), (pp, dp), (pd, _) = _logits(sparse), _logits(pruned), _logits(dense)
    assert torch.equal(ps, pp) and torch.equal(ds, dp)
    assert not torch.equal(ps, pd)  # pruning did change the model
    fast = build_engine(cfg, EngineSpec("int8", p), SPARSE, ReferenceOps(), seed=1)
    assert fast.layers[0].down.epilogue.label == "bfloat16+alpha"
    pf, _ = _logits(fast)
    # one extra bf16 rounding per linear, amplified by the requantization (pipeline.tasks.INT8_FAST_TOL)
    assert 0 < (pf - pp).norm() <= INT8_FAST_TOL * pp.norm()


class FusedRopeOps(ReferenceOps):
    """The reference ops plus the Triton RoPE + KV-cache kernel (interpreted on the CPU)."""

    fused_rope = True

    def rope_cache(self, *args):
        from slidesparse.kernels import launch

        return launch.rope_cache(*args)


@pytest.mark.parametrize("qdtype", ["int8", "fp8"])
def test_engine_with_the_fused_rope_kernel_gives_the_same_logits(qdtype):
    """The fused RoPE + cache write (prefill through the cache slots, then decode) changes no bit."""
    cfg = get_model("tiny")
    plain = _logits(build_engine(cfg, EngineSpec(qdtype), DENSE, ReferenceOps(), seed=5))
    fused = _logits(build_engine(cfg, EngineSpec(qdtype), DENSE, FusedRopeOps(), seed=5))
    assert torch.equal(plain[0], fused[0]) and torch.equal(plain[1], fused[1])


def test_head_dim_not_a_power_of_two_falls_back_to_the_torch_rope():
    """The fused kernel tiles a head in powers of two; other head sizes take the torch ops, same logits."""
    import dataclasses

    cfg = dataclasses.replace(get_model("tiny"), head_dim=24)
    plain = _logits(build_engine(cfg, EngineSpec("int8"), DENSE, ReferenceOps(), seed=5))
    fused = _logits(build_engine(cfg, EngineSpec("int8"), DENSE, FusedRopeOps(), seed=5))
    assert torch.equal(plain[0], fused[0]) and torch.equal(plain[1], fused[1])


def test_triton_ops_use_the_fused_rope_unless_told_not_to():
    from slidesparse.kernels import TritonOps

    assert TritonOps(search_dir=None).fused_rope is True and not TritonOps(search_dir=None, fused_rope=False).fused_rope


def test_engine_spec_needs_matching_backend():
    with pytest.raises(ValueError, match="sparse backend"):
        build_engine(get_model("tiny"), EngineSpec("int8", Pattern.parse("6:8")), DENSE, ReferenceOps())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    src = build(root / "hf", "qwen2")  # qwen2: q/k/v biases travel too
    out = {}
    for name, pattern in (("sparse", "6:8"), ("dense", None)):
        out[name] = convert_checkpoint(src, root / name, pattern, "int8")
    return out


def test_checkpoint_engine_sparse_equals_its_pruned_dense_baseline(converted):
    sparse = build_engine_from_checkpoint(converted["sparse"], SPARSE, ReferenceOps(), acc_dtype=torch.int32)
    pruned = build_engine_from_checkpoint(converted["sparse"], DENSE, ReferenceOps(), sparse=False)
    (ps, ds), (pp, dp) = _logits(sparse), _logits(pruned)
    assert torch.equal(ps, pp) and torch.equal(ds, dp)
    assert sparse.cfg.family == "qwen2" and sparse.layers[0].qkv.bias is not None
    assert sparse.layers[0].qkv.pattern == Pattern.parse("6:8")


def test_checkpoint_engine_uses_the_checkpoint_weights(converted):
    """Norm weights and embeddings come from the file, not from a seed."""
    from slidesparse.checkpoint import load_converted

    eng = build_engine_from_checkpoint(converted["dense"], DENSE, ReferenceOps(), sparse=False)
    _, t = load_converted(converted["dense"])
    assert torch.equal(eng.embed, t["model.embed_tokens.weight"].to(eng.dtype))
    assert torch.equal(eng.layers[1].post_norm.weight, t["model.layers.1.post_attention_layernorm.weight"])
    assert torch.equal(eng.norm.weight, t["model.norm.weight"])
    pre, _ = _logits(eng)
    assert torch.isfinite(pre).all()


def test_checkpoint_engine_errors(converted, tmp_path):
    with pytest.raises(ValueError, match="dense conversion"):
        build_engine_from_checkpoint(converted["dense"], SPARSE, ReferenceOps())
    with pytest.raises(ValueError, match="backend reference-dense is dense"):
        build_engine_from_checkpoint(converted["sparse"], DENSE, ReferenceOps())
    with pytest.raises(ValueError, match="backend reference-sparse is sparse"):
        build_engine_from_checkpoint(converted["sparse"], SPARSE, ReferenceOps(), sparse=False)
    with pytest.raises(FileNotFoundError):
        build_engine_from_checkpoint(tmp_path / "missing", SPARSE, ReferenceOps())


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_engine_matches_transformers_up_to_w8a8_noise(tmp_path, family):
    """Same checkpoint, our engine (INT8 W8A8, dense) vs Hugging Face's float model: RoPE, GQA, biases,
    norms and the KV cache follow the HF conventions (a convention slip gives O(1) errors; W8A8 on
    these tiny random weights measures ~3 %)."""
    transformers = pytest.importorskip("transformers")
    src = build(tmp_path / "hf", family, dtype=torch.float32)
    out = convert_checkpoint(src, tmp_path / "dense", None, "int8")
    eng = build_engine_from_checkpoint(out, DENSE, ReferenceOps(), sparse=False, dtype=torch.float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tok = torch.randint(0, eng.cfg.vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    nxt = torch.randint(0, eng.cfg.vocab, (2, 1), generator=torch.Generator().manual_seed(1))
    eng.setup_cache(2, 16)
    ours = eng.prefill(tok).float()
    ours_next = eng.decode_step(nxt, torch.tensor([12])).float()
    with torch.no_grad():
        ref = hf(tok).logits[:, -1].float()
        ref_next = hf(torch.cat([tok, nxt], 1)).logits[:, -1].float()
    for a, b in ((ours, ref), (ours_next, ref_next)):
        assert ((a - b).norm() / b.norm()).item() < 0.06
