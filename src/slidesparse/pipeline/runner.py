"""The pipeline runner: tasks 1-7 over the matrix, every case in worker processes, resumable.

``run_pipeline(PipelineOptions(...))`` runs the selected tasks in order (1 download, 2 convert,
3 tune-coarse, 4 tune-fine, 5 quick check, 6 prefill, 7 decode; see ``pipeline.tasks``). Tasks 6 and
7 sweep their cases (``pipeline.cases``): each case runs in its own spawned worker that builds the
engine once and measures every M (``pipeline.worker``). As each M's outcome arrives the runner

  1. writes the result row (done only) with ``bench.results.write_result_rows`` to
     ``<results>/<stage>/<hwtag with dtype>/<cublaslt | cusparselt/2_L>/<model>_<stage>.{json,csv}``,
  2. appends the ledger line (``pipeline.ledger``; ``<results>/logs/ledger_<hwtag>.jsonl``),
  3. rewrites the status JSON (``pipeline.status``) and logs a line,

so a run killed at any point (SIGKILL included) loses at most the M in progress, and a rerun skips
every (case, M) whose latest ledger line is done (and, unless ``retry_failed``, failed ones too).
Result rows carry: model, dtype ('int8'|'fp8'), backend (role), impl, ops, device, pattern
('dense'|'2_L'), pattern_paper, stage, method ('e2e'), case, the measurement of
``bench.e2e.E2EResult.row()`` (M, tokens_per_s, time_s, p10_s, p90_s, runs, cuda_graphs,
tokens_per_unit) plus seqs/seq_len (prefill) or prompt_len (decode), warmup, [peak_mem_gib], seed,
hwtag, reference_backend, run (the run id), and ``provenance()``. Failed M values have no result
row: the ledger holds them.

Without CUDA (or with ``device='cpu'``) the plain-torch ``reference`` backend stands in for both
libraries, the machine is described as the CPU, and the default matrix shrinks (model tiny, small M
lists); this is printed and recorded (status "reference_backend": true, a known issue).

SIGINT / SIGTERM: the running worker is killed, the running task and case become INTERRUPTED, the
remaining tasks SKIPPED, the status is written, and the run returns exit code 130. Exit code 0: no
task FAILED; 1: some task FAILED.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..hw import MachineInfo
from ..ptxas import apply_ptxas_policy
from .cases import (DEFAULT_DECODE_M, DEFAULT_DTYPES, DEFAULT_MODELS, DEFAULT_PATTERNS, DEFAULT_PREFILL_M,
                    REFERENCE_DECODE_M, REFERENCE_MODELS, REFERENCE_PREFILL_M, STAGE_TASK, BackendPlan,
                    BenchSettings, Case, Matrix)
from .ledger import Ledger, ledger_path
from .status import RunLog, RunStatus, claim_run_files, iso_now
from .tasks import (ALL_TASKS, TASK_NAMES, TaskContext, TaskOutcome, hf_snapshot, open_engine_case,
                    task_convert, task_download, task_quick_check, task_tune)
from .worker import CaseJob, call_isolated, run_case


def _e(text) -> str:
    """Escape rich markup in dynamic text (a location '[slidesparse/x.py:3]' is not a style tag)."""
    from rich.markup import escape  # noqa: PLC0415

    return escape(str(text))

ROW_KEY = ("model", "dtype", "backend", "impl", "pattern", "M", "method")
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class PipelineOptions:
    """Everything a run is told (the CLI maps its options 1:1). None = the default for the backend."""

    tasks: Sequence[int] = ALL_TASKS
    models: Sequence[str] | None = None
    dtypes: Sequence[str] = DEFAULT_DTYPES
    patterns: Sequence[str] = DEFAULT_PATTERNS
    prefill_m: Sequence[int] | None = None
    decode_m: Sequence[int] | None = None
    results: str = "results"
    search: str = "search"
    download_dir: str = "checkpoints/hf"
    checkpoints: str = "checkpoints"
    timeout: float | None = 3600.0        # per M
    setup_timeout: float | None = 3600.0  # worker start + engine build (and the quick check)
    retry_failed: bool = False
    fresh: bool = False
    device: str = "auto"
    seed: int = 0
    # how cases measure: the defaults live in BenchSettings, stated once
    prefill_warmup: int = BenchSettings.prefill_warmup
    prefill_repeat: int = BenchSettings.prefill_repeat
    decode_steps: int = BenchSettings.decode_steps
    decode_warmup: int = BenchSettings.decode_warmup
    decode_prompt_len: int = BenchSettings.decode_prompt_len
    cuda_graphs: bool = BenchSettings.cuda_graphs
    check_m: int | None = None            # quick-check M (default: the smallest prefill M)
    check_layers: int = 2                 # quick-check depth (0 = all layers)
    argv: list[str] = field(default_factory=list)


@dataclass
class PipelineRun:
    exit_code: int
    run_id: str
    status_path: Path
    log_path: Path
    ledger_path: Path
    status: dict


# --- option parsing -------------------------------------------------------------------------
def parse_tasks(text: str | Sequence[int]) -> tuple[int, ...]:
    """'1,2,5-7' (or ints) -> sorted task numbers; anything else is one clear ValueError."""
    items = re.split(r"\s*,\s*", text.strip()) if isinstance(text, str) else list(text)
    out: set[int] = set()
    for it in items:
        if it == "":
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", str(it).strip())
        if not m:
            raise ValueError(f"tasks must be numbers 1-7 or ranges like 5-7, comma-separated; got {it!r} "
                             f"({', '.join(f'{n} {t}' for n, t in TASK_NAMES.items())})")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if a > b or a not in TASK_NAMES or b not in TASK_NAMES:
            raise ValueError(f"task {it!r} out of range: tasks are 1-7 "
                             f"({', '.join(f'{n} {t}' for n, t in TASK_NAMES.items())})")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("give at least one task (1-7)")
    return tuple(sorted(out))


def resolve_device(device: str, cuda_available: bool) -> tuple[str, bool]:
    """-> (torch device string, reference backend?)."""
    d = str(device).strip().lower()
    if d == "auto":
        return ("cuda:0", False) if cuda_available else ("cpu", True)
    if d == "cpu":
        return "cpu", True
    m = re.fullmatch(r"cuda(?::(\d+))?", d)
    if not m:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not cuda_available:
        raise ValueError(f"device {device!r} needs CUDA, which is not available here; use --device cpu "
                         "(the reference backend) or auto")
    return f"cuda:{m.group(1) or 0}", False


def _probe_machine(index: int) -> dict:
    """machine_info in a worker, so the pipeline process itself never creates a CUDA context."""
    from ..hw import machine_info  # noqa: PLC0415

    return machine_info(index).to_dict()


def _cpu_view(info: MachineInfo) -> MachineInfo:
    """The reference backend runs on the CPU: describe (and tag) the machine as the CPU."""
    if not info.has_cuda:
        return info
    try:
        import os  # noqa: PLC0415
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem = 0.0
    return dataclasses.replace(info, gpu="CPU", gpu_full=platform.processor() or info.arch, cc="", cuda="",
                               driver="", memory_gb=mem)


def _check_options(o: PipelineOptions) -> None:
    if o.retry_failed and o.fresh:
        raise ValueError("--retry-failed and --fresh exclude each other (--fresh already reruns everything)")
    for name in ("timeout", "setup_timeout"):
        v = getattr(o, name)
        if v is not None and not v > 0:
            raise ValueError(f"{name.replace('_', '-')} must be a positive number of seconds, got {v}")
    for name in ("prefill_repeat", "decode_steps", "decode_prompt_len"):
        if getattr(o, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(o, name)}")
    for name in ("prefill_warmup", "decode_warmup", "check_layers", "seed"):
        if getattr(o, name) < 0:
            raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(o, name)}")
    if o.check_m is not None and o.check_m < 1:
        raise ValueError(f"check-m must be positive, got {o.check_m}")


# --- the run --------------------------------------------------------------------------------
class _Interrupted(KeyboardInterrupt):
    pass


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise _Interrupted()


class _Run:
    def __init__(self, opts: PipelineOptions, console, case_runners: Mapping[str, Callable] | None):
        import torch  # noqa: PLC0415

        from ..hw import machine_info  # noqa: PLC0415

        _check_options(opts)
        self.opts = opts
        self.console = console
        self.tasks = parse_tasks(opts.tasks)
        cuda = torch.cuda.is_available()
        device, reference = resolve_device(opts.device, cuda)
        self.reference = reference
        self.plan = BackendPlan(reference=reference, device=device,
                                search=None if reference else str(Path(opts.search)))
        models = list(opts.models) if opts.models else list(REFERENCE_MODELS if reference else DEFAULT_MODELS)
        prefill_m = opts.prefill_m or (REFERENCE_PREFILL_M if reference else DEFAULT_PREFILL_M)
        decode_m = opts.decode_m or (REFERENCE_DECODE_M if reference else DEFAULT_DECODE_M)
        self.defaults_used = {k: v is None or (k == "models" and not v) for k, v in
                              (("models", opts.models), ("prefill_m", opts.prefill_m),
                               ("decode_m", opts.decode_m))}
        self.matrix = Matrix.build(models, opts.dtypes, opts.patterns, prefill_m, decode_m)
        self.results = Path(opts.results)
        self.download_dir = Path(opts.download_dir)
        self._resolve_downloads()
        if not reference:
            self._check_shapes()
        self.runners = {"prefill": open_engine_case, "decode": open_engine_case, **(case_runners or {})}
        self.settings = BenchSettings(seed=opts.seed, prefill_warmup=opts.prefill_warmup,
                                      prefill_repeat=opts.prefill_repeat, decode_prompt_len=opts.decode_prompt_len,
                                      decode_steps=opts.decode_steps, decode_warmup=opts.decode_warmup,
                                      cuda_graphs=opts.cuda_graphs)
        # files of this run (nothing is written before the options are known to be good)
        self.logs = self.results / "logs"
        self.run_id, self.log_path, self.status_path = claim_run_files(self.logs)
        self.log = RunLog(self.log_path)
        self.log(f"slidesparse pipeline run {self.run_id}: {' '.join(opts.argv) or '(python call)'}")
        if cuda:
            res = call_isolated(_probe_machine, {"index": int(device.split(":")[1]) if ":" in device else 0},
                                log_path=self.log_path, timeout=opts.setup_timeout)
            if not res.ok:
                raise RuntimeError(f"could not query the GPU: {res.error.error_type}: {res.error.message}")
            info = MachineInfo(**res.value)
        else:
            info = machine_info()
        self.machine = _cpu_view(info) if reference else info
        # GB10 (sm_121a) with a Triton whose bundled ptxas predates it: point Triton at a system ptxas
        # before any worker is spawned (workers inherit the environment); recorded as a known issue
        ptxas_issue = None if reference else apply_ptxas_policy(self.log, cc=info.cc)
        self.hwtag = self.machine.tag()
        self.ledger = Ledger(ledger_path(self.results, self.hwtag))
        self.status = RunStatus(self.status_path, machine=self.machine.to_dict(), hwtag=self.hwtag,
                                argv=list(opts.argv), matrix=self.matrix.to_dict(self.plan),
                                reference_backend=reference, task_names=TASK_NAMES,
                                ledger=self._rel(self.ledger.path), results=str(opts.results))
        if ptxas_issue:
            self.status.add_issue(ptxas_issue["kind"], ptxas_issue["detail"])
        self.current_task: int | None = None
        self.current_case: str | None = None
        self.task_t0 = 0.0
        self.progress = None

    # --- set-up helpers -----------------------------------------------------------------
    def _resolve_downloads(self) -> None:
        for m in self.matrix.models:
            if m.kind != "hf" or 1 in self.tasks:
                continue
            try:
                path = hf_snapshot(m.spec, self.download_dir, local_only=True)
            except Exception:  # noqa: BLE001 - not in the cache
                raise FileNotFoundError(f"model {m.spec} is not downloaded to {self.download_dir}; add task 1 "
                                        "(--tasks 1,...) to download it, or pass a local model directory") from None
            self.matrix = self.matrix.replace_model(m.with_path(path))

    def _check_shapes(self) -> None:
        from ..models import check_gemm_shapes  # noqa: PLC0415

        for m in self.matrix.models:
            if m.kind == "hf" and m.path is None:
                continue  # checked in its worker once downloaded
            cfg = m.config()
            for role in self.matrix.roles():
                check_gemm_shapes(cfg, role)

    def _rel(self, p: Path) -> str:
        try:
            return str(Path(p).relative_to(self.results))
        except ValueError:
            return str(p)

    def say(self, text: str, style: str | None = None) -> None:
        from rich.text import Text  # noqa: PLC0415

        self.log(Text.from_markup(text).plain)
        (self.progress.console if self.progress is not None else self.console).print(text, style=style,
                                                                                        highlight=False)

    # --- the whole run --------------------------------------------------------------------
    def run(self) -> int:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._announce()
        interrupted = False
        old = None
        if _in_main_thread():
            old = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                          transient=False) as progress:
                self.progress = progress
                for n in ALL_TASKS:
                    self._task(n)
        except KeyboardInterrupt:
            interrupted = True
            if _in_main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
            self._interrupted()
        finally:
            self.progress = None
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        self.status.finish()
        self._summary()
        if interrupted and _in_main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.log.close()
        if interrupted:
            return EXIT_INTERRUPTED
        failed = [n for n in ALL_TASKS if self.status.task(n)["status"] == "FAILED"]
        return EXIT_FAILED if failed else EXIT_OK

    def _announce(self) -> None:
        m = self.matrix
        if self.reference:
            shrunk = [k for k, v in self.defaults_used.items() if v]
            self.say("[bold yellow]" + _e(
                f"No GPU backend: the plain-torch reference backend stands in for cuBLASLt and "
                f"cuSPARSELt, on the CPU ({self.machine.gpu_full}). Numbers are NOT GPU performance."
                + (f" Default matrix shrunk for the CPU ({', '.join(shrunk)}): models "
                   f"{', '.join(x.name for x in m.models)}, prefill M {list(m.prefill_m)}, "
                   f"decode M {list(m.decode_m)}." if shrunk else "")) + "[/]")
            self.status.add_issue("reference-backend",
                                  "no CUDA (or --device cpu): the reference backend stood in for both GEMM "
                                  "libraries; timings are CPU numbers, not GPU performance")
        else:
            self.say(f"[bold]GPU {_e(self.machine.gpu_full)}[/] " + _e(
                f"(cc {self.machine.cc}, CUDA {self.machine.cuda}), device {self.plan.device}, backends "
                f"cublaslt + cusparselt, tuning DB {self.opts.search}"))
        self.say(_e(f"run {self.run_id}: tasks {','.join(map(str, self.tasks))}; models "
                 f"{', '.join(x.name for x in m.models)}; dtypes {', '.join(m.qdtypes)}; dense + "
                 f"{', '.join(f'{p.paper} ({p.label})' for p in m.patterns) or 'no pattern'}; prefill M "
                 f"{list(m.prefill_m)}; decode M {list(m.decode_m)}"))
        self.say(_e(f"status {self.status_path}  log {self.log_path}  ledger {self.ledger.path}"))
        if self.opts.fresh:
            self.say("--fresh: the ledger is ignored; every (case, M) runs again")

    def _task(self, n: int) -> None:
        name = TASK_NAMES[n]
        if n not in self.tasks:
            self.status.task_set(n, "SKIPPED", f"not selected (--tasks {','.join(map(str, self.tasks))})")
            return
        self.current_task, self.task_t0 = n, time.monotonic()
        self.status.task_set(n, "RUNNING", "", start=iso_now())
        self.say(f"[bold]Task {n} {name}[/]")
        if n in STAGE_TASK.values():
            outcome = self._sweep("prefill" if n == 6 else "decode")
        else:
            outcome = self._simple_task(n)
        dur = time.monotonic() - self.task_t0
        self.status.task_set(n, outcome.status, outcome.reason, outcome.details, duration_s=dur)
        style = {"SUCCESS": "green", "FAILED": "bold red", "SKIPPED": "yellow"}[outcome.status]
        self.say(f"Task {n} {name}: [{style}]{outcome.status}[/] {_e(outcome.reason)} ({dur:.1f}s)")
        self.current_task = None

    def _simple_task(self, n: int) -> TaskOutcome:
        bar = self.progress.add_task(f"task {n} {TASK_NAMES[n]}", total=None)

        def progress(text: str, done: int, total: int) -> None:
            self.progress.update(bar, description=f"task {n}: {text}"[:60], completed=done, total=total)

        tlogs = self.logs / f"tasks_{self.hwtag}"
        ctx = TaskContext(matrix=self.matrix, plan=self.plan, settings=self.settings,
                          download_dir=self.download_dir, checkpoints_dir=Path(self.opts.checkpoints),
                          search_dir=Path(self.opts.search), logs_dir=tlogs, setup_timeout=self.opts.setup_timeout,
                          check_m=self.opts.check_m or min(self.matrix.prefill_m),
                          check_layers=self.opts.check_layers, log=self.log, progress=progress)
        try:
            if n == 1:
                outcome, self.matrix = task_download(ctx)
            elif n == 2:
                outcome = task_convert(ctx)
            elif n in (3, 4):
                outcome = task_tune(ctx, n)
            else:
                outcome = task_quick_check(ctx)
        finally:
            self.progress.remove_task(bar)
        return outcome

    # --- tasks 6 / 7: the case sweep ---------------------------------------------------------
    def _sweep(self, stage: str) -> TaskOutcome:
        cases = self.matrix.cases(stage)
        ms = self.matrix.m_values(stage)
        latest = {} if self.opts.fresh else self.ledger.latest()
        for p in self.ledger.problems:
            self.say(f"[yellow]{_e(f'ledger {self.ledger.path}:{p.line}: {p.reason}')}[/]")
            self.status.add_issue("ledger-unreadable-line", f"{self._rel(self.ledger.path)}:{p.line}: {p.reason}")
        plans: list[tuple[Case, list[int]]] = []
        resumed_n = skipped_failed_n = 0
        for case in cases:
            todo, resumed, failed_before, failures = [], [], [], []
            for M in ms:
                e = latest.get((case.id, M))
                if e is not None and e["status"] == "done":
                    resumed.append(M)
                elif e is not None and not self.opts.retry_failed:
                    failed_before.append(M)
                    failures.append({"M": M, "error_type": e["error_type"], "message": e["message"],
                                     "location": e["location"], "earlier": True})
                else:
                    todo.append(M)
            resumed_n += len(resumed)
            skipped_failed_n += len(failed_before)
            self.status.case_init(case, log=self._rel(self._case_log(case)), impl=self.plan.impl(case.pattern),
                                  resumed=resumed, failed_before=failed_before, failures_before=failures)
            plans.append((case, todo))
        self.status.write()
        if resumed_n:
            self.say(f"{resumed_n} (case, M) already done in the ledger: not rerun")
        if skipped_failed_n:
            self.say(f"[yellow]{skipped_failed_n} (case, M) failed in an earlier run and are skipped "
                     "(--retry-failed reruns them)[/]")
            self.status.add_issue("failed-earlier-skipped",
                                  f"{skipped_failed_n} {stage} (case, M) failed earlier and were not retried")
        total = sum(len(t) for _, t in plans)
        bar_cases = self.progress.add_task(f"{stage} cases", total=sum(1 for _, t in plans if t))
        bar_m = self.progress.add_task(f"{stage} M", total=total)
        try:
            for case, todo in plans:
                c = self.status.case(case.id)
                if not todo:
                    c["status"] = "FAILED" if c["failed_m"] else "SUCCESS"
                    continue
                self._run_one_case(case, todo, bar_m)
                self.progress.advance(bar_cases)
        finally:
            self.status.write()
        n_all = len(cases) * len(ms)
        failed = sum(len(self.status.case(c.id)["failed_m"]) for c in cases)
        done = sum(len(self.status.case(c.id)["done_m"]) for c in cases)
        details = {"cases": len(cases), "case_m": n_all, "done": done, "failed": failed, "resumed": resumed_n,
                   "skipped_failed": skipped_failed_n, "ran": total}
        if failed:
            extra = (f"; {skipped_failed_n} of them failed earlier and were not retried (--retry-failed)"
                     if skipped_failed_n else "")
            return TaskOutcome("FAILED", f"{failed} of {n_all} (case, M) failed{extra}", details)
        return TaskOutcome("SUCCESS", f"{done} of {n_all} (case, M) done ({resumed_n} from earlier runs)", details)

    def _case_log(self, case: Case) -> Path:
        return self.logs / f"cases_{self.hwtag}" / f"{case.file_stem}.log"

    def _run_one_case(self, case: Case, todo: list[int], bar_m) -> None:
        c = self.status.case(case.id)
        c["status"] = "RUNNING"
        self.current_case = case.id
        self.status.write()
        self.progress.update(bar_m, description=f"{case.id} (setup)"[:60])
        job = CaseJob(case=case, ms=tuple(todo), runner=self.runners[case.stage], plan=self.plan,
                      settings=self.settings, model=self.matrix.model(case.model),
                      log_path=str(self._case_log(case)))
        impl, ops = c["impl"], ""
        for ev in run_case(job, timeout=self.opts.timeout, setup_timeout=self.opts.setup_timeout):
            if ev.kind == "ready":
                impl, ops = ev.info.get("impl", impl), ev.info.get("ops", "")
                c["impl"], c["setup_s"] = impl, round(ev.duration_s, 3)
                self.status.write()
                self.log(f"{case.id}: engine ready in {ev.duration_s:.1f}s ({impl}, ops {ops})")
            elif ev.kind == "start":
                self.progress.update(bar_m, description=f"{case.id} M={ev.M}"[:60])
            elif ev.kind == "done":
                self._record_done(case, ev, impl, ops)
                self.progress.advance(bar_m)
            elif ev.kind == "failed":
                self._record_failed(case, ev, impl)
                self.progress.advance(bar_m)
        c["status"] = "FAILED" if c["failed_m"] else "SUCCESS"
        self.current_case = None
        self.status.write()

    def _result_row(self, case: Case, meas: dict, impl: str, ops: str) -> dict:
        from ..bench.results import provenance  # noqa: PLC0415

        m = self.machine
        row = {"model": case.model, "dtype": case.qdtype, "backend": case.backend, "impl": impl, "ops": ops,
               "device": m.gpu_full if m.has_cuda else f"CPU ({m.gpu_full})", "pattern": case.pattern_label,
               "pattern_paper": case.pattern.paper if case.pattern else "dense", "stage": case.stage,
               "method": "e2e", "case": case.id}
        row.update(meas)
        row.update({"seed": self.settings.seed, "hwtag": m.tag(case.qdtype), "reference_backend": self.reference,
                    "run": self.run_id})
        row.update(provenance())
        return row

    def _ledger_entry(self, case: Case, M: int, status: str, duration: float, impl: str, err=None) -> dict:
        return {"case": case.id, "stage": case.stage, "model": case.model, "dtype": case.qdtype,
                "backend": case.backend, "pattern": case.pattern_label, "M": M, "status": status,
                "error_type": err.error_type if err else None, "message": err.message if err else None,
                "location": err.location if err else None, "duration_s": round(duration, 3), "time_utc": None,
                "hwtag": self.hwtag, "impl": impl}

    def _record_done(self, case: Case, ev, impl: str, ops: str) -> None:
        from ..bench.results import write_result_rows  # noqa: PLC0415

        row = self._result_row(case, ev.row, impl, ops)
        write_result_rows(self.results, case.stage, self.machine.tag(case.qdtype), case.pattern, case.model, [row],
                          key=ROW_KEY)
        self.ledger.append(self._ledger_entry(case, ev.M, "done", ev.duration_s, impl))
        c = self.status.case(case.id)
        c["done_m"] = sorted(set(c["done_m"]) | {ev.M})
        c["failed_m"] = [m for m in c["failed_m"] if m != ev.M]
        c["skipped_failed_m"] = [m for m in c["skipped_failed_m"] if m != ev.M]
        c["failures"] = [f for f in c["failures"] if f["M"] != ev.M]
        c["duration_s"] = round(c["duration_s"] + ev.duration_s, 3)
        self.status.write()
        tps = ev.row.get("tokens_per_s")
        self.say(f"  [green]done[/] {_e(case.id)} M={ev.M}: "
                 + (f"{tps:,.1f} tokens/s" if isinstance(tps, (int, float)) else "measured")
                 + f" ({ev.duration_s:.1f}s)")

    def _record_failed(self, case: Case, ev, impl: str) -> None:
        err = ev.error
        self.ledger.append(self._ledger_entry(case, ev.M, "failed", ev.duration_s, impl, err))
        c = self.status.case(case.id)
        c["failed_m"] = sorted(set(c["failed_m"]) | {ev.M})
        c["done_m"] = [m for m in c["done_m"] if m != ev.M]
        c["failures"] = [f for f in c["failures"] if f["M"] != ev.M] + [
            {"M": ev.M, "error_type": err.error_type, "message": err.message, "location": err.location}]
        c["duration_s"] = round(c["duration_s"] + ev.duration_s, 3)
        self.status.write()
        self.say(f"  [bold red]FAILED[/] " + _e(
            f"{case.id} M={ev.M}: {err.error_type}: {err.message}" + (f" at {err.location}" if err.location else "")
            + f"  (log {self._rel(self._case_log(case))})"))

    # --- interruption and the summary ----------------------------------------------------
    def _interrupted(self) -> None:
        if self.current_task is not None:
            self.status.task_set(self.current_task, "INTERRUPTED", "interrupted (SIGINT/SIGTERM)",
                                 duration_s=time.monotonic() - self.task_t0)
        if self.current_case is not None:
            self.status.case(self.current_case)["status"] = "INTERRUPTED"
        for n in ALL_TASKS:
            t = self.status.task(n)
            if t["status"] == "PENDING":
                t["status"], t["reason"] = "SKIPPED", "not run: the pipeline was interrupted"
        self.status.write()
        self.log("interrupted: status written; finished (case, M) are in the ledger and results")
        self.console.print("[bold yellow]Interrupted[/]: nothing recorded is lost; rerun the same command to "
                           "resume (finished (case, M) are skipped).")

    def _summary(self) -> None:
        from rich.table import Table  # noqa: PLC0415

        cases = self.status.doc["cases"]
        t = Table(title=f"pipeline {self.run_id} [{self.hwtag}]")
        for col, just in (("task", "left"), ("status", "left"), ("time", "right"), ("reason", "left")):
            t.add_column(col, justify=just)
        for n in ALL_TASKS:
            tk = self.status.task(n)
            d = tk["duration_s"]
            t.add_row(f"{n} {tk['name']}", tk["status"], "-" if d is None else f"{d:.1f}s", _e(tk["reason"][:120]))
        self.console.print(t)
        if cases:
            ct = Table(title="cases (M done / failed)")
            for col in ("case", "status", "done M", "failed M", "time"):
                ct.add_column(col, justify="right" if col == "time" else "left")
            for cid, c in cases.items():
                fails = {f["M"]: f["error_type"] for f in c["failures"]}
                ct.add_row(_e(cid), c["status"], ",".join(map(str, c["done_m"])) or "-",
                           _e(", ".join(f"{m} ({fails.get(m, '?')})" for m in c["failed_m"])) or "-",
                           f"{c['duration_s']:.1f}s")
            self.console.print(ct)
        self.console.print(_e(f"status: {self.status_path}\nledger: {self.ledger.path}\nlog: {self.log_path}"))
        self.log("run finished")


def _in_main_thread() -> bool:
    import threading  # noqa: PLC0415

    return threading.current_thread() is threading.main_thread()


def run_pipeline(opts: PipelineOptions, *, console=None,
                 case_runners: Mapping[str, Callable] | None = None) -> PipelineRun:
    """Run the pipeline. ``case_runners`` maps a stage to a module-level function ``runner(CaseJob) ->
    CaseSession`` that replaces the engine runner (tests use it for deliberately slow or failing
    cases). Bad options raise ValueError / FileNotFoundError before anything is written."""
    if console is None:
        from rich.console import Console  # noqa: PLC0415
        console = Console(file=sys.stdout)
    r = _Run(opts, console, case_runners)
    code = r.run()
    return PipelineRun(code, r.run_id, r.status_path, r.log_path, r.ledger.path, r.status.doc)
