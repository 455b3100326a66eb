"""The reference quantization (the spec every kernel must match bit for bit)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesparse.quant import (
    ABSMAX_FLOOR, dequant, dequant_weight, parse_qdtype, qmax, quantize_per_token, quantize_rows,
    quantize_weight, torch_qdtype,
)

FP8 = torch.float8_e4m3fn


def test_int8_rounds_half_to_even():
    # absmax 127 makes the multiplier exactly 1, so q = rint(x)
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -127.0]])
    q, s = quantize_per_token(x, "int8")
    assert q.dtype == torch.int8
    assert q.tolist() == [[0, 2, 2, 0, -2, -2, 4, 126, -127]]
    assert s.tolist() == [1.0]


def test_int8_symmetric_range_never_minus_128():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 300, generator=g) * torch.logspace(-8, 8, 64).unsqueeze(1)
    x[:, 0] = -x.abs().amax(1) * 1.0000001  # the row's extreme value is negative
    q, _ = quantize_per_token(x, "int8")
    assert int(q.min()) == -127 and int(q.max()) <= 127
    assert bool((q.abs().amax(1) == 127).all())  # every row uses the full range


def test_fp8_clamps_to_448_and_never_nan():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 300, generator=g) * torch.logspace(-10, 10, 64).unsqueeze(1)
    q, _ = quantize_per_token(x, "fp8")
    qf = q.float()
    assert q.dtype == FP8
    assert not bool(torch.isnan(qf).any())
    assert float(qf.abs().max()) == 448.0
    assert bool((qf.abs().amax(1) == 448.0).all())


def test_spec_formula_bit_exact():
    """The documented math, written out independently of the module."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(16, 96, generator=g) * 3).to(torch.bfloat16)
    xf = x.float()
    absmax = xf.abs().amax(1, keepdim=True).clamp_min(2.0 ** -100)

    def div(a, b):  # IEEE float32 division, correctly rounded: float64 quotient rounded once to float32
        return (torch.as_tensor(a, dtype=torch.float64) / torch.as_tensor(b, dtype=torch.float64)).float()

    inv = div(127.0, absmax)
    q_ref = torch.clamp(torch.round(xf * inv), -127, 127).to(torch.int8)
    q, s = quantize_per_token(x, "int8")
    assert torch.equal(q, q_ref)
    assert torch.equal(s, div(absmax, 127.0).squeeze(1))
    inv8 = div(448.0, absmax)
    q8_ref = torch.clamp(xf * inv8, -448, 448).to(FP8)
    q8, s8 = quantize_per_token(x, "fp8")
    assert torch.equal(q8.view(torch.uint8), q8_ref.view(torch.uint8))
    assert torch.equal(s8, div(absmax, 448.0).squeeze(1))


def test_multiplier_is_correctly_rounded_division():
    """inv = QMAX / absmax must be the IEEE quotient, not reciprocal(absmax) * QMAX (they differ
    for some absmax; the kernels use div_rn)."""
    g = torch.Generator().manual_seed(9)
    absmax = torch.rand(20000, generator=g) * 100 + 1e-3
    x = torch.stack([absmax, -absmax / 2], 1)  # halving is exact: x * inv sits at the tie 63.5
    ref = (torch.tensor(127.0, dtype=torch.float64) / absmax.double()).float()
    q, s = quantize_per_token(x, "int8")
    assert torch.equal(s, (absmax.double() / 127.0).float())
    # -absmax/2 * inv lands on (or one ulp beside) 63.5, so an inexact inv flips the rounding
    assert torch.equal(q[:, 1], torch.round(x[:, 1] * ref).clamp(-127, 127).to(torch.int8))


@pytest.mark.parametrize("qd", ["int8", "fp8"])
def test_all_zero_rows(qd):
    x = torch.zeros(3, 40)
    x[1] = torch.linspace(-1, 1, 40)
    q, s = quantize_per_token(x, qd)
    assert not bool(q[0].float().any()) and not bool(q[2].float().any())
    assert bool(torch.isfinite(s).all()) and bool((s > 0).all())
    assert s[0] == ABSMAX_FLOOR / qmax(qd)
    assert bool(torch.isfinite(dequant_weight(q, s)).all())


