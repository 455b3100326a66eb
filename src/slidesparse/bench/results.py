"""Result files: ``<root>/<stage>/<hwtag>/<backend folder>/<model>_<stage>.{csv,json}``.

The backend folder names the *role* a result plays, as the seed's trees do: ``cublaslt`` for the
dense baseline, ``cusparselt/2_L`` for a sparse pattern. What actually ran is recorded per row in
``impl`` (e.g. ``reference-dense`` on a CPU machine), so a reference run never passes for a
library run. The JSON file is the source of truth (typed rows); the CSV is regenerated from it on
every write. Both are replaced atomically (temp file + ``os.replace``), so a crash leaves the old
file or the new one, never half of one. One writer per file at a time is assumed.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import io
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..fsutil import atomic_write_texts
from ..pattern import Pattern

DENSE_FOLDER = "cublaslt"
SPARSE_FOLDER = "cusparselt"
STAGES = ("decode", "prefill", "kernel", "quant")
SCHEMA = 1


def backend_folder(pattern: Pattern | str | None) -> str:
    """``cublaslt`` for the dense role (no pattern), ``cusparselt/2_L`` for a sparse pattern."""
    if pattern is None:
        return DENSE_FOLDER
    return f"{SPARSE_FOLDER}/{Pattern.parse(pattern).label}"


def result_dir(root: str | os.PathLike, stage: str, hwtag: str, pattern: Pattern | str | None) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown result stage {stage!r}; one of {', '.join(STAGES)}")
    if not hwtag or "/" in hwtag or hwtag in (".", ".."):
        raise ValueError(f"hardware tag must be one folder name, got {hwtag!r}")
    return Path(root) / stage / hwtag / backend_folder(pattern)


def result_files(root: str | os.PathLike, stage: str, hwtag: str, pattern: Pattern | str | None,
                 model: str) -> tuple[Path, Path]:
    """(csv path, json path) of one model's results for one stage, machine and backend role."""
    if not model or "/" in model or model.startswith("."):
        raise ValueError(f"model name must be a plain file-name part, got {model!r}")
    d = result_dir(root, stage, hwtag, pattern)
    return d / f"{model}_{stage}.csv", d / f"{model}_{stage}.json"


@functools.lru_cache(maxsize=None)
def git_commit(repo_dir: str | None = None) -> str:
    """The commit of the source tree this package runs from ('unknown' outside a git checkout),
    with '+dirty' when tracked files differ from it."""
    where = repo_dir or str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of what a number depends on; libraries that are not installed are left out."""
    from importlib import metadata  # noqa: PLC0415

    out = {"python": platform.python_version()}
    for dist in ("slidesparse", "torch", "triton", "nvmath-python", "cuda-bindings"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import torch  # noqa: PLC0415

        out["torch"] = torch.__version__  # the build tag (+cu130, +cpu) that the dist version may lack
        if torch.version.cuda:
            out["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available() and torch.backends.cusparselt.is_available():
            out["cusparselt_torch"] = str(torch.backends.cusparselt.version())
    except Exception:  # noqa: BLE001 - versions are informative; never fail a result write on them
        pass
    return out


def provenance() -> dict[str, str]:
    """The columns every row carries besides its measurement: versions, commit, UTC time."""
    row = {f"v_{k.replace('-', '_')}": v for k, v in library_versions().items()}
    row["commit"] = git_commit()
    row["time_utc"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return row


def _check_row(row: Mapping) -> None:
    for k, v in row.items():
        if (k == "path" or k.endswith("_path")) and isinstance(v, str) and os.path.isabs(v):
            raise ValueError(f"result column {k!r} holds an absolute path {v!r}; store it relative "
                             "to the results root so trees from other machines stay readable")
        if isinstance(v, (dict, list, tuple, set)):
            raise ValueError(f"result column {k!r} must be a scalar, got {type(v).__name__}")


def read_rows(json_path: str | os.PathLike) -> list[dict]:
    p = Path(json_path)
    if not p.exists():
        return []
    try:
        doc = json.loads(p.read_text())
        rows = doc["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p} is not a results file ({e}); move it away or delete it") from e
    if not isinstance(rows, list):
        raise ValueError(f"{p}: 'rows' must be a list")
    return rows


def _csv_text(rows: Sequence[Mapping]) -> str:
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in columns})
    return buf.getvalue()


def append_rows(csv_path: str | os.PathLike, json_path: str | os.PathLike, rows: Iterable[Mapping], *,
                key: Sequence[str] | None = None) -> list[dict]:
    """Add ``rows`` to a results file pair and rewrite both atomically; returns all rows.

    With ``key``, an existing row whose key columns equal a new row's is replaced by it (a rerun of
    the same case supersedes the old measurement instead of piling up next to it).
    """
    new = [dict(r) for r in rows]
    for r in new:
        _check_row(r)
        if key is not None:
            missing = [k for k in key if k not in r]
            if missing:
                raise ValueError(f"result row lacks key column(s) {missing}")
    old = read_rows(json_path)
    if key is not None:
        fresh = {tuple(r[k] for k in key) for r in new}
        old = [r for r in old if tuple(r.get(k) for k in key) not in fresh]
    allrows = old + new
    json_path, csv_path = Path(json_path), Path(csv_path)
    # both written before either is renamed: a kill cannot leave the CSV a row behind the JSON
    # while the CSV is being written (tests/test_pipeline.py's kill -9 test once caught that window)
    atomic_write_texts([(json_path, json.dumps({"schema": SCHEMA, "rows": allrows}, indent=1) + "\n"),
                        (csv_path, _csv_text(allrows))])
    return allrows


def write_result_rows(root: str | os.PathLike, stage: str, hwtag: str, pattern: Pattern | str | None,
                      model: str, rows: Iterable[Mapping], *, key: Sequence[str] | None = None) -> Path:
    """Append rows for one (stage, machine, backend role, model); returns the CSV path."""
    csv_path, json_path = result_files(root, stage, hwtag, pattern, model)
    append_rows(csv_path, json_path, rows, key=key)
    return csv_path
