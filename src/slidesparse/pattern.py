"""The sparsity pattern value type: "at least 2 zeros in every aligned group of L weights along K".

Two spellings name the same pattern (Z = 2 zeros per window L):
  * the seed report's / result folders' ``2_L`` or ``2:L`` ("2 zeros per L"),
  * the paper's ``(L-2):L`` ("L-2 non-zeros per L"), e.g. ``6:8``.
For ``2:4`` both readings coincide, so every accepted string maps to exactly one pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ZEROS = 2  # the only zero count the sliding decomposition supports
MIN_WINDOW = 4
MAX_WINDOW = 64
K_ALIGN = 32  # cuSPARSELt/cuBLASLt want the 8-bit structured operand's K a multiple of 32

_ACCEPTED = (
    "accepted forms: '2_L' or '2:L' (2 zeros per L, the seed's labels) or '(L-2):L' "
    f"(non-zeros per L, the paper's), with L even and {MIN_WINDOW} <= L <= {MAX_WINDOW}; "
    "e.g. '2_8', '2:8', '6:8' (all the same pattern), '2:4' (native 2:4)"
)
_RE = re.compile(r"^\s*(\d+)\s*([:_])\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Pattern:
    """A (L-2):L pattern. Construct with :meth:`parse` or ``Pattern(window=L)``."""

    window: int

    def __post_init__(self) -> None:
        L = self.window
        if not isinstance(L, int) or isinstance(L, bool):
            raise ValueError(f"pattern window must be an int, got {L!r}; {_ACCEPTED}")
        if L % 2 or not MIN_WINDOW <= L <= MAX_WINDOW:
            raise ValueError(f"pattern window L={L} is not allowed; {_ACCEPTED}")

    @classmethod
    def parse(cls, text: "str | Pattern") -> "Pattern":
        if isinstance(text, Pattern):
            return text
        m = _RE.match(str(text))
        if not m:
            raise ValueError(f"cannot parse sparsity pattern {text!r}; {_ACCEPTED}")
        a, sep, L = int(m.group(1)), m.group(2), int(m.group(3))
        if L % 2 or not MIN_WINDOW <= L <= MAX_WINDOW:
            raise ValueError(f"cannot parse sparsity pattern {text!r} (window {L}); {_ACCEPTED}")
        if a == ZEROS or (sep == ":" and a == L - ZEROS):
            return cls(L)
        raise ValueError(f"cannot parse sparsity pattern {text!r}; {_ACCEPTED}")

    # --- derived quantities -------------------------------------------------------------
    @property
    def zeros(self) -> int:
        return ZEROS

    @property
    def nonzeros(self) -> int:
        return self.window - ZEROS

    @property
    def windows_per_group(self) -> int:
        """N-1 overlapping 4-wide windows (stride 2) cover one group of L = 2N columns."""
        return self.window // 2 - 1

    @property
    def group_out(self) -> int:
        """Slid columns produced per group of L input columns: 4(N-1) = 2(L-2)."""
        return 4 * self.windows_per_group

    @property
    def label(self) -> str:
        return f"{ZEROS}_{self.window}"

    @property
    def paper(self) -> str:
        return f"{self.nonzeros}:{self.window}"

    @property
    def is_native(self) -> bool:
        return self.window == 4

    @property
    def expansion(self) -> float:
        """K'/K before the final 32-alignment: 2(L-2)/L."""
        return 2 * (self.window - 2) / self.window

    @property
    def ideal_speedup(self) -> float:
        """Dense MACs over 2:4-sparse MACs on the slid K: L/(L-2) = N/(N-1)."""
        return self.window / (self.window - 2)

    def groups(self, K: int) -> int:
        return -(-K // self.window)

    def slid_k(self, K: int) -> int:
        """Columns of the slid weight / lifted activation for an input of K columns.

        Rule: K is padded with zeros to whole groups, ceil(K/L); each group yields 2(L-2) columns;
        the total is rounded up to a multiple of 32 (the 8-bit GEMM libraries' K alignment), the
        extra columns are zeros at the end of the row.
        """
        if K <= 0:
            raise ValueError(f"K must be positive, got {K}")
        raw = self.groups(K) * self.group_out
        return -(-raw // K_ALIGN) * K_ALIGN

    def __str__(self) -> str:
        return f"{self.paper} ({self.label})"


def parse_patterns(texts) -> list[Pattern]:
    """Parse a comma-separated string or an iterable of strings; order kept, duplicates dropped."""
    if isinstance(texts, str):
        texts = [t for t in texts.split(",") if t.strip()]
    out: list[Pattern] = []
    for t in texts:
        p = Pattern.parse(t)
        if p not in out:
            out.append(p)
    return out
