"""``slidesparse bench kernel``: cuBLASLt vs cuSPARSELt per GEMM shape, GEMM alone and whole linear layer.

``kernel_cmd`` is a click command named ``kernel``, attached under the ``bench`` group."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

_DEFAULT_MS = "64,128,256,512,1024,2048,4096,8192,16384"


@click.command("kernel")
@click.option("--mode", type=click.Choice(["model", "square"]), default="model", show_default=True,
              help="model: the four linears of each model (plus their sum per M); square: M = N = K per --m value.")
@click.option("--model", "models", default=None,
              help="Model names, comma-separated (built-in or HF directory). [default: the four paper models; "
                   "'tiny' on the reference backend]")
@click.option("--m", "ms", default=None,
              help=f"M values (square mode: the sizes, multiples of 32). [default: {_DEFAULT_MS}; 32,64 on the "
                   "reference backend]")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True, help="Quantized dtypes: int8, fp8.")
@click.option("--patterns", default="2:4,4:6,6:8,8:10", show_default=True,
              help="Sparse patterns (2:8 == 2_8 == 6:8); the dense baseline always runs too. Efficiency vs 2:4 "
                   "needs 2:4 in the list.")
@click.option("--view", "views", default="gemm,linear", show_default=True,
              help="gemm: the GEMM alone, same output dtype both sides; linear: quant -> GEMM -> dequant with each "
                   "library's fastest legal output.")
@click.option("--backend", type=click.Choice(["auto", "reference"]), default="auto", show_default=True,
              help="auto: cuBLASLt/cuSPARSELt (needs CUDA); reference: plain torch on the CPU, tiny model only "
                   "(a CI check, not performance numbers).")
@click.option("--results", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results root (rows go to RESULTS/kernel/<hwtag>/<cublaslt|cusparselt/2_L>/).")
@click.option("--search", default="search", show_default=True, type=click.Path(file_okay=False),
              help="Tuning root: GEMM algorithms from SEARCH/<hwtag>/<library>_<DTYPE>.json when present, "
                   "else the library heuristic (warned once); Triton launch configs likewise.")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed calls per case. [default: 10 on CUDA, 1 on the CPU]")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Timed calls per case (the median is reported). [default: 50 on CUDA, 3 on the CPU]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights and inputs.")
def kernel_cmd(mode, models, ms, dtypes, patterns, views, backend, results, search, warmup, repeat, seed) -> None:
    """Time dense vs sparse GEMMs per (M, N, K): latency, TOPS, speedup vs the dense GEMM, per-model
    totals and efficiency vs native 2:4 = (speedup_2:L / speedup_2:4) x 2(L-2)/L."""
    from ..bench.kernel import make_config, run_kernel_bench, summary_lines  # noqa: PLC0415
    from ..gemm.tuning_db import TuningMissWarning  # noqa: PLC0415

    cfg = make_config(mode=mode, models=models, ms=ms, dtypes=dtypes, patterns=patterns, views=views,
                      backend=backend, search=search, warmup=warmup, repeat=repeat, seed=seed)
    if cfg.reference:
        click.echo("Reference backend: plain torch on the CPU. These timings are NOT GPU numbers: they check "
                   "the code path only; run on a CUDA machine (without --backend reference) for real numbers.",
                   err=True)
    else:
        from ..ptxas import apply_ptxas_policy  # noqa: PLC0415

        click.echo(f"GPU: {cfg.machine.gpu_full} (cc {cfg.machine.cc}, CUDA {cfg.machine.cuda}); "
                   f"warm-up {cfg.warmup}, median of {cfg.repeat} timed calls per case", err=True)
        apply_ptxas_policy(lambda m: click.echo(m, err=True), cc=cfg.machine.cc)  # GB10: sm_121a ptxas

    def show(w: warnings.WarningMessage) -> None:
        click.echo(f"warning: {w.message}", err=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TuningMissWarning)
        summary = run_kernel_bench(cfg, results, on_case=lambda s: click.echo(s, err=True))
    for w in caught:
        show(w)
    for line in summary_lines(summary["rows"]):
        click.echo(line)
    tags = sorted({r["hwtag"] for r in summary["rows"]})
    click.echo("results: " + ", ".join(str(Path(results) / "kernel" / t) for t in tags)
               + f"  ({len(summary['files'])} CSV files, JSON beside each)")
    if cfg.reference:
        click.echo("Note: reference (CPU) backend; not GPU performance numbers.")
