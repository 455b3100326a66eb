"""Reference (pure torch) prune / slide / lift for (L-2):L patterns.

Layout of one group g of L = 2N input columns [gL, gL+L):
    window w in 0..N-2 reads input columns gL+2w .. gL+2w+3 (consecutive windows overlap by 2),
    and writes slid columns g*4(N-1) + 4w + lane, lane in 0..3.
``slide`` moves every non-zero weight into exactly one window (greedy, windows and lanes in order,
at most 2 per window), so each 4-column quartet of the slid row is 2:4-valid. ``lift`` gathers the
activation column that each slid column reads, so ``lift(X) @ slide(W).T == X @ W.T``.

Works on any device and dtype (float, integer, float8); float8 tensors are handled through their
byte view because several CPU ops do not exist for them.
"""

from __future__ import annotations

import torch

from .pattern import Pattern

_FP8 = tuple(
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, n)
)


def _is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in _FP8


def _nonzero_mask(W: torch.Tensor) -> torch.Tensor:
    if _is_fp8(W):  # -0.0 (0x80) counts as zero
        return (W.view(torch.uint8) & 0x7F) != 0
    return W != 0


def _check_2d(W: torch.Tensor, name: str) -> None:
    if W.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, K], got shape {tuple(W.shape)}")
    if W.shape[1] == 0:
        raise ValueError(f"{name} has K = 0 columns")


def _pad_groups(W: torch.Tensor, L: int) -> torch.Tensor:
    K = W.shape[1]
    pad = (-K) % L
    if pad == 0:
        return W
    return torch.cat([W, W.new_zeros(W.shape[0], pad)], dim=1)


