"""``slidesparse tune coarse|fine``: search the GEMM libraries' algorithms into the tuning DB.

coarse = cuBLASLt (the dense baseline) on the models' own (N, K) (K padded to 32);
fine   = cuSPARSELt on the slid (N, K') of every --patterns entry.
Both use the same M list by default, so dense and sparse are tuned equally well at every M.
Results: ``<search>/<hwtag>/{cublaslt,cusparselt}_<DTYPE>.json`` (see gemm.tuning_db); a rerun
skips every (N, K, M) already there.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._lists import int_values

DEFAULT_MS = "64,128,256,512,1024,2048,4096,8192,16384,32768,65536"
DEFAULT_PATTERNS = "2_4,2_6,2_8,2_10"


def _split_ks(text: str) -> list[int]:
    try:
        vals = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"--split-k must be a comma-separated list of integers, got {text!r}") from None
    if not vals or any(v == 0 or v < -1 for v in vals):
        raise click.BadParameter(f"--split-k values are 1, -1 (library heuristic) or n > 1, got {text!r}")
    return vals


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def resolve_shapes(models: list[str], shapes: list[str]) -> list[tuple[int, int]]:
    """The model linears' (N, K) (K as the dense GEMM sees it, padded to 32) plus explicit N,K pairs."""
    from ..models import get_model  # noqa: PLC0415
    from ..ops import gemm_k  # noqa: PLC0415

    out: list[tuple[int, int]] = []
    for name in models:
        for n, k in get_model(name).linear_shapes().values():
            if (n, gemm_k(k, None)) not in out:
                out.append((n, gemm_k(k, None)))
    for s in shapes:
        parts = s.lower().replace("x", ",").split(",")
        try:
            n, k = (int(p) for p in parts)
        except ValueError:
            raise click.BadParameter(f"--shape takes N,K (e.g. 4608,3584), got {s!r}") from None
        if n <= 0 or k <= 0:
            raise click.BadParameter(f"--shape needs positive N and K, got {s!r}")
        if (n, k) not in out:
            out.append((n, k))
    if not out:
        raise click.UsageError("give at least one --model or --shape")
    return out


def _out_dtypes(library: str, qdtype: str, text: str):
    from ..gemm.plan_cache import dtype_name, name_dtype  # noqa: PLC0415

    legal = {("cublaslt", "int8"): ("int32",), ("cublaslt", "fp8"): ("bfloat16", "float32"),
             ("cusparselt", "int8"): ("int32", "bfloat16"), ("cusparselt", "fp8"): ("bfloat16", "float32")}
    allowed = legal[(library, qdtype)]
    if text == "auto":  # sparse INT8: int32 for the GEMM-alone view, bfloat16 for what the engine runs
        return [name_dtype(a) for a in (allowed if (library, qdtype) == ("cusparselt", "int8") else allowed[:1])]
    out = []
    for name in text.split(","):
        dt = name_dtype(name)
        if dtype_name(dt) not in allowed:
            raise click.BadParameter(f"{library} cannot write {dtype_name(dt)} from {qdtype}; "
                                     f"legal: {', '.join(allowed)}")
        out.append(dt)
    return out


