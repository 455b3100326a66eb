"""SlideSparseLinear on the reference backends (the CPU stand-ins for cuBLASLt / cuSPARSELt)."""

import copy

import pytest
import torch
from torch import nn

from slidesparse.gemm import make_backend
from slidesparse.linear import Epilogue, SlideSparseLinear
from slidesparse.pattern import Pattern
from slidesparse.quant import quantize_weight
from slidesparse.sparsify import prune

PATTERNS = ["2:4", "4:6", "6:8", "8:10"]


def make_linear(K: int, N: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=bias)
    return lin


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).abs().max() / ref.float().abs().max())


@pytest.mark.parametrize("qdtype, tol", [("int8", 0.03), ("fp8", 0.08)])
@pytest.mark.parametrize("K", [64, 96, 40])  # 40: K not a multiple of 32 (zero-padded)
def test_dense_matches_nn_linear(qdtype, tol, K):
    lin = make_linear(K, 48)
    x = torch.randn(5, K)
    layer = SlideSparseLinear.from_linear(lin, qdtype=qdtype, backend=make_backend("reference"),
                                          out_dtype=torch.float32)
    assert layer.gemm_weight.k == -(-K // 32) * 32
    y = layer(x)
    assert y.shape == (5, 48) and y.dtype == torch.float32
    assert rel_err(y, lin(x).detach()) < tol


@pytest.mark.parametrize("qdtype, tol", [("int8", 0.03), ("fp8", 0.08)])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_sparse_matches_pruned_nn_linear(qdtype, tol, pattern):
    K, N = 80, 32
    lin = make_linear(K, N)
    p = Pattern.parse(pattern)
    layer = SlideSparseLinear.from_linear(lin, qdtype=qdtype, backend=make_backend("reference", sparse=True),
                                          pattern=p, out_dtype=torch.float32)
    assert layer.gemm_weight.k == p.slid_k(K)
    # the float layer with the same support (the mask comes from the quantized weight: near-equal
    # floats can tie after quantization, so pruning the float weight could pick the other one)
    q, _ = quantize_weight(lin.weight.detach(), qdtype)
    keep = prune(q, p).float() != 0
    pruned = nn.Linear(K, N)
    with torch.no_grad():
        pruned.weight.copy_(lin.weight * keep)
        pruned.bias.copy_(lin.bias)
    x = torch.randn(3, 7, K)  # leading dims are kept
    y = layer(x)
    assert y.shape == (3, 7, N)
    assert rel_err(y, pruned(x).detach()) < tol


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("K", [64, 72])
def test_int8_sparse_equals_dense_on_pruned_weight_exactly(pattern, K):
    p = Pattern.parse(pattern)
    lin = make_linear(K, 24, seed=1)
    q, s = quantize_weight(lin.weight.detach(), "int8")
    qp = prune(q, p)
    dense = SlideSparseLinear(qp, s, K, qdtype="int8", backend=make_backend("reference"),
                              bias=lin.bias, out_dtype=torch.float32)
    sparse = SlideSparseLinear.from_linear(lin, qdtype="int8", backend=make_backend("reference", sparse=True),
                                           pattern=p, out_dtype=torch.float32, acc_dtype=torch.int32)
    x = torch.randn(6, K).to(torch.bfloat16)
    assert torch.equal(dense(x), sparse(x))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_int8_sparse_default_writes_bf16_with_the_weight_scale_as_alpha(pattern):
    """By default a sparse INT8 layer takes the fast epilogue (bf16 + alpha vector, dequant applies only
    the token scale): close to the exact int32 layer (one extra bf16 rounding), not identical."""
    p = Pattern.parse(pattern)
    lin = make_linear(96, 40, seed=4)
    sp = make_backend("reference", sparse=True)
    fast = SlideSparseLinear.from_linear(lin, qdtype="int8", backend=sp, pattern=p, out_dtype=torch.float32)
    exact = SlideSparseLinear.from_linear(lin, qdtype="int8", backend=sp, pattern=p, out_dtype=torch.float32,
                                          acc_dtype=torch.int32)
    assert fast.epilogue == Epilogue(torch.bfloat16, True) and fast.acc_dtype == torch.bfloat16
    assert exact.epilogue == Epilogue(torch.int32, False)
    assert torch.equal(fast.dequant_scale, torch.ones(40)) and exact.dequant_scale is exact.weight_scale
    # the dequant factor follows the weight scale through a cast and load_state_dict (no stale copy)
    exact2 = copy.deepcopy(exact).double()  # _apply makes new tensors for every buffer
    sd = exact2.state_dict()
    sd["weight_scale"] = sd["weight_scale"] * 2
    exact2.load_state_dict(sd)
    assert torch.equal(exact2.dequant_scale, exact2.weight_scale) and "_ones" not in sd
    assert "gemm_out=bfloat16+alpha" in repr(fast) and "gemm_out=int32" in repr(exact)
    x = torch.randn(7, 96).to(torch.bfloat16)
    y, ref = fast(x), exact(x)
    assert not torch.equal(y, ref)
    assert 0 < rel_err(y, ref) < 1e-2
    # the dense INT8 layer has no such epilogue (cuBLASLt's INT8 GEMM writes int32 only)
    assert SlideSparseLinear.from_linear(lin, qdtype="int8", backend=make_backend("reference")).epilogue == \
        Epilogue(torch.int32, False)
    # FP8 sparse keeps bf16 + the full dequant (alpha would save no bytes there)
    assert SlideSparseLinear.from_linear(lin, qdtype="fp8", backend=sp, pattern=p).epilogue == \
        Epilogue(torch.bfloat16, False)


def test_fp8_sparse_close_to_dense_on_pruned_weight():
    p = Pattern.parse("6:8")
    lin = make_linear(64, 16, seed=2)
    q, s = quantize_weight(lin.weight.detach(), "fp8")
    dense = SlideSparseLinear(prune(q, p), s, 64, qdtype="fp8", backend=make_backend("reference"),
                              out_dtype=torch.float32)
    sparse = SlideSparseLinear.from_linear(lin, qdtype="fp8", backend=make_backend("reference", sparse=True),
                                           pattern=p, out_dtype=torch.float32)
    x = torch.randn(4, 64)
    # same quantized products, only the float32 summation order differs
    assert torch.allclose(dense(x), sparse(x) - lin.bias.detach().float(), rtol=1e-5, atol=1e-5)


def test_int8_bf16_gemm_output_on_sparse_reference():
    lin = make_linear(64, 16)
    backend = make_backend("reference", sparse=True)
    layer = SlideSparseLinear.from_linear(lin, qdtype="int8", backend=backend, pattern="6:8",
                                          acc_dtype=torch.bfloat16)
    assert layer.acc_dtype == torch.bfloat16
    assert layer(torch.randn(2, 64)).dtype == torch.bfloat16


def test_random_prune_mode_is_seeded():
    lin = make_linear(64, 16)
    kw = dict(qdtype="int8", backend=make_backend("reference", sparse=True), pattern="6:8", prune_mode="random")
    a = SlideSparseLinear.from_linear(lin, seed=3, **kw)
    b = SlideSparseLinear.from_linear(lin, seed=3, **kw)
    assert torch.equal(a.gemm_weight.data, b.gemm_weight.data)


# --- errors ----------------------------------------------------------------------------------
def test_pattern_without_sparse_backend():
    with pytest.raises(ValueError, match="needs a sparse backend"):
        SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="int8", backend=make_backend("reference"),
                                      pattern="6:8")


