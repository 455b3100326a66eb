"""The report's Markdown, section by section, in the seed report's order:

title + date · overview (hardware, tasks, test matrix) · one section per stage (per-model results,
failure details, error analysis, speedup vs dense with plots) · cross-GPU comparison · where results
live · known issues · problems reading results · summary.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .analysis import CrossTable, Machine, SpeedupTable, StageResult, error_groups, run_seconds
from .known_issues import Issue
from .load import (DENSE, STAGE_ORDER, Problem, Tree, backend_label, dtype_sort_key, ideal_speedup,
                   natural_key, norm_dtype, norm_role, role_label, role_sort_key)

STAGE_TITLES = {"prefill": "Prefill", "decode": "Decode", "kernel": "Kernel (GEMM)", "quant": "Quant kernels"}
TASK_ICONS = {"SUCCESS": "✅", "FAILED": "❌", "SKIPPED": "⏭️", "RUNNING": "🔄", "INTERRUPTED": "⏸️",
              "PENDING": "⏳"}
METRIC_NAMES = {"tokens_per_s": "tok/s"}
REFERENCE_LINE = "⚠️ **CPU reference numbers (reference backend), not GPU performance.**"


@dataclass
class Context:
    trees: Sequence[Tree]
    machines: dict[str, Machine]
    stages: list[StageResult]
    tables: list[SpeedupTable]
    crosses: list[CrossTable]
    issues: list[Issue]
    problems: list[Problem]
    notes: list[str]
    show: Callable[[Path], str]                    # a path as the report prints it (relative to it)
    table_plots: dict[int, str] = field(default_factory=dict)   # id(table) -> relative PNG link
    cross_plots: dict[int, str] = field(default_factory=dict)
    now: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))


# --- formatting ----------------------------------------------------------------------------------

def cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[int] = ()) -> list[str]:
    out = ["| " + " | ".join(cell(h) for h in headers) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def fmt_seconds(s: float | None) -> str:
    """Seed style for a model's stage time: '4192s (70min)'."""
    if s is None:
        return "-"
    return f"{s:.0f}s" if s < 60 else f"{s:.0f}s ({s / 60:.0f}min)"


def fmt_span(s: float | None) -> str:
    """A task's or run's time: '34.20 h', '12.5 min', '40 s'."""
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def fmt_rate(passed: int, total: int) -> str:
    return f"{100.0 * passed / total:.1f}% ({passed}/{total})" if total else "-"


def fmt_metric(col: str, v: float | None) -> str:
    if v is None:
        return "-"
    if col.endswith("_per_s") or col in ("throughput",):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:.4g}"


def metric_name(col: str) -> str:
    return METRIC_NAMES.get(col, col)


def fmt_ms(ms: Sequence[int]) -> str:
    return ", ".join(f"M={m}" for m in ms) if ms else "-"


def _mach_heading(ctx: Context, key: str, level: str = "####") -> list[str]:
    return [f"{level} {ctx.machines[key].label}", ""] if len(ctx.machines) > 1 else []


def _case_name(model: str, dtype: str) -> str:
    return f"{model}-{dtype}"


# --- sections ------------------------------------------------------------------------------------

def _title(ctx: Context) -> list[str]:
    labels = [m.label for m in ctx.machines.values()]
    dates = [str(r.data.get("started"))[:10] for m in ctx.machines.values() for r in m.runs if r.data.get("started")]
    dates += [x.time_utc[:10] for t in ctx.trees for x in t.measurements if x.time_utc]
    span = f"{min(dates)} to {max(dates)}" if dates and min(dates) != max(dates) else (dates[0] if dates else "-")
    out = [f"# SlideSparse Benchmark Report: {', '.join(labels)}", "",
           f"**Date**: {span} (measured); report generated {ctx.now:%Y-%m-%d %H:%M} UTC  "]
    for m in ctx.machines.values():
        i = m.info
        desc = ", ".join(x for x in (f"cc{i['cc']}" if i.get("cc") else "", _memory(i),
                                     f"CUDA {i['cuda']}" if i.get("cuda") else "") if x)
        out.append(f"**{'Machine' if len(ctx.machines) == 1 else m.label}**: {_gpu_name(i)}"
                   + (f" ({desc})" if desc else "") + "  ")
    out.append(f"**Results**: {', '.join(f'`{ctx.show(t.root)}`' for t in ctx.trees)}")
    refs = [m.label for m in ctx.machines.values() if m.reference]
    if refs:
        out += ["", f"> ⚠️ **Reference backend**: {', '.join(refs)} ran plain torch on the CPU instead of "
                    "cuBLASLt/cuSPARSELt. Every number from there is a **CPU reference number, not GPU "
                    "performance**; it shows that the pipeline runs, nothing about sparse speedups."]
    return out + ["", "---", ""]


