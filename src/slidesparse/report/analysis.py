"""What the report says, computed from loaded trees: machines, pass counts per stage and model,
error groups, speedup tables vs the dense baseline and the cross-machine comparison.

Pure data (no Markdown, no plotting), so every number the report prints can be tested directly.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .load import (DENSE, STAGE_ORDER, Measurement, Outcome, Run, Tree, dtype_sort_key, from_case, is_reference,
                   natural_key, norm_dtype, norm_role, parse_tag, role_sort_key)

# --- machines ------------------------------------------------------------------------------------


@dataclass
class Machine:
    key: str                       # hardware tag without dtype
    info: dict                     # header fields (status file's machine block, else parsed from the tag)
    info_source: str               # 'status' | 'tag'
    runs: list[Run]                # oldest first
    roots: list[Path]
    hwtags: set[str]
    reference: bool
    label: str = ""                # short, unique among the report's machines ('H100', 'GB10')

    @property
    def latest(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def matrix(self) -> dict:
        m = self.latest.data.get("matrix") if self.latest else None
        return m if isinstance(m, dict) else {}


def _parse_time(text) -> _dt.datetime | None:
    if not text:
        return None
    s = str(text).strip().replace("Z", "+00:00")
    for fmt in (None, "%Y%m%d_%H%M%S"):
        try:
            t = _dt.datetime.fromisoformat(s) if fmt is None else _dt.datetime.strptime(s, fmt)
        except ValueError:
            continue
        return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)
    return None


def run_seconds(run: Run) -> float | None:
    """Wall time of a pipeline run: finished - started, else the sum of its task durations."""
    a, b = _parse_time(run.data.get("started")), _parse_time(run.data.get("finished"))
    if a and b and b >= a:
        return (b - a).total_seconds()
    tasks = run.data.get("tasks") or {}
    durs = [t.get("duration_s") for t in tasks.values() if isinstance(t, dict)]
    durs = [float(d) for d in durs if isinstance(d, (int, float)) and not isinstance(d, bool)]
    return sum(durs) if durs else None


def machines(trees: Sequence[Tree]) -> dict[str, Machine]:
    """Every machine the trees mention, keyed by machine key, in the order the trees first name them."""
    keys: dict[str, Machine] = {}

    def get(key: str, root: Path) -> Machine:
        m = keys.get(key)
        if m is None:
            m = keys[key] = Machine(key, {}, "tag", [], [], set(), key.startswith("CPU"))
        if root not in m.roots:
            m.roots.append(root)
        return m

    for t in trees:
        for x in t.measurements:
            m = get(x.machine, t.root)
            m.hwtags.add(x.hwtag)
            m.reference |= x.is_reference
            if "device" in x.row and "gpu_full" not in m.info:
                m.info["gpu_full"] = str(x.row["device"])
        for o in t.outcomes:
            m = get(o.machine, t.root)
            m.hwtags.add(o.hwtag)
            m.reference |= is_reference(None, o.impl, o.hwtag)
        for r in t.runs:
            m = get(r.machine, t.root)
            m.runs.append(r)
            m.reference |= is_reference(r.data.get("reference_backend"), "", r.machine)
    for m in keys.values():
        m.runs.sort(key=lambda r: (str(_parse_time(r.stamp) or ""), r.path.name))
        base = {k: v for k, v in parse_tag(m.key).items() if v}
        status_info = next((r.data["machine"] for r in reversed(m.runs) if isinstance(r.data.get("machine"), dict)),
                           None)
        if status_info:
            m.info = {**base, **{k: v for k, v in status_info.items() if v not in (None, "")}}
            m.info_source = "status"
        else:
            m.info = {**base, **m.info}
    ordered = list(keys.values())  # the order the trees were given in: the first tree's machine first
    gpus = Counter(m.info.get("gpu", m.key) for m in ordered)
    for m in ordered:
        gpu = str(m.info.get("gpu", m.key))
        m.label = gpu if gpus[gpu] == 1 else m.key
        if m.reference and "reference" not in m.label.lower():
            m.label += " (CPU reference)" if gpu == "CPU" else " (reference backend)"
    return {m.key: m for m in ordered}


# --- outcomes ------------------------------------------------------------------------------------

def latest_outcomes(trees: Sequence[Tree]) -> list[Outcome]:
    """One outcome per (machine, stage, model, dtype, role, M). Within one ledger the last line wins
    (the pipeline's resume rule); between ledgers (copies of a tree) the newer time_utc wins."""
    best: dict[tuple, Outcome] = {}
    for t in trees:
        per_file: dict[tuple, Outcome] = {}
        for o in t.outcomes:
            per_file[(o.file, o.machine, o.stage, o.model, o.dtype, o.role, o.M)] = o
        for k, o in per_file.items():
            old = best.get(k[1:])
            if old is None or not (o.time_utc and old.time_utc and o.time_utc < old.time_utc):
                best[k[1:]] = o
    return list(best.values())


@dataclass
class ModelLine:
    model: str
    dtype: str
    passed: int = 0
    failed: list[Outcome] = field(default_factory=list)
    not_run: list[tuple[str, int]] = field(default_factory=list)   # (role, M) planned but never recorded
    duration_s: float | None = None

    @property
    def total(self) -> int:
        return self.passed + len(self.failed) + len(self.not_run)

    @property
    def failed_ms(self) -> list[int]:
        return sorted({o.M for o in self.failed})

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dtype}"