def test_sparse_backend_without_pattern():
    with pytest.raises(ValueError, match="no pattern was given"):
        SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="int8",
                                      backend=make_backend("reference", sparse=True))


def test_weight_with_wrong_columns():
    q = torch.zeros(16, 50, dtype=torch.int8)
    with pytest.raises(ValueError, match="weight has 50 columns"):
        SlideSparseLinear(q, torch.ones(16), 64, qdtype="int8", backend=make_backend("reference"))


def test_unslid_weight_on_sparse_backend():
    q, s = quantize_weight(torch.randn(16, 64))
    # a dense (not 2:4) weight of the slid width must be refused by the sparse backend
    k = Pattern.parse("6:8").slid_k(64)
    wide = torch.cat([q, q], 1)[:, :k].contiguous()
    with pytest.raises(ValueError, match="not 2:4 along K"):
        SlideSparseLinear(wide, s, 64, qdtype="int8", backend=make_backend("reference", sparse=True),
                          pattern="6:8")


def test_bad_qdtype_and_out_dtype():
    with pytest.raises(ValueError, match="unknown quantized dtype"):
        SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="int4", backend=make_backend("reference"))
    # caught when the layer is built, naming what the backend can write
    with pytest.raises(ValueError, match="cannot write float32 from int8; legal: int32"):
        SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="int8", backend=make_backend("reference"),
                                      acc_dtype=torch.float32)


def test_input_with_wrong_features():
    layer = SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="int8", backend=make_backend("reference"))
    with pytest.raises(RuntimeError):
        layer(torch.randn(2, 63))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown GEMM backend"):
        make_backend("cutlass")


def test_extra_repr_names_the_backend():
    layer = SlideSparseLinear.from_linear(make_linear(64, 16), qdtype="fp8",
                                          backend=make_backend("reference", sparse=True), pattern="2_8")
    assert "reference-sparse" in repr(layer) and "6:8 (2_8)" in repr(layer)