def _gpu_name(info: dict) -> str:
    if info.get("gpu") == "CPU":  # a machine without CUDA: gpu_full names the processor
        cpu = str(info.get("gpu_full") or info.get("arch") or "unknown")
        if cpu.startswith("CPU (") and cpu.endswith(")"):  # a row's 'device' column: 'CPU (x86_64)'
            cpu = cpu[5:-1]
        return f"none (CPU: {cpu})"
    return str(info.get("gpu_full") or info.get("gpu") or "unknown")


def _memory(info: dict) -> str:
    v = info.get("memory_gb")
    return f"{v} GB" if v not in (None, "") else ""


def _hardware(ctx: Context) -> list[str]:
    fields = [("GPU", _gpu_name), ("Compute capability",
              lambda i: f"cc{i['cc']}" if i.get("cc") else "-"), ("Memory", lambda i: _memory(i) or "-"),
              ("CUDA", lambda i: i.get("cuda") or "-"), ("Driver", lambda i: i.get("driver") or "-"),
              ("Python", lambda i: i.get("python") or "-"), ("Architecture", lambda i: i.get("arch") or "-"),
              ("torch", lambda i: i.get("torch") or "-")]
    ms = list(ctx.machines.values())
    rows = [[name] + [str(f(m.info)) for m in ms] for name, f in fields]
    rows.append(["Hardware tag"] + [f"`{m.key}`" for m in ms])
    rows.append(["Described by"] + ["pipeline status file" if m.info_source == "status" else
                                    "hardware tag (no status file)" for m in ms])
    return ["### 1.1 Hardware", ""] + md_table([""] + [m.label for m in ms], rows) + [""]


def _tasks(ctx: Context) -> list[str]:
    out = ["### 1.2 Tasks", ""]
    for key, m in ctx.machines.items():
        out += _mach_heading(ctx, key)
        run = m.latest
        if run is None:
            out += ["No pipeline status file: these results were written by direct `slidesparse bench` "
                    "commands (or the run's status was lost), so there is no task table.", ""]
            continue
        tasks = run.data.get("tasks") or {}
        rows = []
        for n in sorted(tasks, key=natural_key):
            t = tasks[n] if isinstance(tasks[n], dict) else {}
            st = str(t.get("status", "?"))
            rows.append([f"Task {n}", t.get("name", ""), f"{TASK_ICONS.get(st, '')} {st}".strip(),
                         fmt_span(t.get("duration_s") if isinstance(t.get("duration_s"), (int, float)) else None),
                         t.get("reason") or ""])
        if rows:
            out += md_table(["Task", "Name", "Status", "Duration", "Reason"], rows) + [""]
        out.append(f"**Total run time**: {fmt_span(run_seconds(run))} (`{run.path.name}`"
                   + (f", started {run.data['started']}" if run.data.get("started") else "")
                   + (f", finished {run.data['finished']}" if run.data.get("finished") else ", not finished") + ")  ")
        argv = run.data.get("argv")
        if argv:
            out.append(f"**Command**: `{' '.join(map(str, argv)) if isinstance(argv, list) else argv}`  ")
        if len(m.runs) > 1:
            total = sum(s for s in (run_seconds(r) for r in m.runs) if s)
            out.append(f"**Runs**: {len(m.runs)} status files ({', '.join(f'`{r.path.name}`' for r in m.runs)}); "
                       f"the table shows the latest; all runs together: {fmt_span(total)}  ")
        out.append("")
    return out


