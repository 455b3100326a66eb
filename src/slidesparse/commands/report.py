"""``slidesparse report``: a Markdown report with PNG plots from one or several result trees."""

from __future__ import annotations

import os
from pathlib import Path

import click


def _shown(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


@click.command("report")
@click.argument("results_dirs", nargs=-1, metavar="[RESULTS_DIR]...", type=click.Path(path_type=Path))
@click.option("--results", "results_opts", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="A results root, same as RESULTS_DIR (repeatable; the Makefile's form).")
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Report file (Markdown). Plots go to a plots/ folder next to it. "
                   "[default: REPORT.md in the first RESULTS_DIR]")
def report(results_dirs: tuple[Path, ...], results_opts: tuple[Path, ...], out: Path | None) -> None:
    """Write a benchmark report (Markdown + PNG plots) from result trees.

    Each RESULTS_DIR is a results root as the benchmarks and the pipeline write it
    (<stage>/<hardware tag>/{cublaslt,cusparselt/2_L}/ and logs/). Give several, e.g. one copied
    from another machine, to merge them into one report with a cross-GPU comparison.
    Unreadable or partial files are listed in the report, not fatal. Default RESULTS_DIR: results.

    \b
    Examples:
      slidesparse report
      slidesparse report results gb10_results --out results/REPORT.md
    """
    from ..report import build_report  # noqa: PLC0415 - matplotlib stays out of --help

    dirs = list(results_dirs) + [d for d in results_opts if d not in results_dirs] or [Path("results")]
    out = out or dirs[0] / "REPORT.md"
    res = build_report(dirs, out)
    click.echo(f"report: {_shown(res.report)}")
    click.echo(f"plots:  {_shown(res.plots_dir)}/ ({len(res.plots)} PNG file{'s' if len(res.plots) != 1 else ''})")
    if res.problems:
        click.echo(f"note: {res.problems} problem(s) reading results; see 'Problems reading results' in the report",
                   err=True)
    if res.reference:
        click.echo("note: reference (CPU) backend results included: CPU reference numbers, not GPU performance",
                   err=True)
