"""``slidesparse report``: one Markdown report (plus PNG plots) from one or several result trees.

    build_report(["results"], "results/REPORT.md")          # one machine
    build_report(["results", "gb10_results"], "REPORT.md")   # several machines: adds a cross-GPU table

Reading (``load``) is tolerant: unreadable or partial files become a "Problems reading results"
section. The numbers (``analysis``), detected issues (``known_issues``), Markdown (``markdown``) and
plots (``plots``) are separate steps. The report and its ``plots/`` folder are written to temporary
names first and moved into place at the end, so a failure leaves the previous report untouched.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .analysis import cross_tables, machines, speedup_tables, stage_results
from .known_issues import detect
from .load import load_trees
from .markdown import Context, render
from .plots import cross_plot, file_name, speedup_plot

PLOTS_DIR = "plots"


@dataclass
class ReportOutput:
    report: Path
    plots_dir: Path
    plots: list[Path]
    problems: int
    machines: list[str]
    reference: bool


def _relative(p: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(p).absolute(), base.absolute())).as_posix()
    except ValueError:  # another drive (Windows): no relative form
        return Path(p).as_posix()


def _check_plots_dir(path: Path) -> None:
    """The old plots folder is replaced as a whole; refuse when it holds anything we did not write."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; the report's plots go there")
    if path.is_dir():
        foreign = [p.name for p in path.iterdir() if not (p.is_file() and p.suffix == ".png")]
        if foreign:
            raise FileExistsError(f"{path} holds files other than PNG plots ({', '.join(sorted(foreign)[:5])}); "
                                  "move them away or write the report elsewhere with --out")


def build_report(results_dirs: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                 now: _dt.datetime | None = None) -> ReportOutput:
    """Read the trees, write ``out`` and ``plots/`` next to it; return what was written."""
    trees = load_trees([Path(d) for d in results_dirs])
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / 'REPORT.md'}")
    if out.suffix.lower() != ".md":
        raise ValueError(f"--out {out} should be a Markdown file name ending in .md")
    out_dir = out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = out_dir / PLOTS_DIR
    _check_plots_dir(plots_dir)

    machs = machines(trees)
    stages = stage_results(trees, machs)
    tables, notes = speedup_tables(trees, machs)
    crosses = cross_tables(tables, machs)
    show = lambda p: _relative(p, out_dir)  # noqa: E731
    issues = detect(trees, machs, tables, show)
    problems = [p for t in trees for p in t.problems]
    ctx = Context(trees, machs, stages, tables, crosses, issues, problems, list(notes), show,
                  now=now or _dt.datetime.now(_dt.timezone.utc))

    tmp_plots = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{PLOTS_DIR}."))
    tmp_report = None
    try:
        written = []
        for t in tables:
            if not any(r.speedups for r in t.rows):
                continue
            m = machs[t.machine]
            name = file_name(t.stage, t.model, t.dtype, m.key)
            title = f"{m.label}: {t.stage} {t.model} {t.dtype.upper()} speedup vs dense"
            written.append(speedup_plot(t, title, tmp_plots / name))
            ctx.table_plots[id(t)] = f"{PLOTS_DIR}/{name}"
        refs = {k for k, m in machs.items() if m.reference}
        for ct in crosses:
            if ct.extras or not any(s is not None for c in ct.cells.values() for _, s in c.values()):
                continue
            name = file_name("cross", ct.stage, ct.model, ct.dtype)
            labels = {k: machs[k].label for k in ct.machines}
            written.append(cross_plot(ct, labels, refs, f"{ct.stage} {ct.model} {ct.dtype.upper()}: speedup "
                                                        "vs dense per machine", tmp_plots / name))
            ctx.cross_plots[id(ct)] = f"{PLOTS_DIR}/{name}"
        text = render(ctx)
        fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".tmp")
        tmp_report = Path(tmp_name)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # swap the plots folder, then the report
        old = None
        if plots_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{PLOTS_DIR}.old."))
            os.rmdir(old)
            os.replace(plots_dir, old)
        os.replace(tmp_plots, plots_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp_report, out)
        tmp_report = None
    finally:
        if tmp_plots.exists():
            shutil.rmtree(tmp_plots, ignore_errors=True)
        if tmp_report is not None and tmp_report.exists():
            tmp_report.unlink()
    return ReportOutput(out, plots_dir, [plots_dir / p.name for p in written], len(problems), list(machs),
                        any(m.reference for m in machs.values()))


__all__ = ["build_report", "ReportOutput", "PLOTS_DIR"]