def _matrix(ctx: Context) -> list[str]:
    out = ["### 1.3 Test matrix", ""]
    for key, m in ctx.machines.items():
        out += _mach_heading(ctx, key)
        mx = m.matrix
        meas = [x for t in ctx.trees for x in t.measurements if x.machine == key]
        outs = [o for t in ctx.trees for o in t.outcomes if o.machine == key]
        if mx:
            models = [str(x) for x in mx.get("models") or []]
            dtypes = [norm_dtype(d) for d in mx.get("dtypes") or []]
            per_model = {mo: dtypes for mo in models}
            roles = [norm_role(p) for p in mx.get("patterns") or []]
            mlists = {k[:-2]: v for k, v in mx.items() if k.endswith("_m") and isinstance(v, list)}
            src = "from the pipeline status file"
        else:
            seen = [(x.model, x.dtype, x.role, x.stage, x.M) for x in meas] + \
                   [(o.model, o.dtype, o.role, o.stage, o.M) for o in outs]
            models = sorted({s[0] for s in seen}, key=natural_key)
            per_model = {mo: sorted({s[1] for s in seen if s[0] == mo}, key=dtype_sort_key) for mo in models}
            roles = sorted({s[2] for s in seen if s[2] != DENSE}, key=role_sort_key)
            mlists = {st: sorted({s[4] for s in seen if s[3] == st}) for st in STAGE_ORDER
                      if any(s[3] == st for s in seen)}
            src = "derived from the recorded results (no status file)"
        n = sum(len(v) for v in per_model.values())
        out.append(f"_{src.capitalize()}._")
        out.append("")
        out.append(f"- **Models**: {n} model/dtype combinations")
        out += [f"  - {mo} ({', '.join(d.upper() for d in ds)})" for mo, ds in per_model.items()]
        out.append("- **Backends**: cuBLASLt (dense)" + (", cuSPARSELt" if roles else ""))
        out.append(f"- **Patterns**: {', '.join(role_label(r) for r in roles) if roles else 'none'}")
        impls = sorted({x.impl for x in meas if x.impl} | {o.impl for o in outs if o.impl})
        if impls:
            out.append(f"- **Implementations run**: {', '.join(impls)}")
        outs_by = sorted({f"{x.impl} {x.dtype.upper()} -> {x.gemm_out}" for x in meas if x.gemm_out and x.impl})
        if outs_by:  # INT8 sparse layers may write bf16 + alpha: say so beside results from older runs
            out.append(f"- **GEMM outputs (end to end)**: {', '.join(outs_by)}")
        for st, ms in mlists.items():
            out.append(f"- **{STAGE_TITLES.get(st, st)} M**: {', '.join(map(str, ms))}")
        out.append("")
    return out


def _overview(ctx: Context) -> list[str]:
    return ["## 1. Overview", ""] + _hardware(ctx) + _tasks(ctx) + _matrix(ctx)


def _line_status(ln) -> str:
    if ln.total and ln.passed == ln.total:
        return "✅ all passed"
    if ln.passed == 0 and ln.failed:
        return "❌ all failed"
    if ln.failed:
        return "⚠️ partly failed"
    return "⏸️ incomplete"


def _stage_overall(ctx: Context, sr: StageResult) -> list[str]:
    out = _mach_heading(ctx, sr.machine)
    if sr.source == "results":
        out += ["_Counts from the result rows (no ledger or status cases): every row counts as passed and "
                "failures are not recorded._", ""]
    elif sr.source == "status":
        out += ["_Counts from the status file's cases (no ledger)._", ""]
    any_not_run = any(ln.not_run for ln in sr.lines)
    head = ["Model", "Status", "Passed/Total", "Failed M"] + (["Not run"] if any_not_run else []) + ["Duration"]
    rows = []
    for ln in sr.lines:
        name = _case_name(ln.model, ln.dtype)
        rows.append([f"**{name}**" if ln.failed else name, _line_status(ln), f"{ln.passed}/{ln.total}",
                     ", ".join(f"M={m}" for m in ln.failed_ms) or "-"]
                    + ([str(len(ln.not_run)) if ln.not_run else "-"] if any_not_run else [])
                    + [fmt_seconds(ln.duration_s)])
    out += md_table(head, rows) + [""]
    out.append(f"**Total**: {sr.passed}/{sr.total} passed ({100.0 * sr.passed / sr.total:.1f}%)"
               if sr.total else "**Total**: no cases")
    return out + [""]


