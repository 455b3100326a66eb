"""``slidesparse pipeline`` (tasks 1-7) and the end-to-end stage commands ``prefill_cmd`` /
``decode_cmd`` (thin wrappers running only task 6 / task 7), meant to be mounted as
``slidesparse bench prefill`` and ``slidesparse bench decode-e2e``.

Fault injection: SLIDESPARSE_CRASH_CASE=<glob>[,<glob>...] (fnmatch over case ids such as
``decode/qwen2.5-7b/INT8/cusparselt/2_8``) makes every matching case worker crash with os.abort()
as it starts, to exercise the crash handling (see slidesparse.pipeline.worker).
"""

from __future__ import annotations

import sys

import click

_CRASH_HELP = ("Fault injection: SLIDESPARSE_CRASH_CASE=<glob>[,<glob>...] (fnmatch over case ids) makes "
               "each matching case worker abort (SIGABRT) as it starts; the case is recorded FAILED and "
               "the sweep goes on.")

_CASE_HELP = ("Case ids: <stage>/<model>/<DTYPE>/cublaslt (dense baseline) or "
              "<stage>/<model>/<DTYPE>/cusparselt/<2_L>, e.g. decode/qwen2.5-7b/INT8/cusparselt/2_8.")

_FILES_HELP = ("Files: RESULTS/<stage>/<hwtag+dtype>/<cublaslt|cusparselt/2_L>/<model>_<stage>.{csv,json}; "
               "RESULTS/logs/ledger_<hwtag>.jsonl (one line per case x M; a rerun skips done ones); "
               "RESULTS/logs/pipeline_<ts>_status.json and pipeline_<ts>.log; per-case worker logs in "
               "RESULTS/logs/cases_<hwtag>/.")


def _timeout(value: float) -> float | None:
    return None if value == 0 else value


def _matrix_options(m_options):
    """--models/--dtypes/--patterns + the stage M option(s) + shared run options."""
    def deco(f):
        opts = [
            click.option("--models", default=None, metavar="LIST",
                         help="Models, comma-separated: built-in names (llama3.2-1b, llama3.2-3b, qwen2.5-7b, "
                              "qwen2.5-14b, tiny), Hugging Face model directories, or HF repo ids (org/name, "
                              "downloaded by task 1). [default: the four seed models on CUDA; tiny on the "
                              "reference backend]"),
            click.option("--dtypes", default="int8,fp8", show_default=True, metavar="LIST",
                         help="Quantized dtypes: int8, fp8."),
            click.option("--patterns", default="2:4,4:6,6:8,8:10", show_default=True, metavar="LIST",
                         help="Sparse patterns (2:8 == 2_8 == 6:8); the dense baseline always runs; "
                              "'none' = dense only."),
            *m_options,
            click.option("--results", default="results", show_default=True, type=click.Path(file_okay=False),
                         help="Results root (results, ledger, status, logs)."),
            click.option("--search", default="search", show_default=True, type=click.Path(file_okay=False),
                         help="Tuning DB root read by the GPU backends (and written by tasks 3-4)."),
            click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True,
                         help="Seconds one M may take before its worker is killed (FAILED 'Timeout'); 0 = none."),
            click.option("--setup-timeout", type=click.FloatRange(min=0), default=3600, show_default=True,
                         help="Seconds a worker may take to start and build its engine; 0 = none."),
            click.option("--retry-failed", is_flag=True,
                         help="Rerun (case, M) whose latest ledger line is failed (default: skip and report)."),
            click.option("--fresh", is_flag=True, help="Ignore the ledger: rerun every (case, M)."),
            click.option("--device", default="auto", show_default=True,
                         help="auto (cuda:0 if CUDA is available, else the CPU reference backend), cpu "
                              "(reference backend), cuda, cuda:N."),
            click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                         help="Seed of the synthetic weights and the inputs."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _patterns(text: str) -> list[str]:
    items = _split(text) or []
    return [] if [i.lower() for i in items] in ([], ["none"]) else items


def _m_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    from ..listopts import parse_int_list  # noqa: PLC0415

    return list(parse_int_list(text, what))


def _run(opts) -> None:
    from ..pipeline.runner import run_pipeline  # noqa: PLC0415 - heavy imports stay out of --help

    res = run_pipeline(opts)
    if res.exit_code:
        sys.exit(res.exit_code)


def _base_options(**kw):
    from ..pipeline.runner import PipelineOptions  # noqa: PLC0415

    return PipelineOptions(
        models=_split(kw["models"]), dtypes=_split(kw["dtypes"]) or [], patterns=_patterns(kw["patterns"]),
        results=kw["results"], search=kw["search"], timeout=_timeout(kw["timeout"]),
        setup_timeout=_timeout(kw["setup_timeout"]), retry_failed=kw["retry_failed"], fresh=kw["fresh"],
        device=kw["device"], seed=kw["seed"], argv=["slidesparse", *sys.argv[1:]])


@click.command("pipeline", epilog=f"{_CASE_HELP}\n\n{_FILES_HELP}\n\n{_CRASH_HELP}")
@click.option("--tasks", default="1-7", show_default=True, metavar="LIST",
              help="Tasks to run, e.g. 5,6,7 or 1-4: 1 download, 2 convert, 3 tune-coarse, 4 tune-fine, "
                   "5 quick check, 6 prefill, 7 decode.")
@_matrix_options([
    click.option("--prefill-m", default=None, metavar="LIST",
                 help="Prefill M values (tokens per forward). [default: 512,...,65536; 64,256 on the reference "
                      "backend]"),
    click.option("--decode-m", default=None, metavar="LIST",
                 help="Decode batch sizes M. [default: 64,128,256,512; 4,8 on the reference backend]"),
])
@click.option("--download-dir", default="checkpoints/hf", show_default=True, type=click.Path(file_okay=False),
              help="Task 1: Hugging Face download cache.")
