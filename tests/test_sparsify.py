"""prune / slide / lift / unslide: property tests, an exhaustive check of the greedy slide, and the
worked 6:8 example of docs/algorithm.md."""

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slidesparse.pattern import Pattern
from slidesparse.sparsify import (
    check_pattern, is_2to4, lift, pattern_violations, prune, slide, slide_index, unslide,
)

FP8 = torch.float8_e4m3fn
DTYPES = [torch.int8, torch.int32, torch.float32, torch.bfloat16, FP8]
WINDOWS = [4, 6, 8, 10, 12, 14, 16]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_tensor(rows: int, cols: int, dtype: torch.dtype, seed: int, zero_frac: float = 0.3,
                zero_rows: bool = False) -> torch.Tensor:
    """Random values of ``dtype`` with natural zeros (and optionally whole zero rows)."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        t = torch.randint(-127, 128, (rows, cols), generator=g, dtype=torch.int8)
    elif dtype == torch.int32:
        t = torch.randint(-1000, 1001, (rows, cols), generator=g, dtype=torch.int32)
    else:
        t = (torch.randn(rows, cols, generator=g) * 4).to(dtype)
    keep = torch.rand(rows, cols, generator=g) >= zero_frac
    if zero_rows and rows > 1:
        keep[torch.randint(0, rows, (1,), generator=g)] = False
    if dtype == FP8:
        return t.view(torch.uint8).masked_fill(~keep, 0).view(FP8)
    return t.masked_fill(~keep, 0)


def nonzero(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == FP8:
        return (t.view(torch.uint8) & 0x7F) != 0
    return t != 0


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype == FP8:
        return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return a.dtype == b.dtype and torch.equal(a, b)


def group_nonzeros(t: torch.Tensor, L: int) -> torch.Tensor:
    """[rows, groups] count of non-zeros per aligned group (ragged last group zero-padded)."""
    nz = nonzero(t)
    pad = (-t.shape[1]) % L
    nz = torch.cat([nz, nz.new_zeros(t.shape[0], pad)], 1)
    return nz.view(t.shape[0], -1, L).sum(-1)


cases = st.fixed_dictionaries({
    "L": st.sampled_from(WINDOWS),
    "N": st.integers(1, 5),
    "K": st.integers(1, 70),
    "dtype": st.sampled_from(DTYPES),
    "seed": st.integers(0, 2**31 - 1),
    "zero_rows": st.booleans(),
})


# --- prune ---------------------------------------------------------------------------------
@SETTINGS
@given(c=cases, mode=st.sampled_from(["magnitude", "random"]))
def test_prune_meets_pattern_and_only_zeroes(c, mode):
    L = c["L"]
    W = make_tensor(c["N"], c["K"], c["dtype"], c["seed"], zero_rows=c["zero_rows"])
    P = prune(W, Pattern(L), mode=mode, seed=c["seed"])
    assert P.shape == W.shape and P.dtype == W.dtype
    assert int(group_nonzeros(P, L).max()) <= L - 2
    assert not bool(pattern_violations(P, Pattern(L)).any())
    kept = nonzero(P)
    # only zeroes: every surviving value is the original one, bit for bit
    assert same_bits(P[kept] if P.dtype != FP8 else P.view(torch.uint8)[kept].view(FP8),
                     W[kept] if W.dtype != FP8 else W.view(torch.uint8)[kept].view(FP8))
    # at most 2 entries per full group were changed
    changed = (nonzero(W) & ~kept).to(torch.int32)
    pad = (-c["K"]) % L
    changed = torch.cat([changed, changed.new_zeros(c["N"], pad)], 1).view(c["N"], -1, L).sum(-1)
    assert int(changed.max()) <= 2


@SETTINGS
@given(c=cases)
def test_prune_magnitude_drops_the_smallest(c):
    L = c["L"]
    W = make_tensor(c["N"], c["K"], c["dtype"], c["seed"], zero_frac=0.0)
    P = prune(W, Pattern(L))
    pad = (-c["K"]) % L
    mag = torch.cat([W.float().abs(), torch.full((c["N"], pad), -1.0)], 1).view(c["N"], -1, L)
    dropped = torch.cat([nonzero(W) & ~nonzero(P), torch.zeros(c["N"], pad, dtype=torch.bool)], 1)
    dropped = dropped.view(c["N"], -1, L)
    kept = torch.cat([nonzero(P), torch.zeros(c["N"], pad, dtype=torch.bool)], 1).view(c["N"], -1, L)
    max_dropped = torch.where(dropped, mag, torch.full_like(mag, -1.0)).amax(-1)
    min_kept = torch.where(kept, mag, torch.full_like(mag, float("inf"))).amin(-1)
    assert bool((max_dropped <= min_kept).all())


def test_prune_random_is_seeded_and_deterministic():
    W = make_tensor(16, 64, torch.float32, 3, zero_frac=0.0)
    a = prune(W, "6:8", mode="random", seed=7)
    b = prune(W, "6:8", mode="random", seed=7)
    c = prune(W, "6:8", mode="random", seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # random mode does not look at the values: the same seed gives the same mask for other values
    assert torch.equal(nonzero(prune(W * 3 + 1, "6:8", mode="random", seed=7)), nonzero(a))


def test_prune_keeps_zero_rows_and_bad_arguments():
    W = torch.zeros(3, 16)
    assert torch.equal(prune(W, "2:4"), W)
    with pytest.raises(ValueError, match="prune mode"):
        prune(W, "2:4", mode="largest")
    with pytest.raises(ValueError, match="2-D"):
        prune(torch.zeros(16), "2:4")
    with pytest.raises(ValueError, match="K = 0"):
        prune(torch.zeros(2, 0), "2:4")


def test_prune_ragged_group_counts_padding_as_zeros():
    # K=10 with L=8: the last group holds 2 real columns + 6 padding zeros, nothing to prune there
    W = torch.arange(1, 11, dtype=torch.float32).view(1, 10)
    P = prune(W, "6:8")
    assert torch.equal(P[0, 8:], W[0, 8:])
    assert int(nonzero(P[:, :8]).sum()) == 6


# --- slide / unslide / lift ----------------------------------------------------------------
@SETTINGS
@given(c=cases)
def test_slide_is_2to4_and_lossless(c):
    p = Pattern(c["L"])
    W = prune(make_tensor(c["N"], c["K"], c["dtype"], c["seed"], zero_rows=c["zero_rows"]), p)
    S = slide(W, p)
    assert S.shape == (c["N"], p.slid_k(c["K"])) and S.dtype == W.dtype
    assert is_2to4(S)
    assert int(nonzero(S).sum()) == int(nonzero(W).sum())  # each non-zero kept exactly once
    assert same_bits(unslide(S, p, c["K"]), W)
    # the tail beyond the last group is zero
    raw = p.groups(c["K"]) * p.group_out
    assert not bool(nonzero(S[:, raw:]).any())


@SETTINGS
@given(c=cases, M=st.integers(1, 4), xdtype=st.sampled_from([torch.int8, torch.int32]))
def test_lift_slide_identity_exact_for_integers(c, M, xdtype):
    p = Pattern(c["L"])
    wdtype = c["dtype"] if c["dtype"] in (torch.int8, torch.int32) else torch.int8
    W = prune(make_tensor(c["N"], c["K"], wdtype, c["seed"], zero_rows=c["zero_rows"]), p)
    X = make_tensor(M, c["K"], xdtype, c["seed"] + 1)
    lhs = lift(X, p).to(torch.int64) @ slide(W, p).to(torch.int64).T
    rhs = X.to(torch.int64) @ W.to(torch.int64).T
    assert torch.equal(lhs, rhs)


@SETTINGS
@given(c=cases, M=st.integers(1, 4))
def test_lift_slide_identity_floats(c, M):
    p = Pattern(c["L"])
    dtype = c["dtype"] if c["dtype"].is_floating_point else torch.float32
    W = prune(make_tensor(c["N"], c["K"], dtype, c["seed"]), p)
    X = make_tensor(M, c["K"], dtype, c["seed"] + 1, zero_frac=0.1)
    Xl, Ws = lift(X, p), slide(W, p)
    assert Xl.dtype == X.dtype and Xl.shape == (M, p.slid_k(c["K"]))
    lhs = Xl.double() @ Ws.double().T
    rhs = X.double() @ W.double().T
    # the same products in another order: equal up to float64 rounding
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-9)


def test_lift_of_2to4_is_padding_only():
    X = make_tensor(3, 40, torch.int8, 0)
    Xl = lift(X, "2:4")
    assert Xl.shape == (3, 64)
    assert torch.equal(Xl[:, :40], X) and not bool(Xl[:, 40:].any())


@pytest.mark.parametrize("L", [4, 6, 8, 10, 12, 14, 16])
def test_exhaustive_every_zero_pattern(L):
    """Every support of one group with >= 2 zeros: greedy places every non-zero, 2:4-valid."""
    masks = [m for m in itertools.product([0, 1], repeat=L) if m.count(0) >= 2]
    keep = torch.tensor(masks, dtype=torch.bool)
    values = torch.arange(1, L + 1, dtype=torch.int32).expand(len(masks), L)
    W = values.masked_fill(~keep, 0)
    # two groups per row (the second one reversed) so the group offset is exercised as well
    W = torch.cat([W, W.flip(0)], 1)
    p = Pattern(L)
    S = slide(W, p)
    assert is_2to4(S)
    assert torch.equal(unslide(S, p, 2 * L), W)
    assert torch.equal((S != 0).sum(1), (W != 0).sum(1))


def test_slide_rejects_violations_naming_row_and_group():
    W = torch.zeros(4, 24, dtype=torch.int8)
    W[2, 8:15] = 1  # row 2, group 1 of 6:8 holds 7 non-zeros
    with pytest.raises(ValueError, match=r"row 2, group 1 \(columns 8\.\.15\) has 7 non-zeros"):
        slide(W, "6:8")
    with pytest.raises(ValueError, match="row 2, group 1"):
        check_pattern(W, "6:8")
    W[2, 8] = 0
    assert slide(W, "6:8").shape == (4, 64)


def test_fp8_negative_zero_counts_as_zero():
    W = torch.tensor([[1.0, -0.0, 2.0, -0.0, 3.0, 4.0, 5.0, 6.0]]).to(FP8)
    check_pattern(W, "6:8")  # two -0.0 make the group valid
    S = slide(W, "6:8")
    assert int(nonzero(S).sum()) == 6


def test_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        slide(torch.zeros(2, 3, 8), "6:8")
    with pytest.raises(ValueError, match="2-D"):
        lift(torch.zeros(8), "6:8")
    with pytest.raises(ValueError, match="needs 32"):
        unslide(torch.zeros(2, 16), "6:8", 8)
    assert not is_2to4(torch.zeros(2, 6))


# --- the worked example of docs/algorithm.md / the reference brief §1.5 ---------------------
def test_worked_6_8_example():
    p = Pattern.parse("6:8")
    w = torch.tensor([[3, 0, -5, 7, 0, 2, -4, 9]], dtype=torch.int32)  # a0 0 a2 a3 0 a5 a6 a7
    S = slide(w, p)
    assert S.shape == (1, 32)  # 12 slid columns, rounded up to 32
    assert S[0, :12].tolist() == [3, 0, -5, 0, 0, 7, 0, 2, 0, 0, -4, 9]
    assert not bool(S[0, 12:].any())
    idx = slide_index(8, p)
    assert idx[:12].tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]
    assert bool((idx[12:] == -1).all())
    x = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.int32)
    xl = lift(x, p)
    assert xl[0, :12].tolist() == [1, 2, 3, 4, 3, 4, 5, 6, 5, 6, 7, 8]
    # a0x0 + a2x2 + a3x3 + a5x5 + a6x6 + a7x7 = 3 - 15 + 28 + 12 - 28 + 72 = 72
    assert int((xl.long() @ S.long().T).item()) == int((x.long() @ w.long().T).item()) == 72


def test_slide_index_ragged_k_reads_nothing_past_k():
    p = Pattern(10)
    for K in (1, 9, 11, 37):
        idx = slide_index(K, p)
        assert idx.shape == (p.slid_k(K),)
        assert int(idx.max()) < K
        # every real column is read by at least one slid column, and by at most two
        counts = torch.bincount(idx[idx >= 0], minlength=K)
        assert bool((counts >= 1).all()) and bool((counts <= 2).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, FP8])
def test_prune_makes_negative_zeros_positive_so_the_slide_roundtrip_is_bit_exact(dtype):
    """Group [+0, +0, -0, 5]: the two +0 (lower columns) are 'pruned', the kept -0 is a zero to the
    pattern; slide drops it and unslide returns +0, so prune must hand out +0 (found by hypothesis)."""
    W = torch.tensor([[0.0, 0.0, -0.0, 5.0, 1.0, -2.0, 3.0, -0.0]]).to(dtype)
    P = prune(W, Pattern(4))
    assert not torch.signbit(P.float()[P.float() == 0]).any()
    assert same_bits(unslide(slide(P, Pattern(4)), Pattern(4), 8), P)
