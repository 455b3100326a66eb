"""Known issues the report detects by itself, so a reader sees them without digging through logs:

* the reference (CPU) backend stood in for cuBLASLt/cuSPARSELt (its numbers are not GPU numbers),
* a ptxas override (TRITON_PTXAS_PATH or similar) recorded in a status file or seen in a log,
* other known issues a pipeline run recorded in its status file,
* rows measured from a dirty working tree (commit ending in '+dirty'),
* mixed library versions or commits among one machine's rows in one tree,
* a measurement recorded twice (the newest is used), a speedup above the pattern's ideal,
* a pipeline run that did not finish (tasks PENDING/RUNNING/INTERRUPTED or no 'finished' time).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .analysis import Machine, SpeedupTable
from .load import Tree, ideal_speedup, role_label

ABOVE_IDEAL_MARGIN = 1.05  # a measured speedup this much above L/(L-2) is worth a second look


@dataclass
class Issue:
    title: str
    lines: list[str] = field(default_factory=list)   # Markdown, one bullet or paragraph each
    severity: str = "info"                           # 'warning' (shown at the top too) | 'info'
    machines: list[str] = field(default_factory=list)


def _issue_text(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        head = item.get("kind") or item.get("title") or item.get("name") or item.get("id") or ""
        body = item.get("detail") or item.get("message") or item.get("description") or ""
        extra = {k: v for k, v in item.items()
                 if k not in ("kind", "title", "name", "id", "message", "detail", "description")}
        text = ": ".join(str(x) for x in (head, body) if x)
        if extra:
            text += (" " if text else "") + "(" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")"
        return text or json.dumps(item, sort_keys=True)
    return json.dumps(item, sort_keys=True, default=str)


def _label(machs: dict[str, Machine], key: str) -> str:
    m = machs.get(key)
    return m.label if m else key


def _reference(trees: Sequence[Tree], machs: dict[str, Machine]) -> Issue | None:
    refs = [m for m in machs.values() if m.reference]
    if not refs:
        return None
    impls = sorted({x.impl for t in trees for x in t.measurements if x.machine in {m.key for m in refs} and x.impl})
    lines = [f"Machine(s) {', '.join(m.label for m in refs)} ran the **reference backend** (plain torch on the "
             "CPU) instead of cuBLASLt/cuSPARSELt" + (f" (impl: {', '.join(impls)})" if impls else "") + ".",
             "Their numbers are **CPU reference numbers, not GPU performance**: they show that the pipeline "
             "ran end to end and say nothing about sparse tensor core speedups."]
    return Issue("Reference (CPU) backend used instead of the GPU libraries", lines, "warning",
                 [m.key for m in refs])


def _ptxas(trees: Sequence[Tree], machs: dict[str, Machine]) -> list[Issue]:
    by_machine: dict[str, list[str]] = {}
    for t in trees:
        for r in t.runs:
            for item in r.data.get("known_issues") or []:
                text = _issue_text(item)
                if "ptxas" in text.lower():
                    by_machine.setdefault(r.machine, []).append(f"status `{r.path.name}`: {text}")
        run_of_log = {r.path.name.replace("_status.json", ".log"): r.machine for r in t.runs}
        for hit in t.ptxas_hits:
            key = run_of_log.get(hit.path.name, "unknown")
            by_machine.setdefault(key, []).append(f"log `{hit.path.name}:{hit.line}`: `{hit.text}`")
    out = []
    for key, evidence in by_machine.items():
        versions = sorted({str(x.row["v_triton"]) for t in trees for x in t.measurements
                           if x.machine == key and "v_triton" in x.row})
        lines = ["Triton compiled its kernels with a ptxas other than the one it bundles (e.g. "
                 "`TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas`): needed when the bundled ptxas does not know "
                 "the GPU (sm_121a on GB10 with Triton 3.5). Kernel timings depend on that ptxas version."
                 + (f" Triton in the rows: {', '.join(versions)}." if versions else "")]
        shown = evidence[:5] + ([f"... and {len(evidence) - 5} more line(s)"] if len(evidence) > 5 else [])
        lines += [f"- {e}" for e in shown]
        out.append(Issue(f"ptxas override on {_label(machs, key)}", lines, "info", [key]))
    return out


def _status_items(trees: Sequence[Tree], machs: dict[str, Machine]) -> list[Issue]:
    out = []
    for t in trees:
        for r in t.runs:
            # the reference backend and ptxas have their own entries above
            items = [_issue_text(i) for i in (r.data.get("known_issues") or [])
                     if not (isinstance(i, dict) and i.get("kind") == "reference-backend")]
            items = [i for i in items if "ptxas" not in i.lower()]
            if items:
                out.append(Issue(f"Recorded by the pipeline on {_label(machs, r.machine)} (`{r.path.name}`)",
                                 [f"- {i}" for i in items], "info", [r.machine]))
    return out


def _dirty(trees: Sequence[Tree], machs: dict[str, Machine]) -> list[Issue]:
    out = []
    for key in machs:
        rows = [x for t in trees for x in t.measurements if x.machine == key]
        dirty = Counter(str(x.row.get("commit")) for x in rows if str(x.row.get("commit", "")).endswith("+dirty"))
        if dirty:
            n = sum(dirty.values())
            out.append(Issue(f"Uncommitted source on {_label(machs, key)}", [
                f"{n} of {len(rows)} result row(s) were measured from a working tree with uncommitted changes "
                f"(commit {', '.join(f'`{c}`' for c in sorted(dirty))}): the exact code behind them cannot be "
                "recovered from the commit."], "info", [key]))
    return out


def _mixed(trees: Sequence[Tree], machs: dict[str, Machine], show: Callable[[Path], str]) -> list[Issue]:
    out = []
    for t in trees:
        for key in machs:
            rows = [x.row for x in t.measurements if x.machine == key]
            if not rows:
                continue
            cols = sorted({c for r in rows for c in r if c.startswith("v_")} | {"commit"})
            lines = []
            for c in cols:
                vals = Counter(str(r[c]) for r in rows if c in r)
                if len(vals) > 1:
                    lines.append(f"- `{c}`: " + ", ".join(f"{v} ({n} rows)" for v, n in sorted(vals.items())))
            if lines:
                out.append(Issue(f"Mixed versions among {_label(machs, key)}'s rows in `{show(t.root)}`",
                                 ["Rows of one machine were measured with different library versions or "
                                  "commits; compare them with care (rerun the older cases to make the tree "
                                  "uniform)."] + lines, "info", [key]))
    return out


def _tables(tables: Sequence[SpeedupTable], machs: dict[str, Machine]) -> list[Issue]:
    out = []
    dups = [t for t in tables if t.duplicates]
    if dups:
        out.append(Issue("Measurements recorded more than once", [
            f"- {_label(machs, t.machine)} {t.stage} {t.model} {t.dtype.upper()}: {t.duplicates} duplicate "
            "row(s); the newest (time_utc) is used" for t in dups], "info", sorted({t.machine for t in dups})))
    above = []
    for t in tables:
        for row in t.rows:
            for role, s in row.speedups.items():
                ideal = ideal_speedup(role)
                if ideal and s > ideal * ABOVE_IDEAL_MARGIN:
                    above.append((t, row, role, s, ideal))
    if above:
        lines = ["A speedup well above the ideal L/(L-2) cannot come from the sparse GEMM alone: suspect timing "
                 "noise, a mismatched baseline, or (on the CPU reference backend) anything at all."]
        for t, row, role, s, ideal in above[:10]:
            lines.append(f"- {_label(machs, t.machine)} {t.stage} {t.model} {t.dtype.upper()} M={row.M} "
                         f"{role_label(role)}: {s:.2f}x vs ideal {ideal:.2f}x")
        if len(above) > 10:
            lines.append(f"- ... and {len(above) - 10} more")
        out.append(Issue("Speedups above the ideal", lines, "info", sorted({a[0].machine for a in above})))
    return out


def _unfinished(trees: Sequence[Tree], machs: dict[str, Machine]) -> list[Issue]:
    out = []
    for t in trees:
        for r in t.runs:
            tasks = r.data.get("tasks") or {}
            open_tasks = [f"{n} {v.get('name', '')} {v.get('status')}".replace("  ", " ") for n, v in tasks.items()
                          if isinstance(v, dict) and v.get("status") in ("PENDING", "RUNNING", "INTERRUPTED")]
            if open_tasks or not r.data.get("finished"):
                what = ", ".join(open_tasks) if open_tasks else "no 'finished' time"
                out.append(Issue(f"Pipeline run `{r.path.name}` did not finish", [
                    f"{what}: the run was interrupted or is still going; its counts are partial (rerun the "
                    "pipeline to resume)."], "info", [r.machine]))
    return out


def detect(trees: Sequence[Tree], machs: dict[str, Machine], tables: Sequence[SpeedupTable],
           show: Callable[[Path], str] = str) -> list[Issue]:
    """Every issue found, the reference-backend warning first; ``show`` turns a path into how the report
    prints it (relative to the report)."""
    ref = _reference(trees, machs)
    return ([ref] if ref else []) + _ptxas(trees, machs) + _status_items(trees, machs) + _dirty(trees, machs) \
        + _mixed(trees, machs, show) + _tables(tables, machs) + _unfinished(trees, machs)
