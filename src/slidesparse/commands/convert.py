"""`slidesparse convert`: quantize, prune and slide a model into a SlideSparse checkpoint."""

from __future__ import annotations

import time

import click


@click.command("convert")
@click.argument("model")
@click.option("--pattern", "-p", required=True, metavar="PATTERN",
              help="Sparsity pattern: '6:8' (paper), '2_8' or '2:8' (2 zeros per 8) are the same; "
                   "'2:4' is native 2:4; 'dense' quantizes only (the dense-baseline checkpoint).")
@click.option("--dtype", "qdtype", required=True, type=click.Choice(["int8", "fp8"], case_sensitive=False),
              help="Weight dtype: int8 or fp8 (e4m3), per-output-channel scales. A W8A8 source must "
                   "be converted to its own dtype.")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), default=None,
              help="Output directory. Default: checkpoints/<model>-SlideSparse-<2_L|dense>-<dtype>.")
@click.option("--force", is_flag=True,
              help="Replace an existing output directory (only an empty one or an earlier SlideSparse "
                   "checkpoint; it is swapped out only once the new one is complete).")
@click.option("--prune-mode", type=click.Choice(["magnitude", "random"]), default="magnitude", show_default=True,
              help="magnitude: zero the 2 smallest |w| of every group of L; random: 2 seeded positions.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for random pruning and for the synthetic weights of a built-in model.")
@click.option("--check", is_flag=True,
              help="Verify the written checkpoint (2:4 validity, pattern, exact lifted matmuls and the "
                   "source comparison on sampled layers) and print what was verified.")
@click.option("--samples", type=click.IntRange(min=0), default=2, show_default=True,
              help="Layers sampled by --check for the matmul and source comparisons.")
@click.option("--device", default="cpu", show_default=True,
              help="Device for the quantize/prune/slide math, e.g. cuda (same results, faster).")
@click.option("--max-shard-gb", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Largest safetensors shard to write (GiB).")
def convert_command(model: str, pattern: str, qdtype: str, out: str | None, force: bool, prune_mode: str,
                    seed: int, check: bool, samples: int, device: str, max_shard_gb: float) -> None:
    """Convert MODEL into a SlideSparse checkpoint.

    MODEL is a Hugging Face safetensors directory (bf16/fp16/fp32, or a compressed-tensors W8A8
    int8/fp8 checkpoint with per-channel weight scales) or a built-in name (llama3.2-1b, llama3.2-3b,
    qwen2.5-7b, qwen2.5-14b, tiny), which converts seeded synthetic weights of that architecture.
    Every q/k/v/o/gate/up/down weight is quantized per output channel, pruned to the pattern and
    slid to [N, K'] (2:4 along K); everything else is copied. The output holds slidesparse_config.json
    with everything needed to load it without flags. Nothing is left behind on failure.

    \b
    Examples:
      slidesparse convert /data/Qwen2.5-7B-Instruct --pattern 6:8 --dtype int8
      slidesparse convert qwen2.5-7b -p 2_8 --dtype fp8 --out /tmp/q7-2_8-fp8 --check
      slidesparse convert tiny -p dense --dtype int8 --check
    """
    from rich.console import Console  # noqa: PLC0415 - keep --help fast
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from ..checkpoint import (check_converted, convert_checkpoint, default_out_dir, load_converted,  # noqa: PLC0415
                              parse_pattern_or_dense)
    from ..models import get_model  # noqa: PLC0415

    p = parse_pattern_or_dense(pattern)
    cfg = get_model(model)
    out_dir = out if out is not None else default_out_dir(cfg.name, p, qdtype)
    console = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]converting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        path = convert_checkpoint(model, out_dir, p, qdtype.lower(), force=force, prune_mode=prune_mode,
                                  seed=seed, progress=progress, device=device,
                                  shard_bytes=int(max_shard_gb * 1024**3))
    meta, tensors = load_converted(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    tensors.close()
    what = "dense (quantized only)" if p is None else f"{p} ({prune_mode} pruning)"
    click.echo(f"wrote {path}: {meta['model']}, {what}, {meta['qdtype']}, {len(meta['layers'])} linear weights, "
               f"{size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f}s")
    click.echo(f"source: {meta['source']}")
    if check:
        rep = check_converted(path, samples=samples, seed=seed)
        click.echo("check passed:")
        for line in rep.lines:
            click.echo(f"  {line}")
