"""Worker processes: every benchmark case, and every task step that may crash, runs in a fresh process.

Case workers (``run_case``): one ``multiprocessing`` *spawn* process per case builds the engine
ONCE and loops over the case's M values. Before each M it announces ``("start", M)`` (also written
to the case log as ``starting M=...``); after it, ``("done", M, row, seconds)``. The parent turns
these into result rows and ledger lines as they arrive. Any failure of the worker

  * a Python exception (CUDA errors and torch.OutOfMemoryError included) -> error type = the
    exception class (``torch.OutOfMemoryError``; builtins unqualified: ``RuntimeError``),
  * death by a signal (segfault, ``os.abort``, the OOM killer) -> ``Signal SIGSEGV`` / ``SIGABRT`` /
    ``SIGKILL``; an exit without a word -> ``Exit code N``,
  * the per-M time limit -> ``Timeout`` (the worker's stacks are dumped first, then it is killed),

becomes a FAILED outcome for the M being run, with a message and a location: ``file:line`` of the
innermost frame of the worker's stack that lies in slidesparse's source (this harness module
excluded), else the innermost frame. For signals and timeouts the stack comes from ``faulthandler``,
which every worker enables writing to its per-case log (``<results>/logs/cases_<hwtag>/<case>.log``,
which also receives the worker's stdout/stderr). The parent then starts a fresh worker for the case's
remaining M values. A failure before the first M (engine build) fails all remaining M values of the
case with that error: no M was running, and a fresh worker would build the same engine. A death
between two M values (after one was reported, before the next was announced) is charged to the next.

Time limits: ``setup_timeout`` covers process start + engine build, ``timeout`` each M (its clock
starts at the M's announcement). ``None`` = no limit.

Workers ignore SIGINT (the parent handles Ctrl-C and kills them) and exit by themselves when the
parent dies (a watchdog thread checks the parent pid), so a SIGKILLed pipeline leaves no orphan.

Fault injection (testing the harness on a real run): the environment variable
``SLIDESPARSE_CRASH_CASE=<glob>[,<glob>...]`` (fnmatch over case ids, e.g. ``decode/*/INT8/*``)
makes each matching case worker crash hard with ``os.abort()`` when it starts its case. It is read
here, in the case worker's entry point, and nowhere else.

``call_isolated`` runs one function (a task step: quick check, conversion, tuning) the same way and
returns its value or its failure.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import fnmatch
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CRASH_ENV = "SLIDESPARSE_CRASH_CASE"
_DUMP_WAIT_S = 1.0        # after asking a timed-out worker for its stacks, before killing it
_WATCHDOG_PERIOD_S = 0.5
_MESSAGE_CHARS = 600

_PKG_DIR = Path(__file__).resolve().parent.parent          # .../slidesparse
_HARNESS = {Path(__file__).resolve()}                       # frames never blamed for a failure


# --- failures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerError:
    error_type: str
    message: str
    location: str | None
    M: int | None = None      # the M being run; None = before the first M (setup)
    traceback: str = ""


def error_type_of(e: BaseException) -> str:
    cls = type(e)
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"


def short_message(text: str) -> str:
    msg = " ".join(str(text).split())
    return msg if len(msg) <= _MESSAGE_CHARS else msg[:_MESSAGE_CHARS - 3] + "..."


def display_path(filename: str) -> str:
    """slidesparse files as 'slidesparse/x.py'; others relative to their sys.path entry when one
    holds them ('torch/nn/functional.py'), else as given."""
    try:
        p = Path(filename).resolve()
    except (OSError, ValueError):
        return filename
    if p.is_relative_to(_PKG_DIR):
        return str(Path(_PKG_DIR.name) / p.relative_to(_PKG_DIR))
    best = None
    for entry in sys.path:
        if not entry:
            continue
        try:
            base = Path(entry).resolve()
        except (OSError, ValueError):
            continue
        if p.is_relative_to(base) and (best is None or len(base.parts) > len(best.parts)):
            best = base
    return str(p.relative_to(best)) if best is not None else filename


def _is_blamable(filename: str) -> bool:
    try:
        p = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return p.is_relative_to(_PKG_DIR) and p not in _HARNESS


def location_of(frames: list[tuple[str, int]]) -> str | None:
    """frames innermost LAST -> 'file:line' (innermost slidesparse frame, else innermost frame)."""
    if not frames:
        return None
    for fn, line in reversed(frames):
        if _is_blamable(fn):
            return f"{display_path(fn)}:{line}"
    fn, line = frames[-1]
    return f"{display_path(fn)}:{line}"


def traceback_location(tb) -> str | None:
    return location_of([(f.filename, f.lineno) for f in traceback.extract_tb(tb)])


_THREAD_RE = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+)")
_FRAME_RE = re.compile(r'^\s+File "(.+)", line (\d+),? in ')
_TRACEBACK = "Traceback (most recent call last):"
_MAIN_RE = re.compile(r"^worker main thread (0x[0-9a-fA-F]+)$", re.M)


def parse_faulthandler(text: str, *, prefer_main: bool = False) -> tuple[str | None, str | None]:
    """A worker log's tail -> (fatal error line, location).

    From a faulthandler dump the location is taken from the thread that faulted ("Current thread"),
    else from the worker's main thread (its id is logged at start), else from any dumped thread —
    with ``prefer_main`` (a dump on request, for a timeout) the main thread comes first. The first
    of these threads with a frame in slidesparse's source gives it, else the first one's innermost
    frame. A log without a dump falls back to its last Python traceback. See ``location_of``."""
    fatal = None
    blocks: list[tuple[str, str, list[tuple[str, int]]]] = []  # (kind, id, frames most recent first)
    tb: list[tuple[str, int]] | None = None                    # last Python traceback, innermost last
    in_tb = False
    for line in text.splitlines():
        if line.startswith(_TRACEBACK):
            tb, in_tb = [], True
            continue
        f = _FRAME_RE.match(line)
        if in_tb:
            if f:
                tb.append((f.group(1), int(f.group(2))))
                continue
            if not line.startswith(" "):
                in_tb = False
        if line.startswith("Fatal Python error:"):
            fatal = line.strip()
            blocks = []  # the dump that matters follows its header
            continue
        m = _THREAD_RE.match(line)
        if m:
            blocks.append((m.group(1), m.group(2).lower(), []))
            continue
        if f and blocks:
            blocks[-1][2].append((f.group(1), int(f.group(2))))
    if not blocks:
        return fatal, location_of(tb) if tb else None
    mains = _MAIN_RE.findall(text)
    main_id = mains[-1].lower() if mains else None

    def rank(b):
        current, main = b[0] == "Current thread", b[1] == main_id
        if prefer_main:
            return 0 if main else 1 if current else 2
        return 0 if current else 1 if main else 2

    ordered = sorted(blocks, key=rank)
    for kind, _, frames in ordered:
        inner_last = list(reversed(frames))
        if any(_is_blamable(fn) for fn, _ in inner_last):
            return fatal, location_of(inner_last)
    first = next((b for b in ordered if b[2]), ordered[0])
    return fatal, location_of(list(reversed(first[2])))


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


# --- the worker side ------------------------------------------------------------------------
def _prepare_child(log_path: str) -> None:
    """Ignore Ctrl-C, send stdout/stderr and faulthandler to the log, exit when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if hasattr(faulthandler, "register"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    print(f"=== worker pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    print(f"worker main thread 0x{threading.get_ident():016x}", flush=True)
    parent = os.getppid()

    def watchdog():
        while True:
            time.sleep(_WATCHDOG_PERIOD_S)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _send(conn, msg) -> None:
    try:
        conn.send(msg)
    except (BrokenPipeError, EOFError, OSError):
        os._exit(71)  # the parent is gone


def _fail_and_exit(conn, e: BaseException, M: int | None) -> None:
    tb = traceback.format_exc()
    print(tb, file=sys.stderr, flush=True)
    _send(conn, ("error", M, error_type_of(e), short_message(str(e) or type(e).__name__),
                 traceback_location(e.__traceback__), tb))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # no interpreter teardown: a broken CUDA context can hang it


@dataclass
class CaseSession:
    """What a case runner returns: ``measure(M) -> row dict`` and facts for the ledger/status."""

    measure: Callable[[int], dict]
    info: dict


@dataclass(frozen=True)
class CaseJob:
    """Everything a case worker needs (pickled to the spawned process).

    runner: ``runner(job) -> CaseSession``, a module-level function (pickled by reference)."""

    case: Any                  # cases.Case
    ms: tuple[int, ...]
    runner: Callable
    plan: Any                  # cases.BackendPlan
    settings: Any              # cases.BenchSettings
    model: Any                 # cases.ModelSource
    log_path: str


def case_worker_main(conn, job: CaseJob) -> None:
    """Entry point of a case worker process (see the module docstring)."""
    _prepare_child(job.log_path)
    case_id = str(job.case.id)
    print(f"case {case_id}: M = {', '.join(map(str, job.ms))}", flush=True)
    M = None
    try:
        crash = os.environ.get(CRASH_ENV, "")
        globs = [g.strip() for g in crash.split(",") if g.strip()]
        if any(fnmatch.fnmatchcase(case_id, g) for g in globs):
            print(f"{CRASH_ENV}={crash!r} matches {case_id}: aborting (fault injection)", flush=True)
            os.abort()
        session = job.runner(job)
        _send(conn, ("ready", dict(session.info)))
        for M in job.ms:
            _send(conn, ("start", M))
            print(f"starting M={M}", flush=True)
            t = time.perf_counter()
            row = session.measure(M)
            dt = time.perf_counter() - t
            print(f"done M={M} in {dt:.2f}s", flush=True)
            _send(conn, ("done", M, row, dt))
            M = None
        _send(conn, ("finished",))
    except BaseException as e:  # noqa: BLE001 - every failure is reported, none kills the sweep
        _fail_and_exit(conn, e, M)
    conn.close()


def call_worker_main(conn, fn: Callable, kwargs: dict, log_path: str, progress_kw: str | None) -> None:
    """Entry point of an isolated call: ``fn(**kwargs)`` (plus ``progress_kw=<sender>``)."""
    _prepare_child(log_path)
    print(f"call {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}", flush=True)
    try:
        if progress_kw:
            kwargs = {**kwargs, progress_kw: lambda *a: _send(conn, ("progress", a))}
        value = fn(**kwargs)
        _send(conn, ("result", value))
    except BaseException as e:  # noqa: BLE001
        _fail_and_exit(conn, e, None)
    conn.close()


# --- the parent side ------------------------------------------------------------------------
def _log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _log_since(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _supervise(target, args: tuple, log_path: str, setup_limit: float | None,
               step_limit: float | None) -> Iterator[tuple]:
    """Start a spawned worker and yield its messages; ends with the worker's last message or with
    ("died", exitcode, log text) / ("timeout", seconds, log text). A ("start", M) message restarts
    the clock with ``step_limit``; before the first one ``setup_limit`` applies."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    offset = _log_size(log_path)
    proc = ctx.Process(target=target, args=(send, *args), name="slidesparse-worker", daemon=True)
    proc.start()
    send.close()
    limit, since = setup_limit, time.monotonic()
    try:
        while True:
            left = None if limit is None else limit - (time.monotonic() - since)
            if left is not None and left <= 0:
                elapsed = time.monotonic() - since
                if proc.is_alive() and hasattr(signal, "SIGUSR1"):
                    try:
                        os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: dump the stacks to the log
                        time.sleep(_DUMP_WAIT_S)
                    except ProcessLookupError:
                        pass
                proc.kill()
                proc.join()
                yield ("timeout", elapsed, _log_since(log_path, offset))
                return
            ready = multiprocessing.connection.wait([recv, proc.sentinel], timeout=left)
            if not ready:
                continue
            if recv in ready or recv.poll():
                try:
                    msg = recv.recv()
                except EOFError:
                    msg = None
                if msg is not None:
                    if msg[0] == "start":
                        limit, since = step_limit, time.monotonic()
                    yield msg
                    if msg[0] in ("finished", "result", "error"):
                        proc.join(timeout=60)
                        return
                    continue
            proc.join(timeout=60)  # the pipe closed or the process ended without a final word
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            yield ("died", proc.exitcode, _log_since(log_path, offset))
            return
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        recv.close()


def _death_error(kind: str, value, log_text: str, M: int | None, where: str) -> WorkerError:
    fatal, loc = parse_faulthandler(log_text, prefer_main=kind == "timeout")
    if kind == "timeout":
        return WorkerError("Timeout", f"no result after {value:.1f}s {where}; worker killed "
                           "(its stacks are in the case log)", loc, M, log_text[-4000:])
    code = value
    if code is not None and code < 0:
        etype = f"Signal {_signal_name(-code)}"
        msg = f"worker killed by {_signal_name(-code)} {where}"
        if -code == signal.SIGKILL:
            msg += " (killed from outside: out of host memory?)"
    else:
        etype = f"Exit code {code}"
        msg = f"worker exited with code {code} {where} without reporting a result"
    if fatal:
        msg += f" ({fatal})"
    return WorkerError(etype, short_message(msg), loc, M, log_text[-4000:])


@dataclass(frozen=True)
class CaseEvent:
    """What the parent learns about a case: kind 'ready' (info), 'start' (M), 'done' (M, row,
    duration_s), 'failed' (M, error, duration_s)."""

    kind: str
    M: int | None = None
    row: dict | None = None
    duration_s: float = 0.0
    error: WorkerError | None = None
    info: dict | None = None


def run_case(job: CaseJob, *, timeout: float | None, setup_timeout: float | None) -> Iterator[CaseEvent]:
    """Run ``job`` in spawned workers until every M has an outcome (see the module docstring)."""
    remaining = list(job.ms)
    while remaining:
        sub = dataclasses.replace(job, ms=tuple(remaining))
        current, started = None, time.monotonic()
        setup_started, measured = started, 0
        for msg in _supervise(case_worker_main, (sub,), job.log_path, setup_timeout, timeout):
            kind = msg[0]
            if kind == "ready":
                yield CaseEvent("ready", info=msg[1], duration_s=time.monotonic() - setup_started)
            elif kind == "start":
                current, started = msg[1], time.monotonic()
                yield CaseEvent("start", M=current)
            elif kind == "done":
                remaining.remove(msg[1])
                measured += 1
                yield CaseEvent("done", M=msg[1], row=msg[2], duration_s=msg[3])
                current, started = None, time.monotonic()
            elif kind == "finished":
                break
            else:  # error / died / timeout
                if kind == "error":
                    _, m, etype, message, loc, tb = msg
                    err = WorkerError(etype, message, loc, current if m is None else m, tb)
                else:
                    where = (f"while running M={current}" if current is not None else
                             "during setup (before the first M)" if not measured else
                             f"after M={_last_done(job.ms, remaining)}, before the next M")
                    err = _death_error(kind, msg[1], msg[2], current, where)
                if current is None and measured:
                    # died between two M values: the next one takes the failure, a fresh worker the rest
                    current = remaining[0]
                    err = dataclasses.replace(err, M=current)
                if current is None:  # setup failed: every remaining M fails with it
                    dur = time.monotonic() - setup_started
                    for M in remaining:
                        yield CaseEvent("failed", M=M, error=dataclasses.replace(err, M=M), duration_s=dur)
                    remaining = []
                else:
                    remaining.remove(current)
                    yield CaseEvent("failed", M=current, error=err, duration_s=time.monotonic() - started)
                break
        else:
            # the supervisor ended without 'finished' or a failure: cannot happen, but never loop forever
            for M in remaining:
                yield CaseEvent("failed", M=M, error=WorkerError("Exit code ?", "worker ended without a result",
                                                                 None, M), duration_s=0.0)
            remaining = []


def _last_done(ms: tuple[int, ...], remaining: list[int]) -> int | None:
    done = [m for m in ms if m not in remaining]
    return done[-1] if done else None


@dataclass(frozen=True)
class CallResult:
    ok: bool
    value: Any = None
    error: WorkerError | None = None
    duration_s: float = 0.0


def call_isolated(fn: Callable, kwargs: dict, *, log_path: str | os.PathLike, timeout: float | None = None,
                  progress_kw: str | None = None, on_progress: Callable | None = None) -> CallResult:
    """Run ``fn(**kwargs)`` in a spawned worker (fn and kwargs picklable, fn module-level).

    With ``progress_kw``, fn gets a callable under that name; each call's arguments reach
    ``on_progress(*args)`` in the parent."""
    t0 = time.monotonic()
    for msg in _supervise(call_worker_main, (fn, kwargs, str(log_path), progress_kw), str(log_path),
                          timeout, timeout):
        kind = msg[0]
        if kind == "progress":
            if on_progress is not None:
                on_progress(*msg[1])
        elif kind == "result":
            return CallResult(True, msg[1], duration_s=time.monotonic() - t0)
        elif kind == "error":
            _, _, etype, message, loc, tb = msg
            return CallResult(False, error=WorkerError(etype, message, loc, None, tb),
                              duration_s=time.monotonic() - t0)
        else:
            return CallResult(False, error=_death_error(kind, msg[1], msg[2], None, "during the call"),
                              duration_s=time.monotonic() - t0)
    return CallResult(False, error=WorkerError("Exit code ?", "worker ended without a result", None),
                      duration_s=time.monotonic() - t0)
