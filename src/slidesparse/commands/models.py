"""`slidesparse models`: the four GEMM shapes per layer of each model and the slid K per pattern."""

from __future__ import annotations

import json

import click

DEFAULT_PATTERNS = ("2:4", "4:6", "6:8", "8:10")


@click.command("models")
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option("--pattern", "-p", "patterns", multiple=True, metavar="PATTERNS",
              help="Patterns to show, repeatable or comma-separated, in any accepted spelling "
                   "('6:8', '2_8', '2:8'). Default: 2:4,4:6,6:8,8:10.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
def models_command(models: tuple[str, ...], patterns: tuple[str, ...], as_json: bool) -> None:
    """Show each linear's (N, K) and the slid K' per pattern.

    MODEL is a built-in name (llama3.2-1b, llama3.2-3b, qwen2.5-7b, qwen2.5-14b, tiny) or a Hugging
    Face model directory (its config.json is read). Without MODEL the four built-in benchmark models
    are shown. N = out_features, K = in_features; the sparse GEMM runs [M, K'] x [N, K']^T with K' =
    slid K (2:4-compressed to K'/2), so the ideal speedup over dense is L/(L-2).

    \b
    Examples:
      slidesparse models
      slidesparse models qwen2.5-7b --pattern 6:8
      slidesparse models /data/Qwen2.5-7B-Instruct -p 2_6,2_8 --json
    """
    from rich.console import Console  # noqa: PLC0415 - keep --help fast
    from rich.table import Table  # noqa: PLC0415

    from ..models import DEFAULT_MODELS, get_model, gemm_shape_problems  # noqa: PLC0415
    from ..pattern import parse_patterns  # noqa: PLC0415

    pats = parse_patterns(",".join(patterns) if patterns else ",".join(DEFAULT_PATTERNS))
    if not pats:
        raise ValueError("no patterns given; e.g. --pattern 6:8")
    cfgs = [get_model(m) for m in (models or DEFAULT_MODELS)]

    if as_json:
        out = []
        for cfg in cfgs:
            out.append({
                "model": cfg.name, "config": cfg.to_dict(),
                "linears": {lin: {"N": n, "K": k, "K_slid": {p.label: p.slid_k(k) for p in pats}}
                            for lin, (n, k) in cfg.linear_shapes().items()},
                "problems": {p.label: gemm_shape_problems(cfg, p) for p in pats},
            })
        click.echo(json.dumps(out, indent=2))
        return

    console = Console(width=max(100, Console().width))
    for cfg in cfgs:
        table = Table(title=f"{cfg.name}: {cfg.describe()}", title_justify="left")
        table.add_column("linear")
        table.add_column("N", justify="right")
        table.add_column("K", justify="right")
        for p in pats:
            table.add_column(f"K' {p}\nideal {p.ideal_speedup:.2f}x", justify="right")
        for lin, (n, k) in cfg.linear_shapes().items():
            table.add_row(lin, str(n), str(k), *(str(p.slid_k(k)) for p in pats))
        console.print(table)
        for p in pats:
            for prob in gemm_shape_problems(cfg, p):
                console.print(f"[yellow]warning[/yellow] {cfg.name} {p}: {prob}")
