"""List options for click commands: listopts' parsers, with errors as click usage errors (exit 2)."""

from __future__ import annotations

import click

from ..listopts import parse_int_list, split_list


def csv_values(value, what: str) -> list[str]:
    try:
        return split_list(value, what)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def int_values(value, what: str) -> list[int]:
    try:
        return list(parse_int_list(value, what))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
