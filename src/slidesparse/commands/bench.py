"""``slidesparse bench``: benchmarks. ``decode`` times a model's four linears at decode batch sizes."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._lists import csv_values, int_values


def _shown(path: Path) -> str:
    """Relative to the working directory when inside it (what a user can paste), else as given."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


@click.group("bench")
def bench() -> None:
    """Benchmarks (results go under RESULTS/<stage>/<hardware tag>/<backend>/)."""


@bench.command("linears")
@click.option("--model", "model", default=None,
              help="Model name(s), comma-separated (built-in or HF directory). "
                   "Default: 'tiny' on the reference backend, the four paper models on the GPU.")
@click.option("--dtype", "dtypes", default="int8,fp8", show_default=True, help="Quantized dtypes: int8, fp8.")
@click.option("--patterns", default="2:4,4:6,6:8,8:10", show_default=True,
              help="Sparse patterns (2:8 == 2_8 == 6:8); the dense baseline always runs too.")
@click.option("--m", "ms", default="64,128,256,512", show_default=True, help="Decode batch sizes M.")
@click.option("--backend", type=click.Choice(["auto", "reference"]), default="auto", show_default=True,
              help="auto: cuBLASLt/cuSPARSELt when CUDA is available, else the CPU reference.")
@click.option("--results", "results", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results root directory.")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed runs per layer before timing. [default: 25 on CUDA, 3 on the CPU]")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Timed runs per layer (the median is reported). [default: 100 on CUDA, 20 on the CPU]")
@click.option("--cuda-graph/--no-cuda-graph", "cuda_graph", default=None,
              help="Time CUDA-graph replays (as a serving engine runs decode). [default: on with CUDA]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights and inputs.")
def decode(model, dtypes, patterns, ms, backend, results, warmup, repeat, cuda_graph, seed) -> None:
    """Time the four linear layers (qkv, o, gate_up, down) of a model at decode batch sizes, dense vs
    each sparse pattern; report summed latency, tokens/s-equivalent and speedup vs dense."""
    from rich.console import Console  # noqa: PLC0415 - heavy imports stay out of --help
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.linear_decode import default_model, default_runs, plan_backends, run_decode
    from ..pattern import parse_patterns
    from ..quant import parse_qdtype

    console = Console()
    qdtypes = [parse_qdtype(d) for d in csv_values(dtypes, "dtype")]
    pats = parse_patterns(csv_values(patterns, "pattern"))
    m_list = int_values(ms, "--m values")
    plan = plan_backends(backend)
    models = csv_values(model, "model") if model else default_model(plan)
    w_default, r_default = default_runs(plan)
    warmup = w_default if warmup is None else warmup
    repeat = r_default if repeat is None else repeat
    if cuda_graph is None:
        cuda_graph = plan.device.type == "cuda"
    elif cuda_graph and plan.device.type != "cuda":
        raise click.BadParameter("--cuda-graph needs the GPU backends (CUDA)", param_hint="--cuda-graph")

    if plan.is_reference:
        console.print(
            f"[bold yellow]Reference backend: plain torch on the CPU ({plan.machine.gpu_full}), model(s) "
            f"{', '.join(models)}. These timings are NOT GPU numbers: they check that the pipeline runs and "
            "say nothing about cuBLASLt/cuSPARSELt speed.[/]")
    else:
        from ..ptxas import apply_ptxas_policy

        console.print(f"[bold]GPU backends on {plan.machine.gpu_full}[/] (cc {plan.machine.cc}, CUDA "
                      f"{plan.machine.cuda}), model(s) {', '.join(models)}")
        apply_ptxas_policy(lambda m: console.print(m, markup=False), cc=plan.machine.cc)  # GB10: sm_121a ptxas
    console.print(f"timing: warm-up {warmup}, {repeat} timed runs per layer, median"
                  f"{', CUDA-graph replay' if cuda_graph else ''}; seed {seed}")

    total = len(models) * len(qdtypes) * (1 + len(pats)) * len(m_list)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("decode", total=total)

        def step(desc: str) -> None:
            progress.update(task, advance=1, description=desc)

        summary = run_decode(models=models, qdtypes=qdtypes, patterns=pats, ms=m_list, plan=plan, warmup=warmup,
                             repeat=repeat, results=results, seed=seed, cuda_graph=cuda_graph, on_case=step)

    _print_tables(console, summary["rows"], pats)
    root = Path(results) / "decode"
    tags = sorted({r["hwtag"] for r in summary["rows"]})
    console.print("results: " + ", ".join(_shown(root / t) for t in tags)
                  + f"  ({len(summary['files'])} CSV files, JSON beside each)")
    if plan.is_reference:
        console.print("[bold yellow]Note: reference (CPU) backend — not GPU performance numbers.[/]")


def _us(v: float) -> str:
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def _print_tables(console, rows: list[dict], pats) -> None:
    from rich.table import Table  # noqa: PLC0415

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["dtype"]), []).append(r)
    for (model, dtype), rs in groups.items():
        impls = sorted({r["impl"] for r in rs})
        ops = sorted({r["ops"] for r in rs})
        t = Table(title=f"decode {model} {dtype.upper()}: 4 linears summed, median µs, speedup vs dense",
                  caption=f"GEMM: {', '.join(impls)}; quant/dequant: {', '.join(ops)}")
        t.add_column("M", justify="right")
        t.add_column("dense", justify="right")
        for p in pats:
            t.add_column(f"{p.paper} ({p.label})\nideal {p.ideal_speedup:.2f}x", justify="right")
        for M in sorted({r["M"] for r in rs}):
            at = {r["pattern"]: r for r in rs if r["M"] == M}
            cells = [str(M), _us(at["dense"]["latency_us"])]
            for p in pats:
                r = at[p.label]
                cells.append(f"{_us(r['latency_us'])}  {r['speedup']:.2f}x")
            t.add_row(*cells)
        console.print(t)


# The end-to-end engine benchmarks (pipeline tasks 6 and 7 alone) are `bench prefill` / `bench decode`.
from .pipeline import decode_cmd, prefill_cmd  # noqa: E402

bench.add_command(prefill_cmd, name="prefill")
bench.add_command(decode_cmd, name="decode")

from .bench_quant import quant_cmd  # noqa: E402

bench.add_command(quant_cmd, name="quant")

from .bench_kernel import kernel_cmd  # noqa: E402

bench.add_command(kernel_cmd, name="kernel")