def _common(f):
    opts = [
        click.option("--model", "models", multiple=True,
                     help="built-in model name or HF model dir (repeat or comma list)"),
        click.option("--shape", "shapes", multiple=True, help="extra GEMM shape N,K (repeatable)"),
        click.option("--dtype", "dtypes", default="int8,fp8", show_default=True, help="input dtypes: int8, fp8"),
        click.option("--m", "m_text", default=DEFAULT_MS, show_default=True, help="M values (comma list)"),
        click.option("--out-dtype", "out_text", default="auto", show_default=True,
                     help="GEMM output dtype(s); auto = int32 for INT8 (cuSPARSELt: int32 and bfloat16, "
                          "the engine's sparse INT8 output), bfloat16 for FP8"),
        click.option("--search", "search_dir", type=click.Path(path_type=Path), default=Path("search"),
                     show_default=True, help="tuning DB root (files go to <search>/<hwtag>/)"),
        click.option("--warmup", default=5, show_default=True, type=click.IntRange(0)),
        click.option("--repeat", default=30, show_default=True, type=click.IntRange(1)),
        click.option("--no-flush-l2", is_flag=True, help="do not flush L2 between timed calls"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _prepare(dtypes: str, m_text: str):
    from ..quant import parse_qdtype  # noqa: PLC0415

    qds = []
    for d in dtypes.split(","):
        if d.strip():
            try:
                qds.append(parse_qdtype(d))
            except ValueError as e:
                raise click.BadParameter(str(e)) from None
    return qds, int_values(m_text, "--m")


def _require_gpu() -> None:
    import torch  # noqa: PLC0415

    from ..ptxas import apply_ptxas_policy  # noqa: PLC0415

    if not torch.cuda.is_available():
        raise RuntimeError("tuning times GEMMs on the GPU, but no CUDA device is visible "
                           f"(torch {torch.__version__}); run `slidesparse tune` on the GPU machine")
    apply_ptxas_policy(lambda m: click.echo(m, err=True))  # GB10: a ptxas that knows sm_121a, for Triton


def _run(library: str, jobs, ms, search_dir: Path, warmup: int, repeat: int, flush: bool, extra: dict):
    """jobs: [(qdtype, out_dtype, [(N, K), ...])]."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from ..gemm.tuning import tune_cublaslt, tune_cusparselt  # noqa: PLC0415
    from ..gemm.tuning_db import TuningStore  # noqa: PLC0415

    store = TuningStore(search_dir)
    total = sum(len(shapes) * len(ms) for _, _, shapes in jobs)
    if library == "cublaslt":
        from ..gemm.cublaslt import CublasLtBackend  # noqa: PLC0415
        fn, backend = tune_cublaslt, CublasLtBackend()
    else:
        from ..gemm.cusparselt import CusparseLtBackend  # noqa: PLC0415
        fn, backend = tune_cusparselt, CusparseLtBackend()
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"{library}", total=total)

        def step(desc: str) -> None:
            bar.update(task, description=desc)

        for qd, out_dtype, shapes in jobs:
            db = store.db(library, qd)
            for n, k in shapes:
                s = fn([(n, k)], ms, qd, out_dtype, db=db, backend=backend, warmup=warmup, repeat=repeat,
                       flush_l2=flush, progress=step, **extra)
                bar.advance(task, len(ms))
                results.append((qd, out_dtype, s))
    tuned = sum(len(s.tuned) for *_, s in results)
    skipped = sum(len(s.skipped) for *_, s in results)
    failed = [f for *_, s in results for f in s.failed]
    rejected = sum(s.rejected for *_, s in results)
    click.echo(f"{library}: tuned {tuned}, already present {skipped}, failed {len(failed)} "
               f"({rejected} candidates rejected) -> {store.folder}")
    for n, k, m, why in failed:
        click.echo(f"  failed N={n} K={k} M={m}: {why}", err=True)


def _tune_kernels(models: list[str], roles: list, jobs, ms, search_dir: Path) -> None:
    """The Triton kernels the models' engines launch, for each dtype of ``jobs`` (dequant with the
    accumulator the engine runs: bfloat16 where a job has it, else int32), into
    <search>/<hwtag>/kernels.json."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from ..kernels.tune import tune_model_kernels  # noqa: PLC0415
    from ..models import get_model  # noqa: PLC0415

    if not models:
        click.echo("triton kernels: skipped (they are tuned for --model sizes; only --shape was given)")
        return
    cfgs = [get_model(m) for m in models]
    import torch  # noqa: PLC0415

    first = {}
    for qd, od, _ in jobs:  # the dequant runs on what the engine's GEMM writes: bfloat16 when it is tuned
        if qd not in first or od == torch.bfloat16:  # (sparse INT8's epilogue, FP8), else int32
            first[qd] = od
    lines = []
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("triton kernels")
        for qd, od in first.items():
            lines += tune_model_kernels(cfgs, roles, qd, od, ms, search_dir=search_dir,
                                        progress=lambda text: bar.update(task, description=text))
    click.echo(f"triton kernels: {len(lines)} kernel sets tuned -> {search_dir}/<hwtag>/kernels.json")


@click.group("tune")
def tune() -> None:
    """Search the fastest GEMM algorithm per shape and M into the tuning DB (needs a GPU).

    With --model, each stage also tunes the Triton activation kernels' launch configs for the
    models' sizes: coarse the dense quant / fused-producer kernels and dequant, fine the lifting
    ones for each pattern (--no-kernels: GEMMs only)."""


@tune.command("coarse")
@_common
@click.option("--max-candidates", default=128, show_default=True, type=click.IntRange(1, 1024),
              help="heuristic algorithms timed per shape")
@click.option("--kernels/--no-kernels", default=True, show_default=True,
              help="also tune the dense Triton quant kernels and dequant for the --model sizes")
def coarse(models, shapes, dtypes, m_text, out_text, search_dir, warmup, repeat, no_flush_l2, max_candidates,
           kernels):
    """cuBLASLt (dense): time every heuristic candidate for the models' (N, K)."""
    nk = resolve_shapes(_split(models), list(shapes))
    qds, ms = _prepare(dtypes, m_text)
    jobs = [(qd, od, nk) for qd in qds for od in _out_dtypes("cublaslt", qd, out_text)]
    _require_gpu()
    _run("cublaslt", jobs, ms, search_dir, warmup, repeat, not no_flush_l2, {"max_candidates": max_candidates})
    if kernels:
        _tune_kernels(_split(models), [None], jobs, ms, search_dir)


@tune.command("fine")
@_common
@click.option("--patterns", default=DEFAULT_PATTERNS, show_default=True, help="patterns whose slid K to tune")
@click.option("--split-k", "split_k_text", default="1,-1,2,4,8", show_default=True,
              help="split-K values to try: 1 = none, -1 = the library's split-K heuristic, n > 1 = n splits")
@click.option("--no-search", is_flag=True, help="skip cuSPARSELt's own matmul search candidate")
@click.option("--kernels/--no-kernels", default=True, show_default=True,
              help="also tune the lifting Triton kernels (each pattern) and dequant for the --model sizes")
def fine(models, shapes, dtypes, m_text, out_text, search_dir, warmup, repeat, no_flush_l2, patterns,
         split_k_text, no_search, kernels):
    """cuSPARSELt (2:4): time every config id x split-K x mode for the slid (N, K') of each pattern.

    --shape N,K gives the sparse GEMM's K directly (already slid)."""
    from ..models import get_model  # noqa: PLC0415
    from ..pattern import parse_patterns  # noqa: PLC0415

    try:
        pats = parse_patterns(patterns)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    nk: list[tuple[int, int]] = []
    for name in _split(models):
        for n, k in get_model(name).linear_shapes().values():
            for p in pats:
                if (n, p.slid_k(k)) not in nk:
                    nk.append((n, p.slid_k(k)))
    if shapes:
        nk += [s for s in resolve_shapes([], list(shapes)) if s not in nk]
    if not nk:
        raise click.UsageError("give at least one --model or --shape")
    qds, ms = _prepare(dtypes, m_text)
    split_ks = _split_ks(split_k_text)
    jobs = [(qd, od, nk) for qd in qds for od in _out_dtypes("cusparselt", qd, out_text)]
    _require_gpu()
    _run("cusparselt", jobs, ms, search_dir, warmup, repeat, not no_flush_l2,
         {"split_ks": split_ks, "include_search": not no_search})
    if kernels:
        _tune_kernels(_split(models), pats, jobs, ms, search_dir)
