"""The ``slidesparse`` command line (click). Commands live in ``slidesparse.commands.*``;
they import heavy modules inside the command body so ``--help`` stays fast."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__

# module path, attribute: each a click.Command or click.Group
_COMMANDS = [
    ("slidesparse.commands.models", "models_command"),
    ("slidesparse.commands.convert", "convert_command"),
    ("slidesparse.commands.tune", "tune"),
    ("slidesparse.commands.bench", "bench"),
    ("slidesparse.commands.report", "report"),
    ("slidesparse.commands.pipeline", "pipeline"),
]


class _Group(click.Group):
    """Turns expected user errors (ValueError, FileNotFoundError, ...) into one clear line."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
                RuntimeError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slidesparse")
def main() -> None:
    """SlideSparse: run (2N-2):2N sparse weights (4:6, 6:8, 8:10, ...) on 2:4 sparse tensor cores.

    Typical flow: `models` (shapes) -> `convert` (checkpoint) -> `tune` -> `bench` -> `report`.
    On a machine without CUDA every command runs on the `reference` (plain torch) backend and
    says so.
    """


for _mod, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(_mod), _attr))