def _failure_details(ctx: Context, srs: list[StageResult]) -> list[str]:
    out = []
    for sr in srs:
        bad = [ln for ln in sr.lines if ln.failed or ln.not_run]
        if not bad:
            continue
        for ln in bad:
            label = _case_name(ln.model, ln.dtype) + (f" on {ctx.machines[sr.machine].label}"
                                                      if len(ctx.machines) > 1 else "")
            out += [f"#### {label}", ""]
            rows = [[o.backend, role_label(o.role), o.M, f"`{o.error_type}`" if o.error_type else "-",
                     "❌ FAILED" if o.status == "failed" else o.status] for o in ln.failed]
            rows += [[backend_label(r), role_label(r), M, "-", "⏸️ not run"] for r, M in ln.not_run]
            out += md_table(["Backend", "Pattern", "M", "Error", "Status"], rows, right=(2,)) + [""]
    return out or ["No failures.", ""]


def _error_analysis(ctx: Context, srs: list[StageResult]) -> list[str]:
    out = []
    for sr in srs:
        groups = error_groups(sr.failures)
        if not groups:
            continue
        out += _mach_heading(ctx, sr.machine)
        rows = [[f"`{g.error_type}`", f"`{g.location}`", g.count, ", ".join(g.cases), ", ".join(map(str, g.ms))]
                for g in groups]
        out += md_table(["Error type", "Location", "Count", "Cases", "M"], rows, right=(2,)) + [""]
        for i, g in enumerate(groups, 1):
            roles = sorted({o.role for o in g.failures}, key=role_sort_key)
            out += [f"**Group {i}**: `{g.error_type}` at `{g.location}`: {g.count} failure(s) in "
                    f"{', '.join(g.cases)} at {fmt_ms(g.ms)} ({', '.join(role_label(r) for r in roles)})", ""]
            if g.example:
                out += ["Example message:", "```", g.example.strip()[:800], "```", ""]
            only = _only_these(sr, g)
            if only:
                out += [only, ""]
    return out or ["No failures.", ""]


def _only_these(sr: StageResult, g) -> str:
    """The seed's 'impact' paragraph, stated from the data: which cases and M fail, which pass."""
    ok = [ln for ln in sr.lines if not ln.failed]
    if not ok:
        return ""
    return (f"Impact: {', '.join(g.cases)} at {fmt_ms(g.ms)}; "
            f"{', '.join(_case_name(ln.model, ln.dtype) for ln in ok)} passed every recorded M.")


def _speedups(ctx: Context, stage: str) -> list[str]:
    tables = [t for t in ctx.tables if t.stage == stage]
    if not tables:
        return ["No result rows for this stage, so no speedups.", ""]
    out = ["Speedup = sparse / dense throughput (or dense / sparse time) at the same M, same machine and "
           "dtype. *ideal* is the pattern's L/(L-2) = N/(N-1): what the GEMM alone could gain at best.", ""]
    for t in tables:
        mach = ctx.machines[t.machine]
        better = "higher is better" if t.higher_better else "lower is better"
        out += [f"#### {t.model} {t.dtype.upper()}" + (f" on {mach.label}" if len(ctx.machines) > 1 else ""), ""]
        out.append(f"Metric `{t.metric}` ({better}); implementations: {', '.join(t.impls) or 'not recorded'}.")
        if t.reference:
            out += ["", f"> {REFERENCE_LINE}"]
        out.append("")
        head = ["M", *t.extras, f"dense {metric_name(t.metric)}"]
        for r in t.roles:
            head += [role_label(r), "ideal"]
        rows, stale = [], False
        for row in t.rows:
            cells = [row.M, *("-" if v is None else v for v in row.extras)]
            if DENSE in row.failed:
                stale |= row.dense is not None
                cells.append("❌ failed" if row.dense is None else f"{fmt_metric(t.metric, row.dense)} †")
            else:
                cells.append(fmt_metric(t.metric, row.dense))
            for r in t.roles:
                s = row.speedups.get(r)
                if s is not None:
                    mark = " †" if r in row.failed or DENSE in row.failed else ""
                    stale |= bool(mark)
                    cells.append(f"{s:.2f}x{mark}")
                elif r in row.failed:
                    cells.append("❌ failed")
                elif r in row.values:
                    cells.append("no dense")
                else:
                    cells.append("-")
                ideal = ideal_speedup(r)
                cells.append(f"{ideal:.2f}x" if ideal else "-")
            rows.append(cells)
        out += md_table(head, rows, right=tuple(range(len(head)))) + [""]
        if stale:
            out += ["† from an older measurement: the latest run of this case and M failed (see the failure "
                    "details), so the row left by an earlier run is shown.", ""]
        link = ctx.table_plots.get(id(t))
        if link:
            out += [f"![{stage} {t.model} {t.dtype.upper()} speedup vs M on {mach.label}]({link})", ""]
    return out


