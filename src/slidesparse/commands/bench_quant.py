"""``slidesparse bench quant``: the Triton activation kernels against a device-to-device copy.

``quant_cmd`` is a click command named ``quant``, attached under the ``bench`` group."""

from __future__ import annotations

import click

from ._lists import csv_values, int_values


@click.command("quant")
@click.option("--model", "models", default=None,
              help="Model names (comma-separated) whose K / N values to use. [default: the four paper models]")
@click.option("--k", "ks", default=None,
              help="Explicit K values (comma-separated) instead of the models' (quant, rmsnorm and silu K; "
                   "dequant N too).")
@click.option("--m", "ms", default=",".join(str(m) for m in (64, 256, 1024, 4096, 16384, 65536)), show_default=True,
              help="Token counts M.")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True, help="Quantized dtypes: int8, fp8.")
@click.option("--patterns", default="2:4,4:6,6:8,8:10", show_default=True,
              help="Sparse patterns for quant+lift (2:8 == 2_8 == 6:8); plain quant always runs too.")
@click.option("--kernels", default="quant,dequant", show_default=True,
              help="Kernels: quant, dequant, rmsnorm_quant, silu_mul_quant.")
@click.option("--results", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results root (rows go to RESULTS/quant/<hwtag>/quant_<dtype>.csv and .json).")
@click.option("--search", default="search", show_default=True, type=click.Path(file_okay=False),
              help="Tuning root: launch configs from SEARCH/<hwtag>/kernels.json when present, else defaults.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed runs before timing (at least 25 ms of GPU time is always spent warming up).")
@click.option("--repeat", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed runs per case (the median is reported).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random inputs.")
def quant_cmd(models, ks, ms, dtypes, patterns, kernels, results, search, warmup, repeat, seed) -> None:
    """Time the Triton quant (+lift), fused RMSNorm/SiLU producers and dequant kernels against a
    device-to-device copy of the same bytes; print % of copy bandwidth and lift overhead, then the
    target per kernel at M >= 4096 (>= 85 % of copy; quant+lift / quant time within 1.05 x the byte
    ratio) and every case that misses it."""
    from ..bench.quant import (  # noqa: PLC0415
        Shapes, model_shapes, run_quant_bench, summary_lines, target_lines, write_rows,
    )
    from ..kernels.timing import require_cuda  # noqa: PLC0415
    from ..pattern import parse_patterns  # noqa: PLC0415
    from ..quant import parse_qdtype  # noqa: PLC0415

    qds = [parse_qdtype(d) for d in csv_values(dtypes, "dtype")]
    pats = [None] + [p for p in parse_patterns(csv_values(patterns, "pattern"))]
    m_list = int_values(ms, "--m values")
    kern = csv_values(kernels, "kernel")
    if ks is not None:
        if models is not None:
            raise click.BadParameter("give --model or --k, not both", param_hint="--k")
        k = tuple(int_values(ks, "--k values"))
        shapes = Shapes(k, k, k, k)
    else:
        from ..models import DEFAULT_MODELS  # noqa: PLC0415

        shapes = model_shapes(csv_values(models, "model") if models else DEFAULT_MODELS)
    require_cuda()
    from ..ptxas import apply_ptxas_policy  # noqa: PLC0415

    apply_ptxas_policy(lambda m: click.echo(m, err=True))  # GB10: a ptxas that knows sm_121a, for Triton
    rows = run_quant_bench(shapes=shapes, m_list=m_list, qdtypes=qds, patterns=pats, kernels=kern, warmup=warmup,
                           repeat=repeat, search_dir=search, seed=seed, on_case=lambda s: click.echo(s, err=True))
    paths = write_rows(rows, results)
    for line in summary_lines(rows) + target_lines(rows):
        click.echo(line)
    click.echo("results: " + ", ".join(str(p) for p in paths))