@dataclass
class StageResult:
    machine: str
    stage: str
    source: str                  # 'ledger' | 'status' | 'results'
    lines: list[ModelLine]

    @property
    def passed(self) -> int:
        return sum(x.passed for x in self.lines)

    @property
    def total(self) -> int:
        return sum(x.total for x in self.lines)

    @property
    def failures(self) -> list[Outcome]:
        return [o for x in self.lines for o in x.failed]

    @property
    def duration_s(self) -> float | None:
        ds = [x.duration_s for x in self.lines if x.duration_s is not None]
        return sum(ds) if ds else None


def _planned(matrix: dict, stage: str) -> set[tuple[str, str, str, int]]:
    """(model, dtype, role, M) the run's matrix planned for a stage; empty when the matrix says nothing."""
    ms, models, dtypes = matrix.get(f"{stage}_m"), matrix.get("models"), matrix.get("dtypes")
    if not (isinstance(ms, list) and isinstance(models, list) and isinstance(dtypes, list)):
        return set()
    roles = [DENSE] + [norm_role(p) for p in (matrix.get("patterns") or [])]
    out = set()
    for model in models:
        for d in dtypes:
            for role in roles:
                for M in ms:
                    if isinstance(M, int):
                        out.add((str(model), norm_dtype(d), role, M))
    return out


def _status_outcomes(run: Run, stage: str, machine: str) -> tuple[set, list[Outcome], dict] | None:
    """From a status file's 'cases' (used when no ledger exists): the passed (model, dtype, role, M),
    the failed ones as outcomes (with the error when the case lists its failures), durations."""
    cases = run.data.get("cases") or {}
    passed, failed, durations = set(), [], {}
    for case_id, c in cases.items():
        if not isinstance(c, dict):
            continue
        parts = {**from_case(case_id), **{k: c[k] for k in ("stage", "model", "dtype", "backend", "pattern")
                                          if c.get(k)}}
        if parts.get("stage") != stage:
            continue
        ident = (str(parts.get("model", "?")), norm_dtype(parts.get("dtype")),
                 norm_role(parts.get("pattern"), parts.get("backend")))
        errors = {f.get("M"): f for f in c.get("failures") or [] if isinstance(f, dict)}
        for M in c.get("done_m") or []:
            if isinstance(M, int):
                passed.add((*ident, M))
        for M in c.get("failed_m") or []:
            if isinstance(M, int):
                e = errors.get(M, {})
                failed.append(Outcome(machine, str(run.data.get("hwtag", "")), stage, *ident, M, "failed",
                                      str(e.get("error_type") or ""), str(e.get("message") or ""),
                                      str(e.get("location") or ""), None, "", str(c.get("impl") or ""), case_id,
                                      run.path, 0))
        if isinstance(c.get("duration_s"), (int, float)):
            durations[ident[:2]] = durations.get(ident[:2], 0.0) + float(c["duration_s"])
    if not passed and not failed:
        return None
    return passed, failed, durations