@pytest.mark.parametrize("qd, rel", [("int8", 0.5 / 127 + 1e-6), ("fp8", 2.0 ** -4 + 1e-6)])
@pytest.mark.parametrize("absmax", [1e-6, 1e-20, 1.0, 1e20])
def test_tiny_and_huge_rows_dequantize(qd, rel, absmax):
    """The reference implementation lost rows with absmax < 1/512; here every scale works."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 128, generator=g)
    x = x / x.abs().amax(1, keepdim=True) * absmax
    q, s = quantize_per_token(x, qd)
    back = dequant_weight(q, s)
    # int8: half a step of absmax/127; fp8: half an ulp of e4m3 (3 mantissa bits) relative to each value,
    # bounded here by absmax * 2^-4
    err = (back - x).abs() / absmax
    assert float(err.max()) <= rel
    assert bool(torch.isfinite(s).all())
    assert torch.allclose(s, x.abs().amax(1) / qmax(qd), rtol=1e-6)


def test_huge_values_near_float32_max():
    x = torch.tensor([[3.0e38, -1.5e38, 1.0, 0.0]])
    for qd in ("int8", "fp8"):
        q, s = quantize_per_token(x, qd)
        assert bool(torch.isfinite(q.float()).all()) and bool(torch.isfinite(s).all())
        back = dequant_weight(q, s)
        assert float(back[0, 0]) == pytest.approx(3.0e38, rel=1e-6)


def test_weight_and_token_quant_are_the_same_per_row_rule():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(12, 64, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(quantize_weight(w), quantize_per_token(w)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), cols=st.integers(1, 50),
       logscale=st.floats(-30, 30), qd=st.sampled_from(["int8", "fp8"]))
def test_quantize_properties(seed, rows, cols, logscale, qd):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * (10.0 ** logscale)
    q, s = quantize_rows(x, qd)
    assert q.shape == x.shape and q.dtype == torch_qdtype(qd) and s.shape == (rows,)
    assert bool(torch.isfinite(q.float()).all()) and bool((q.float().abs() <= qmax(qd)).all())
    # signs are kept (no value flips sign)
    assert not bool(((q.float() * x) < 0).any())


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_token(torch.zeros(4))
    with pytest.raises(ValueError, match="floating-point"):
        quantize_per_token(torch.zeros(2, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="unknown quantized dtype 'int4'"):
        quantize_per_token(torch.zeros(2, 4), "int4")


@pytest.mark.parametrize("name, norm", [("int8", "int8"), ("INT8", "int8"), ("fp8", "fp8"),
                                        ("fp8e4m3", "fp8"), ("FP8_E4M3", "fp8"), ("e4m3", "fp8")])
def test_parse_qdtype(name, norm):
    assert parse_qdtype(name) == norm


def test_parse_qdtype_rejects():
    for bad in ("fp16", "e5m2", "", "int"):
        with pytest.raises(ValueError, match="accepted: int8, fp8"):
            parse_qdtype(bad)


# --- dequant ---------------------------------------------------------------------------------
@pytest.mark.parametrize("acc_dtype", [torch.int32, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dequant_math(acc_dtype, with_bias, out_dtype):
    g = torch.Generator().manual_seed(5)
    M, N = 5, 7
    acc = torch.randint(-100000, 100000, (M, N), generator=g).to(acc_dtype)
    sa = torch.rand(M + 3, generator=g) + 0.01  # padded rows beyond M are ignored
    sb = torch.rand(N, generator=g) + 0.01
    bias = torch.randn(N, generator=g).to(torch.bfloat16) if with_bias else None
    y = dequant(acc, sa, sb, bias, out_dtype)
    assert y.dtype == out_dtype and y.shape == (M, N)
    ref = acc.float() * sa[:M, None] * sb[None, :]  # float32, this order
    if with_bias:
        ref = ref + bias.float()[None, :]
    assert torch.equal(y, ref.to(out_dtype))  # exactly one rounding to the output dtype


def test_dequant_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        dequant(torch.zeros(4, dtype=torch.int32), torch.ones(4), torch.ones(1))
    with pytest.raises(ValueError, match="do not fit"):
        dequant(torch.zeros(4, 3, dtype=torch.int32), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="do not fit"):
        dequant(torch.zeros(4, 3, dtype=torch.int32), torch.ones(4), torch.ones(4))


def test_quant_gemm_dequant_round_trip_int8():
    """W8A8 end to end in the reference math approximates the float product."""
    g = torch.Generator().manual_seed(6)
    x, w = torch.randn(8, 256, generator=g), torch.randn(32, 256, generator=g)
    qx, sx = quantize_per_token(x)
    qw, sw = quantize_weight(w)
    acc = qx.to(torch.int32) @ qw.to(torch.int32).T
    y = dequant(acc, sx, sw, None, torch.float32)
    ref = x @ w.T
    assert float((y - ref).abs().max()) < 0.02 * float(ref.abs().max())
