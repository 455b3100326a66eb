"""Comma-separated option values ('int8,fp8', '64,128,256'): one parser for every command and the
pipeline, so each list option accepts the same spelling and fails with the same clear message."""

from __future__ import annotations

from collections.abc import Iterable


def split_list(values: "str | Iterable[str]", what: str) -> list[str]:
    """'a, b,,c' (or an iterable of such strings) -> ['a', 'b', 'c']; empty -> ValueError."""
    texts = [values] if isinstance(values, str) else list(values)
    items = [v.strip() for t in texts for v in str(t).split(",") if v.strip()]
    if not items:
        raise ValueError(f"give at least one {what} (comma-separated)")
    return items


def parse_int_list(values: "str | Iterable", what: str) -> tuple[int, ...]:
    """'512,1024' or an iterable -> positive ints, order kept, duplicates dropped."""
    items = split_list(values, what) if isinstance(values, str) else [str(v).strip() for v in values]
    out: list[int] = []
    for v in items:
        if v == "":
            continue
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be positive integers, got {v!r}") from None
        if n < 1:
            raise ValueError(f"{what} must be positive integers, got {n}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"{what}: give at least one value")
    return tuple(out)