def stage_results(trees: Sequence[Tree], machs: dict[str, Machine]) -> list[StageResult]:
    """Pass counts per machine and stage: from the ledger, else the status file's cases, else the
    result rows (then every row is a pass and failures are unknown)."""
    outs = latest_outcomes(trees)
    meas = [x for t in trees for x in t.measurements]
    out: list[StageResult] = []
    for key, mach in machs.items():
        for stage in STAGE_ORDER:
            mine = [o for o in outs if o.machine == key and o.stage == stage]
            lines: dict[tuple[str, str], ModelLine] = {}

            def line(model: str, dtype: str) -> ModelLine:
                return lines.setdefault((model, dtype), ModelLine(model, dtype))

            recorded: set[tuple] = set()
            if mine:
                source = "ledger"
                for o in mine:
                    ln = line(o.model, o.dtype)
                    recorded.add((o.model, o.dtype, o.role, o.M))
                    if o.passed:
                        ln.passed += 1
                    else:
                        ln.failed.append(o)
                    if o.duration_s is not None:
                        ln.duration_s = (ln.duration_s or 0.0) + o.duration_s
            else:
                st = _status_outcomes(mach.latest, stage, key) if mach.latest else None
                rows = {(x.model, x.dtype, x.role, x.M) for x in meas if x.machine == key and x.stage == stage}
                if st:
                    source = "status"
                    passed, failed, durations = st
                    for ident in passed:
                        line(ident[0], ident[1]).passed += 1
                        recorded.add(ident)
                    for o in failed:
                        line(o.model, o.dtype).failed.append(o)
                        recorded.add((o.model, o.dtype, o.role, o.M))
                    for (model, dtype), d in durations.items():
                        line(model, dtype).duration_s = d
                elif rows:
                    source = "results"
                    for ident in rows:
                        line(ident[0], ident[1]).passed += 1
                        recorded.add(ident)
                else:
                    continue
            for ident in sorted(_planned(mach.matrix, stage) - recorded, key=lambda i: (i[2] != DENSE, str(i))):
                line(ident[0], ident[1]).not_run.append((ident[2], ident[3]))
            for ln in lines.values():
                ln.failed.sort(key=lambda o: (o.M, role_sort_key(o.role)))
                ln.not_run.sort(key=lambda rm: (rm[1], role_sort_key(rm[0])))
            ordered = sorted(lines.values(), key=lambda x: (_model_rank(mach, x.model), dtype_sort_key(x.dtype)))
            out.append(StageResult(key, stage, source, ordered))
    return out


def _model_rank(mach: Machine, model: str):
    models = [str(m) for m in (mach.matrix.get("models") or [])]
    return (models.index(model), []) if model in models else (len(models), natural_key(model))


# --- error analysis ------------------------------------------------------------------------------

@dataclass
class ErrorGroup:
    error_type: str
    location: str
    failures: list[Outcome]

    @property
    def count(self) -> int:
        return len(self.failures)

    @property
    def example(self) -> str:
        return next((o.message for o in self.failures if o.message), "")

    @property
    def cases(self) -> list[str]:
        return sorted({f"{o.model}-{o.dtype}" for o in self.failures}, key=natural_key)

    @property
    def ms(self) -> list[int]:
        return sorted({o.M for o in self.failures})