def _stage_sections(ctx: Context, first: int) -> tuple[list[str], int]:
    out, num = [], first
    present = [s for s in STAGE_ORDER if any(sr.stage == s for sr in ctx.stages)
               or any(t.stage == s for t in ctx.tables)]
    for stage in present:
        srs = [sr for sr in ctx.stages if sr.stage == stage]
        out += [f"## {num}. {STAGE_TITLES.get(stage, stage)} results", ""]
        out += [f"### {num}.1 Overall results", ""]
        for sr in srs:
            out += _stage_overall(ctx, sr)
        if not srs:
            out += ["No cases recorded.", ""]
        out += [f"### {num}.2 Failure details", ""] + _failure_details(ctx, srs)
        out += [f"### {num}.3 Error analysis", ""] + _error_analysis(ctx, srs)
        out += [f"### {num}.4 Speedup vs the dense baseline", ""] + _speedups(ctx, stage)
        num += 1
    return out, num


def _cross(ctx: Context, num: int) -> list[str]:
    machines_with_rows = {t.machine for t in ctx.tables}
    if len(machines_with_rows) < 2:
        return []
    out = [f"## {num}. Cross-GPU comparison", ""]
    if not ctx.crosses:
        return out + ["No case (stage, model, dtype, metric) was measured on more than one machine.", ""]
    out += ["The same stage, model, dtype, M and pattern side by side for every machine that measured it: "
            "the metric and the speedup over that machine's own dense baseline.", ""]
    refs = {k for k, m in ctx.machines.items() if m.reference}
    for ct in ctx.crosses:
        labels = [ctx.machines[m].label for m in ct.machines]
        out += [f"### {STAGE_TITLES.get(ct.stage, ct.stage)} {ct.model} {ct.dtype.upper()} ({ct.metric})", ""]
        if refs & set(ct.machines):
            out += [f"> {REFERENCE_LINE} ({', '.join(ctx.machines[m].label for m in ct.machines if m in refs)})", ""]
        head = ["M", *ct.extras, "Pattern", "Ideal"]
        for lb in labels:
            head += [f"{lb} {metric_name(ct.metric)}", f"{lb} speedup"]
        rows = []
        for key in sorted(ct.cells, key=lambda k: (k[0], tuple(str(v) for v in k[1:-1]), role_sort_key(k[-1]))):
            ideal = ideal_speedup(key[-1])
            r = [key[0], *key[1:-1], role_label(key[-1]), f"{ideal:.2f}x" if ideal else "-"]
            for m in ct.machines:
                v, s = ct.cells[key].get(m, (None, None))
                r += [fmt_metric(ct.metric, v), f"{s:.2f}x" if s is not None else "-"]
            rows.append(r)
        out += md_table(head, rows) + [""]
        link = ctx.cross_plots.get(id(ct))
        if link:
            out += [f"![{ct.stage} {ct.model} {ct.dtype.upper()} across machines]({link})", ""]
    return out


def _layout(ctx: Context, num: int) -> list[str]:
    out = [f"## {num}. Where results live", "", "Paths are relative to this report.", ""]
    for t in ctx.trees:
        if len(ctx.trees) > 1:
            out += [f"### `{ctx.show(t.root)}`", ""]
        for stage in STAGE_ORDER:
            tags = sorted(h for (s, h) in t.result_dirs if s == stage)
            if not tags:
                continue
            out += [f"**{STAGE_TITLES.get(stage, stage)}** results:", "```", f"{ctx.show(t.root / stage)}/"]
            for i, tag in enumerate(tags):
                last = i == len(tags) - 1
                out.append(f"{'└──' if last else '├──'} {tag}/")
                roles = t.result_dirs[(stage, tag)]
                sparse = sorted((r for r in roles if r != DENSE), key=role_sort_key)
                kids = (["cublaslt/"] if DENSE in roles else []) + \
                       ([f"cusparselt/{sparse[0]}/" if len(sparse) == 1 else f"cusparselt/{{{','.join(sparse)}}}/"]
                        if sparse else [])
                for j, k in enumerate(kids):
                    branch = "└──" if j == len(kids) - 1 else "├──"
                    out.append(f"{'    ' if last else '│   '}{branch} {k}")
            out += ["```", ""]
        logs = [("Ledger", p) for p in t.ledgers] + [("Status file", r.path) for r in t.runs] + \
               [("Log", p) for p in t.logs]
        if logs:
            out += [f"- {what}: `{ctx.show(p)}`" for what, p in logs] + [""]
    return out


