"""PNG plots for the report: speedup vs M per pattern, with each pattern's ideal L/(L-2) as a dashed
line of the same colour. Drawn on matplotlib's Agg canvas directly (no pyplot, no global backend
switch), so it works on headless machines and inside tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .analysis import CrossTable, SpeedupTable
from .load import DENSE, ideal_speedup, role_label

REFERENCE_NOTE = "CPU reference numbers - not GPU performance"
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def file_name(*parts: str) -> str:
    """A safe PNG file name from its parts ('prefill', 'qwen2.5-7b', ...)."""
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", str(p)).strip("-") for p in parts if str(p)) + ".png"


def _axes_grid(fig: Figure, n: int):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig.set_size_inches(6.4 * cols if n > 1 else 7.0, 4.4 * rows)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _style_axes(ax, ms: Sequence[int], title: str) -> None:
    ax.set_xscale("log", base=2)
    if ms:
        ax.set_xticks(sorted(set(ms)))
        ax.set_xticklabels([str(m) for m in sorted(set(ms))], rotation=45 if len(set(ms)) > 5 else 0)
        ax.minorticks_off()
    ax.axhline(1.0, color="0.5", linewidth=0.8)
    ax.set_xlabel("M")
    ax.set_ylabel("speedup vs dense")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)


def _draw_ideals(ax, roles: Sequence[str], colors: dict[str, str]) -> None:
    for role in roles:
        ideal = ideal_speedup(role)
        if ideal:
            ax.axhline(ideal, color=colors[role], linestyle=":", linewidth=1.0,
                       label=f"ideal {role_label(role).split(' ')[0]} = {ideal:.2f}x")


def speedup_plot(table: SpeedupTable, title: str, path: Path) -> Path:
    """Speedup vs M, one line per pattern (one panel per extra key, e.g. per layer, when rows have one)."""
    fig = Figure()
    FigureCanvasAgg(fig)
    panels: dict[tuple, list] = {}
    for row in table.rows:
        panels.setdefault(row.extras, []).append(row)
    keys = list(panels)
    axes = _axes_grid(fig, len(keys))
    palette = [f"C{i}" for i in range(10)]
    colors = {r: palette[i % 10] for i, r in enumerate(table.roles)}
    for ax, key in zip(axes, keys):
        rows = panels[key]
        for i, role in enumerate(table.roles):
            pts = [(r.M, r.speedups[role]) for r in rows if role in r.speedups]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=_MARKERS[i % len(_MARKERS)],
                        color=colors[role], label=role_label(role))
        _draw_ideals(ax, table.roles, colors)
        sub = ", ".join(f"{e}={v}" for e, v in zip(table.extras, key))
        _style_axes(ax, [r.M for r in rows], sub or f"metric: {table.metric}")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title + (f"\n{REFERENCE_NOTE}" if table.reference else ""), fontsize=10,
                 color="darkred" if table.reference else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=90)
    return path


def cross_plot(ct: CrossTable, labels: dict[str, str], references: set[str], title: str, path: Path) -> Path:
    """Speedup vs M per pattern (colour) and machine (line style); for tables without extra keys."""
    if ct.extras:
        raise ValueError("cross-machine plots are drawn for tables keyed by M only")
    fig = Figure()
    FigureCanvasAgg(fig)
    (ax,) = _axes_grid(fig, 1)
    roles = [r for r in ct.roles if r != DENSE]
    palette = [f"C{i}" for i in range(10)]
    colors = {r: palette[i % 10] for i, r in enumerate(roles)}
    ms = sorted({k[0] for k in ct.cells})
    for j, mach in enumerate(ct.machines):
        for role in roles:
            pts = [(k[0], ct.cells[k][mach][1]) for k in sorted(ct.cells)
                   if k[-1] == role and mach in ct.cells[k] and ct.cells[k][mach][1] is not None]
            if pts:
                name = labels.get(mach, mach) + (" [CPU ref]" if mach in references else "")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[role],
                        linestyle=_LINESTYLES[j % len(_LINESTYLES)], marker=_MARKERS[j % len(_MARKERS)],
                        label=f"{name} {role_label(role)}")
    _draw_ideals(ax, roles, colors)
    _style_axes(ax, ms, f"metric: {ct.metric}")
    ax.legend(fontsize=7, loc="best")
    refs = [labels.get(m, m) for m in ct.machines if m in references]
    fig.suptitle(title + (f"\n{REFERENCE_NOTE} for {', '.join(refs)}" if refs else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=90)
    return path