def error_groups(failures: Iterable[Outcome]) -> list[ErrorGroup]:
    """Failures grouped by (error type, location), largest group first."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in failures:
        groups.setdefault((o.error_type or "unknown", o.location or "unknown"), []).append(o)
    out = [ErrorGroup(e, loc, fs) for (e, loc), fs in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.error_type, g.location))


# --- speedup tables ------------------------------------------------------------------------------

HIGHER_BETTER = ("tokens_per_s", "throughput", "tflops", "tops", "gbps", "bandwidth_gbps")
LOWER_BETTER = ("time_s", "latency_us", "median_us", "time_us", "time_ms", "latency_ms", "median_ms")
EXTRA_KEYS = ("layer", "linear", "op", "kernel", "name", "shape", "N", "K", "out_dtype")
_NOT_METRIC = {"M", "N", "K", "speedup", "ideal_speedup", "max_spread", "runs", "warmup", "tokens_per_unit",
               "p10_s", "p90_s", "duration_s"}


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def choose_metric(rows: Sequence[dict]) -> tuple[str, bool] | None:
    """The column speedups are computed from, and whether higher is better: a known throughput or time
    column present (numeric) in every row, else any such-named numeric column."""
    def everywhere(col: str) -> bool:
        return all(_num(r.get(col)) is not None and _num(r.get(col)) > 0 for r in rows)

    for col in HIGHER_BETTER:
        if everywhere(col):
            return col, True
    for col in LOWER_BETTER:
        if everywhere(col):
            return col, False
    cols = [c for c in (rows[0] if rows else {}) if c not in _NOT_METRIC and not c.startswith("v_")]
    for col in cols:
        if everywhere(col) and (col.endswith("_per_s") or col.endswith("flops") or col.endswith("gbps")):
            return col, True
    for col in cols:
        if everywhere(col) and re.search(r"_(us|ms|s)$", col):
            return col, False
    return None


@dataclass
class SpeedupRow:
    M: int
    extras: tuple
    dense: float | None
    values: dict[str, float]          # role -> metric
    speedups: dict[str, float]        # sparse role -> speedup vs dense
    failed: set[str]                  # roles whose case failed at this M (ledger)

    @property
    def key(self) -> tuple:
        return (self.M, *self.extras)


@dataclass
class SpeedupTable:
    machine: str
    stage: str
    model: str
    dtype: str
    metric: str
    higher_better: bool
    extras: tuple[str, ...]
    roles: list[str]                  # sparse roles, sorted by window
    rows: list[SpeedupRow]
    impls: list[str]
    reference: bool
    duplicates: int = 0               # measurements superseded by a newer one of the same key

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.stage, self.model, self.dtype)


def _dedupe(ms: list[Measurement], extras: tuple[str, ...]) -> tuple[list[Measurement], int]:
    best: dict[tuple, Measurement] = {}
    dup = 0
    for x in ms:
        k = (x.role, x.M, *(str(x.row.get(e)) for e in extras))
        old = best.get(k)
        if old is not None:
            dup += 1
            if x.time_utc < old.time_utc:
                continue
        best[k] = x
    return list(best.values()), dup


def _extras(ms: list[Measurement]) -> tuple[str, ...]:
    """Columns besides M that tell measurements of one role apart (e.g. a kernel's layer or N, K)."""
    out = []
    for col in EXTRA_KEYS:
        seen: dict[tuple, set] = {}
        for x in ms:
            if col in x.row:
                seen.setdefault((x.role, x.M), set()).add(str(x.row[col]))
        if any(len(v) > 1 for v in seen.values()):
            out.append(col)
    return tuple(out)


def _key_order(key: tuple) -> tuple:
    return tuple((0, v, []) if isinstance(v, int) and not isinstance(v, bool) else (1, 0, natural_key(str(v)))
                 for v in key)


def speedup_tables(trees: Sequence[Tree], machs: dict[str, Machine]) -> tuple[list[SpeedupTable], list[str]]:
    """One table per machine x stage x model x dtype that has a dense baseline or any sparse rows;
    plus notes on groups that could not be tabulated (no common metric)."""
    outs = latest_outcomes(trees)
    failed = {(o.machine, o.stage, o.model, o.dtype, o.role, o.M) for o in outs if not o.passed}
    groups: dict[tuple, list[Measurement]] = {}
    for t in trees:
        for x in t.measurements:
            groups.setdefault((x.machine, x.stage, x.model, x.dtype), []).append(x)
    order = list(machs)
    tables, notes = [], []
    for (mach, stage, model, dtype), ms in sorted(
            groups.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else len(order),
                                            STAGE_ORDER.index(kv[0][1]), natural_key(kv[0][2]),
                                            dtype_sort_key(kv[0][3]))):
        extras = _extras(ms)
        ms, dup = _dedupe(ms, extras)
        metric = choose_metric([x.row for x in ms])
        if metric is None:
            where = machs[mach].label if mach in machs else mach
            notes.append(f"{stage} {model} {dtype.upper()} on {where}: no throughput or time column common to "
                         f"all rows; no speedup table")
            continue
        col, higher = metric
        roles = sorted({x.role for x in ms if x.role != DENSE}, key=role_sort_key)
        fail_ms = {o[5] for o in failed if o[:4] == (mach, stage, model, dtype)}
        by_key: dict[tuple, dict[str, float]] = {}
        for x in ms:
            by_key.setdefault((x.M, *(x.row.get(e) for e in extras)), {})[x.role] = float(x.row[col])
        for M in fail_ms:
            if not any(k[0] == M for k in by_key):
                by_key[(M, *([None] * len(extras)))] = {}
        rows = []
        for k in sorted(by_key, key=_key_order):
            vals = by_key[k]
            dense = vals.get(DENSE)
            sp = {}
            for r in roles:
                if dense and r in vals:
                    sp[r] = vals[r] / dense if higher else dense / vals[r]
            fr = {r for r in [DENSE, *roles] if (mach, stage, model, dtype, r, k[0]) in failed}
            rows.append(SpeedupRow(k[0], tuple(k[1:]), dense, vals, sp, fr))
        impls = sorted({x.impl for x in ms if x.impl})
        tables.append(SpeedupTable(mach, stage, model, dtype, col, higher, extras, roles, rows, impls,
                                   any(x.is_reference for x in ms), dup))
    return tables, notes