@click.option("--checkpoints", default="checkpoints", show_default=True, type=click.Path(file_okay=False),
              help="Task 2: where converted checkpoints go.")
@click.option("--prefill-repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed prefill forwards per M (median reported).")
@click.option("--decode-steps", type=click.IntRange(min=1), default=64, show_default=True,
              help="Timed decode steps per M (median reported).")
@click.option("--check-m", type=click.IntRange(min=1), default=None,
              help="Task 5: prefill M of the sparse-vs-dense check. [default: the smallest prefill M]")
@click.option("--check-layers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Task 5: decoder layers built for the check (0 = all).")
def pipeline(tasks, models, dtypes, patterns, prefill_m, decode_m, results, search, timeout, setup_timeout,
             retry_failed, fresh, device, seed, download_dir, checkpoints, prefill_repeat, decode_steps,
             check_m, check_layers) -> None:
    """Run the benchmark pipeline: 1 download, 2 convert, 3 tune-coarse, 4 tune-fine, 5 quick check
    (sparse vs pruned-dense logits), 6 prefill, 7 decode, over models x dtypes x (dense + patterns) x M.

    Every case (stage, model, dtype, dense | pattern) runs in its own worker process that builds the
    engine once and measures all its M values; a crash, CUDA error, OOM or timeout is recorded as a
    FAILED (case, M) with its error type and location, and the sweep goes on. The ledger makes a
    rerun of the same command resume where it stopped. Without CUDA the plain-torch reference
    backend stands in for cuBLASLt/cuSPARSELt (default matrix: tiny, small M) and says so.
    Ctrl-C: the status is written (task INTERRUPTED) and the exit code is 130; exit code 1 when a
    task FAILED.

    \b
    Examples:
      slidesparse pipeline                                   # everything, default matrix
      slidesparse pipeline --tasks 5-7 --models qwen2.5-7b --dtypes int8 --patterns 6:8
      slidesparse pipeline --tasks 6 --retry-failed          # rerun what failed before
    """
    from ..pipeline.runner import parse_tasks  # noqa: PLC0415

    o = _base_options(models=models, dtypes=dtypes, patterns=patterns, results=results, search=search,
                      timeout=timeout, setup_timeout=setup_timeout, retry_failed=retry_failed, fresh=fresh,
                      device=device, seed=seed)
    o.tasks = parse_tasks(tasks)
    o.prefill_m = _m_list(prefill_m, "prefill M values")
    o.decode_m = _m_list(decode_m, "decode M values")
    o.download_dir, o.checkpoints = download_dir, checkpoints
    o.prefill_repeat, o.decode_steps = prefill_repeat, decode_steps
    o.check_m, o.check_layers = check_m, check_layers
    _run(o)


@click.command("prefill", epilog=f"{_CASE_HELP}\n\n{_FILES_HELP}\n\n{_CRASH_HELP}")
@_matrix_options([
    click.option("--m", "ms", default=None, metavar="LIST",
                 help="Prefill M values (tokens per forward; M > 1024 runs ceil(M/1024) sequences of 1024). "
                      "[default: 512,...,65536; 64,256 on the reference backend]"),
])
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed forwards per M (median reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True, help="Untimed forwards per M.")
def prefill_cmd(models, dtypes, patterns, ms, results, search, timeout, setup_timeout, retry_failed, fresh,
                device, seed, repeat, warmup) -> None:
    """End-to-end prefill throughput (tokens/s) of the decoder engine, dense vs each pattern: the
    pipeline's task 6 alone (worker per case, ledger, resume)."""
    o = _base_options(models=models, dtypes=dtypes, patterns=patterns, results=results, search=search,
                      timeout=timeout, setup_timeout=setup_timeout, retry_failed=retry_failed, fresh=fresh,
                      device=device, seed=seed)
    o.tasks = (6,)
    o.prefill_m = _m_list(ms, "prefill M values")
    o.prefill_repeat, o.prefill_warmup = repeat, warmup
    _run(o)


@click.command("decode-e2e", epilog=f"{_CASE_HELP}\n\n{_FILES_HELP}\n\n{_CRASH_HELP}")
@_matrix_options([
    click.option("--m", "ms", default=None, metavar="LIST",
                 help="Decode batch sizes M. [default: 64,128,256,512; 4,8 on the reference backend]"),
])
@click.option("--steps", type=click.IntRange(min=1), default=64, show_default=True,
              help="Timed decode steps per M (median reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed steps per M.")
@click.option("--prompt-len", type=click.IntRange(min=1), default=16, show_default=True,
              help="Prompt tokens prefilled before the decode steps.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=True, show_default=True,
              help="Replay one decode step as a CUDA graph (GPU only).")
def decode_cmd(models, dtypes, patterns, ms, results, search, timeout, setup_timeout, retry_failed, fresh,
               device, seed, steps, warmup, prompt_len, cuda_graphs) -> None:
    """End-to-end decode throughput (tokens/s at batch M) of the decoder engine, dense vs each pattern:
    the pipeline's task 7 alone (worker per case, ledger, resume)."""
    o = _base_options(models=models, dtypes=dtypes, patterns=patterns, results=results, search=search,
                      timeout=timeout, setup_timeout=setup_timeout, retry_failed=retry_failed, fresh=fresh,
                      device=device, seed=seed)
    o.tasks = (7,)
    o.decode_m = _m_list(ms, "decode M values")
    o.decode_steps, o.decode_warmup, o.decode_prompt_len, o.cuda_graphs = steps, warmup, prompt_len, cuda_graphs
    _run(o)