def _known(ctx: Context, num: int) -> list[str]:
    out = [f"## {num}. Known issues (detected automatically)", ""]
    if not ctx.issues:
        return out + ["None detected.", ""]
    for i, issue in enumerate(ctx.issues, 1):
        out += [f"### {num}.{i} {'⚠️ ' if issue.severity == 'warning' else ''}{issue.title}", ""]
        out += issue.lines + [""]
    return out


def _problems(ctx: Context, num: int) -> list[str]:
    out = [f"## {num}. Problems reading results", ""]
    if not ctx.problems and not ctx.notes:
        return out + ["None: every file was read completely.", ""]
    if ctx.problems:
        out += ["These files could not be read completely; what could be read is in the report, the rest "
                "is not.", ""]
        out += md_table(["File", "Problem"], [[f"`{ctx.show(p.path)}`", p.what] for p in ctx.problems]) + [""]
    out += [f"- {n}" for n in ctx.notes] + ([""] if ctx.notes else [])
    return out


def _summary(ctx: Context, num: int) -> list[str]:
    keys = list(ctx.machines)
    labels = [ctx.machines[k].label for k in keys]
    rows = []
    stages = [s for s in STAGE_ORDER if any(sr.stage == s for sr in ctx.stages)]
    for st in stages:
        r = [f"**{STAGE_TITLES.get(st, st)} pass rate**"]
        for k in keys:
            sr = next((x for x in ctx.stages if x.machine == k and x.stage == st), None)
            r.append(fmt_rate(sr.passed, sr.total) if sr else "-")
        rows.append(r)
    r = ["**Overall pass rate**"]
    for k in keys:
        srs = [x for x in ctx.stages if x.machine == k]
        r.append(fmt_rate(sum(x.passed for x in srs), sum(x.total for x in srs)))
    rows.append(r)
    r = ["**Failed cases**"]
    for k in keys:
        fails: dict[tuple, set[int]] = {}
        for sr in ctx.stages:
            if sr.machine == k:
                for o in sr.failures:
                    fails.setdefault((sr.stage, o.model, o.dtype), set()).add(o.M)
        unknown = any(sr.machine == k and sr.source == "results" for sr in ctx.stages)
        r.append("; ".join(f"{st} {_case_name(mo, d)} ({fmt_ms(sorted(ms))})" for (st, mo, d), ms in
                           sorted(fails.items(), key=lambda kv: (STAGE_ORDER.index(kv[0][0]), natural_key(kv[0][1]),
                                                                 dtype_sort_key(kv[0][2]))))
                 or ("not recorded (no ledger)" if unknown else "none"))
    rows.append(r)
    r = ["**Total run time**"]
    for k in keys:
        secs = [s for s in (run_seconds(x) for x in ctx.machines[k].runs) if s]
        r.append(fmt_span(sum(secs)) if secs else "-")
    rows.append(r)
    r = ["**Backend**"]
    for k in keys:
        r.append("⚠️ CPU reference (not GPU numbers)" if ctx.machines[k].reference else "GPU libraries")
    rows.append(r)
    out = [f"## {num}. Summary", ""] + md_table(["Metric", *labels], rows) + [""]
    if ctx.problems:
        out += [f"{len(ctx.problems)} problem(s) reading results: see section {num - 1}.", ""]
    return out


def render(ctx: Context) -> str:
    lines = _title(ctx) + _overview(ctx)
    body, num = _stage_sections(ctx, 2)
    lines += body
    cross = _cross(ctx, num)
    if cross:
        lines += cross
        num += 1
    lines += _layout(ctx, num) + _known(ctx, num + 1) + _problems(ctx, num + 2) + _summary(ctx, num + 3)
    lines += ["---", "", f"*Report generated by `slidesparse report` at {ctx.now:%Y-%m-%d %H:%M} UTC.*", ""]
    return "\n".join(lines)


__all__ = ["Context", "render", "md_table", "fmt_seconds", "fmt_span", "fmt_rate", "fmt_metric"]