# --- cross-machine comparison ----------------------------------------------------------------------

@dataclass
class CrossTable:
    stage: str
    model: str
    dtype: str
    metric: str
    higher_better: bool
    extras: tuple[str, ...]
    machines: list[str]
    roles: list[str]                          # dense first
    # (M, extras..., role) -> machine -> (value, speedup or None)
    cells: dict[tuple, dict[str, tuple[float | None, float | None]]]


def cross_tables(tables: Sequence[SpeedupTable], machs: dict[str, Machine]) -> list[CrossTable]:
    """The same stage/model/dtype/M/pattern side by side for every machine that measured it."""
    groups: dict[tuple, list[SpeedupTable]] = {}
    for t in tables:
        groups.setdefault((t.stage, t.model, t.dtype, t.metric, t.extras), []).append(t)
    out = []
    for (stage, model, dtype, metric, extras), ts in groups.items():
        if len({t.machine for t in ts}) < 2:
            continue
        order = [m for m in machs if any(t.machine == m for t in ts)]
        roles = [DENSE] + sorted({r for t in ts for r in t.roles}, key=role_sort_key)
        cells: dict[tuple, dict] = {}
        for t in ts:
            for row in t.rows:
                for role in roles:
                    v = row.values.get(role)
                    if v is None:
                        continue
                    s = 1.0 if role == DENSE and row.dense else row.speedups.get(role)
                    cells.setdefault((row.M, *row.extras, role), {})[t.machine] = (v, s)
        out.append(CrossTable(stage, model, dtype, metric, ts[0].higher_better, extras, order, roles, cells))
    out.sort(key=lambda c: (STAGE_ORDER.index(c.stage), natural_key(c.model), dtype_sort_key(c.dtype)))
    return out


__all__ = ["Machine", "machines", "run_seconds", "latest_outcomes", "ModelLine", "StageResult", "stage_results",
           "ErrorGroup", "error_groups", "SpeedupRow", "SpeedupTable", "speedup_tables", "choose_metric",
           "CrossTable", "cross_tables"]