def slide_index(K: int, pattern: "Pattern | str", device=None) -> torch.Tensor:
    """For each of the ``pattern.slid_k(K)`` slid columns, the input column it reads, or -1 (zero)."""
    p = Pattern.parse(pattern)
    Kp = p.slid_k(K)
    j = torch.arange(Kp, device=device, dtype=torch.int64)
    g, r = j // p.group_out, j % p.group_out
    src = g * p.window + 2 * (r // 4) + r % 4
    valid = (j < p.groups(K) * p.group_out) & (src < K)
    return torch.where(valid, src, torch.full_like(src, -1))


def pattern_violations(W: torch.Tensor, pattern: "Pattern | str") -> torch.Tensor:
    """Bool [rows, groups]: True where an aligned group holds more than L-2 non-zeros."""
    p = Pattern.parse(pattern)
    _check_2d(W, "weight")
    nz = _pad_groups(_nonzero_mask(W), p.window).view(W.shape[0], -1, p.window)
    return nz.sum(-1) > p.nonzeros


def check_pattern(W: torch.Tensor, pattern: "Pattern | str", name: str = "weight") -> None:
    """Raise ValueError naming the first row and group of ``W`` that violates ``pattern``."""
    p = Pattern.parse(pattern)
    bad = pattern_violations(W, p)
    if bool(bad.any()):
        r, g = (int(v) for v in bad.nonzero()[0])
        lo, hi = g * p.window, min((g + 1) * p.window, W.shape[1]) - 1
        count = int(_nonzero_mask(W[r, lo:hi + 1]).sum())
        raise ValueError(
            f"{name} violates pattern {p}: row {r}, group {g} (columns {lo}..{hi}) has {count} "
            f"non-zeros, at most {p.nonzeros} allowed; prune it first "
            f"({int(bad.sum())} offending groups in total)"
        )


def is_2to4(W: torch.Tensor) -> bool:
    """True when every aligned quartet of columns holds at most 2 non-zeros (K % 4 == 0 required)."""
    _check_2d(W, "weight")
    if W.shape[1] % 4:
        return False
    return bool((_nonzero_mask(W).view(W.shape[0], -1, 4).sum(-1) <= 2).all())


def _magnitude_bits(W: torch.Tensor) -> torch.Tensor:
    """Non-negative integers ordered like |w| (sign-magnitude bit patterns; |w| for integer dtypes),
    int32 where key * L still fits (8/16-bit dtypes), else int64."""
    if _is_fp8(W):
        return W.view(torch.uint8).to(torch.int32) & 0x7F
    if W.dtype in (torch.bfloat16, torch.float16):
        return W.view(torch.int16).to(torch.int32) & 0x7FFF
    if W.dtype.is_floating_point:
        return (W.float().view(torch.int32) & 0x7FFFFFFF).to(torch.int64)
    return W.to(torch.int64).abs() if W.element_size() > 2 else W.to(torch.int32).abs()


def prune(W: torch.Tensor, pattern: "Pattern | str", mode: str = "magnitude", seed: int = 0) -> torch.Tensor:
    """Zero at least 2 weights in every aligned group of L along K (dim 1); same shape and dtype.

    ``magnitude`` zeroes the 2 smallest |w| of each group, ``random`` 2 seeded random positions.
    Equal scores (common among quantized weights) go to the lower column first, on every device.
    In a ragged last group the padding columns count as zeros (they read zero activations), so only
    real columns beyond L-2 are pruned there; the padding never appears in the result. Zeros in the
    result are +0 (a negative zero of W becomes +0).
    """
    p = Pattern.parse(pattern)
    _check_2d(W, "weight")
    if mode not in ("magnitude", "random"):
        raise ValueError(f"prune mode must be 'magnitude' or 'random', got {mode!r}")
    N, K = W.shape
    L = p.window
    if mode == "magnitude":
        score = _magnitude_bits(W)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        score = _magnitude_bits(torch.rand((N, K), generator=gen).to(W.device))
    Kpad = p.groups(K) * L
    if Kpad != K:  # padding scores lowest, so it is "pruned" first
        score = torch.cat([score, score.new_full((N, Kpad - K), -1)], dim=1)
    # topk breaks ties differently on CPU and GPU: make every key of a group unique, (score, column)
    key = score.view(N, -1, L) * L + torch.arange(L, device=W.device, dtype=score.dtype)
    idx = key.topk(p.zeros, dim=-1, largest=False).indices
    mask = torch.zeros(N, Kpad // L, L, dtype=torch.bool, device=W.device)
    mask.scatter_(-1, idx, True)
    mask = mask.view(N, Kpad)[:, :K]
    # every zero comes out as +0: a kept -0 is a zero to the pattern, so slide drops it and unslide
    # returns +0; canonical zeros keep prune -> slide -> unslide bit-exact
    if _is_fp8(W):
        u = W.view(torch.uint8)
        return u.masked_fill(mask | ((u & 0x7F) == 0), 0).view(W.dtype)
    return W.masked_fill(mask | (W == 0), 0)


def slide(W: torch.Tensor, pattern: "Pattern | str") -> torch.Tensor:
    """[N, K] pruned weight -> [N, pattern.slid_k(K)] 2:4-valid slid weight (lossless).

    Raises ValueError naming the first offending row and group when W violates the pattern;
    never drops a value.
    """
    p = Pattern.parse(pattern)
    _check_2d(W, "weight")
    check_pattern(W, p)
    N, K = W.shape
    L, nw = p.window, p.windows_per_group
    fp8_dtype = W.dtype if _is_fp8(W) else None
    Wv = W.view(torch.uint8) if fp8_dtype is not None else W
    nz = _pad_groups(_nonzero_mask(W), L).view(-1, L)
    vals = _pad_groups(Wv, L).view(-1, L)
    R = vals.shape[0]
    placed = torch.zeros_like(nz)
    out = vals.new_zeros(R, nw, 4)
    for w in range(nw):
        count = torch.zeros(R, dtype=torch.int8, device=W.device)
        for lane in range(4):
            c = 2 * w + lane
            take = nz[:, c] & ~placed[:, c] & (count < 2)
            out[:, w, lane] = torch.where(take, vals[:, c], out.new_zeros(()))
            placed[:, c] |= take
            count += take.to(torch.int8)
    lost = nz & ~placed
    if bool(lost.any()):  # cannot happen for a valid pattern; guards the conservation invariant
        row = int(lost.any(-1).nonzero()[0])
        raise AssertionError(f"slide lost a non-zero in row {row // p.groups(K)}, group {row % p.groups(K)}")
    out = out.view(N, -1)
    Kp = p.slid_k(K)
    if out.shape[1] != Kp:
        out = torch.cat([out, out.new_zeros(N, Kp - out.shape[1])], dim=1)
    return out.view(fp8_dtype) if fp8_dtype is not None else out


def lift(X: torch.Tensor, pattern: "Pattern | str") -> torch.Tensor:
    """[M, K] activation -> [M, pattern.slid_k(K)] with the columns each slid weight column reads."""
    p = Pattern.parse(pattern)
    _check_2d(X, "activation")
    K = X.shape[1]
    idx = slide_index(K, p, device=X.device)
    Xv = X.view(torch.uint8) if _is_fp8(X) else X
    Xz = torch.cat([Xv, Xv.new_zeros(Xv.shape[0], 1)], dim=1)  # column K reads as zero
    out = Xz.index_select(1, torch.where(idx < 0, torch.full_like(idx, K), idx))
    return out.view(X.dtype) if _is_fp8(X) else out


def unslide(W_slid: torch.Tensor, pattern: "Pattern | str", K: int) -> torch.Tensor:
    """Inverse of :func:`slide`: [N, slid_k(K)] -> the pruned [N, K] weight (for checks)."""
    p = Pattern.parse(pattern)
    _check_2d(W_slid, "slid weight")
    if W_slid.shape[1] != p.slid_k(K):
        raise ValueError(
            f"slid weight has {W_slid.shape[1]} columns, pattern {p} with K={K} needs {p.slid_k(K)}"
        )
    idx = slide_index(K, p, device=W_slid.device)
    keep = idx >= 0
    acc_dtype = torch.int32 if not W_slid.dtype.is_floating_point else torch.float32
    src = W_slid.to(acc_dtype) if not _is_fp8(W_slid) else W_slid.float()
    out = torch.zeros(W_slid.shape[0], K, dtype=src.dtype, device=W_slid.device)
    out.index_add_(1, idx[keep], src[:, keep])  # each input column has at most one non-zero slot
    return out.to(W_slid.dtype)
