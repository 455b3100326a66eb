"""Reading result trees for the report: result rows, the pipeline's ledger, status files and logs.

A tree is what one machine's pipeline (or a plain ``bench`` command) wrote under a results root::

    <root>/<stage>/<hwtag>/{cublaslt | cusparselt/2_L}/<model>_<stage>.{json,csv}
    <root>/logs/ledger_<hwtag>.jsonl                 one JSON line per finished case x M
    <root>/logs/pipeline_<ts>_status.json            tasks, matrix, machine of one pipeline run
    <root>/logs/pipeline_<ts>.log                    its text log

Everything here is tolerant: a file that cannot be read (bad JSON, truncated CSV, torn ledger
line, missing status) becomes a :class:`Problem` and the rest is still read. Several trees (one per
machine, or copies) merge by *machine key*: the hardware tag without its dtype part, so the INT8
and FP8 folders of one machine land on one machine.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..bench.results import DENSE_FOLDER, SPARSE_FOLDER, STAGES
from ..pattern import Pattern

DENSE = "dense"
# how stages are shown and ordered: the pipeline's task order (6 prefill, 7 decode), then the kernels
_SHOWN_FIRST = ("prefill", "decode", "kernel", "quant")
STAGE_ORDER = tuple(s for s in _SHOWN_FIRST if s in STAGES) + tuple(s for s in STAGES if s not in _SHOWN_FIRST)
_DTYPE_TAG_PARTS = {"INT8", "FP8E4M3", "FP8"}
_DTYPES = {"int8": "int8", "fp8": "fp8", "fp8e4m3": "fp8", "float8_e4m3fn": "fp8", "e4m3": "fp8"}
_TAG_RE = re.compile(r"^(?P<gpu>[A-Za-z0-9]+)(?:_cc(?P<cc>\d+))?(?:_(?P<dtype>[A-Z0-9]+?))?"
                     r"_py(?P<py>\d+)_(?P<cu>cu\d+|cpu)_(?P<arch>.+)$")
MACHINE_FIELDS = ("gpu", "gpu_full", "cc", "memory_gb", "cuda", "driver", "python", "arch", "torch")


@dataclass
class Problem:
    path: Path
    what: str


@dataclass
class Measurement:
    """One result row, with where it came from and its identity normalized."""
    tree: Path
    stage: str
    hwtag: str
    machine: str
    model: str
    dtype: str            # 'int8' | 'fp8' | as recorded
    role: str             # 'dense' or a pattern label '2_L'
    M: int
    row: dict             # the row as stored
    file: Path

    @property
    def impl(self) -> str:
        return str(self.row.get("impl", ""))

    @property
    def gemm_out(self) -> str:
        """What the engine's GEMMs wrote (e2e rows since the sparse INT8 bf16 + alpha epilogue), or ''."""
        return str(self.row.get("gemm_out", "") or "")

    @property
    def is_reference(self) -> bool:
        return is_reference(self.row.get("reference_backend"), self.impl, self.hwtag)

    @property
    def time_utc(self) -> str:
        return str(self.row.get("time_utc", ""))


@dataclass
class Outcome:
    """One ledger line: a case x M that finished (done) or failed, with its error."""
    machine: str
    hwtag: str
    stage: str
    model: str
    dtype: str
    role: str
    M: int
    status: str
    error_type: str
    message: str
    location: str
    duration_s: float | None
    time_utc: str
    impl: str
    case: str
    file: Path
    line: int

    @property
    def passed(self) -> bool:
        return self.status == "done"

    @property
    def backend(self) -> str:
        return backend_label(self.role)


@dataclass
class Run:
    """One pipeline status file."""
    path: Path
    data: dict
    machine: str

    @property
    def stamp(self) -> str:
        m = re.match(r"pipeline_(\d{8}_\d{6})", self.path.name)
        return str(self.data.get("started") or (m.group(1) if m else self.path.name))

    @property
    def log(self) -> Path | None:
        p = self.path.with_name(self.path.name.replace("_status.json", ".log"))
        return p if p.is_file() else None


@dataclass
class LogHit:
    path: Path
    line: int
    text: str


@dataclass
class Tree:
    root: Path
    measurements: list[Measurement] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    ptxas_hits: list[LogHit] = field(default_factory=list)
    ledgers: list[Path] = field(default_factory=list)
    # (stage, hwtag) -> roles with a folder
    result_dirs: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files_seen: int = 0


# --- small normalizers -------------------------------------------------------------------------

def is_reference(flag, impl: str, hwtag: str) -> bool:
    if isinstance(flag, str):
        flag = flag.strip().lower() in ("true", "1", "yes")
    return bool(flag) or str(impl).startswith("reference") or hwtag.startswith("CPU_") or hwtag == "CPU"


def machine_key(hwtag: str) -> str:
    """The hardware tag without its dtype part: 'H100_cc90_INT8_py312_cu130_x86_64' ->
    'H100_cc90_py312_cu130_x86_64' (the tuning-data tag), shared by a machine's INT8 and FP8 runs."""
    return "_".join(p for p in str(hwtag).split("_") if p not in _DTYPE_TAG_PARTS)


def parse_tag(hwtag: str) -> dict:
    """What a hardware tag says about the machine (the header's fallback when no status file exists)."""
    m = _TAG_RE.match(str(hwtag))
    if not m:
        return {"gpu": str(hwtag).split("_")[0]}
    py = m.group("py")
    cu = m.group("cu")
    return {
        "gpu": m.group("gpu"), "cc": m.group("cc") or "",
        "python": f"{py[0]}.{py[1:]}" if len(py) > 1 else py,
        "cuda": "" if cu == "cpu" else f"{cu[2:-1]}.{cu[-1]}",
        "arch": m.group("arch"),
    }


def tag_from_machine(info: dict) -> str:
    """A machine key built from a status file's machine block (as hw.MachineInfo.tag without dtype)."""
    gpu = str(info.get("gpu") or "unknown")
    parts = [gpu]
    if gpu != "CPU" and info.get("cc"):
        parts.append(f"cc{info['cc']}")
    parts.append("py" + str(info.get("python", "")).replace(".", ""))
    cuda = str(info.get("cuda") or "")
    parts.append("cu" + cuda.replace(".", "") if gpu != "CPU" and cuda else "cpu")
    parts.append(str(info.get("arch") or "unknown"))
    return "_".join(parts)


def norm_dtype(value) -> str:
    s = str(value or "").strip()
    return _DTYPES.get(s.lower(), s.lower())


def norm_role(pattern, backend=None) -> str:
    """'dense' for the dense baseline, else the pattern's folder label ('2_8' for 2:8, 2_8 or 6:8)."""
    p = "" if pattern is None else str(pattern).strip()
    b = str(backend or "").strip().lower()
    if not p and "/" in b:  # a folder-style backend, 'cusparselt/2_8'
        p = b.split("/", 1)[1]
    if p.lower() in ("", DENSE, "none"):
        return "unknown" if b.startswith(SPARSE_FOLDER) else DENSE
    try:
        return Pattern.parse(p).label
    except ValueError:
        return p


def role_sort_key(role: str):
    if role == DENSE:
        return (0, 0, role)
    m = re.match(r"^2_(\d+)$", role)
    return (1, int(m.group(1)), role) if m else (2, 0, role)


def role_label(role: str) -> str:
    """'dense' or '6:8 (2_8)': both spellings, as the CLI prints them."""
    if role == DENSE:
        return DENSE
    try:
        p = Pattern.parse(role)
        return f"{p.paper} ({p.label})"
    except ValueError:
        return role


def ideal_speedup(role: str) -> float | None:
    if role == DENSE:
        return 1.0
    try:
        return Pattern.parse(role).ideal_speedup
    except ValueError:
        return None


def backend_label(role: str) -> str:
    return "cuBLASLt" if role == DENSE else "cuSPARSELt"


def natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def dtype_sort_key(dtype: str):
    return ({"int8": 0, "fp8": 1}.get(dtype, 2), dtype)


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def _as_float(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _typed(text: str):
    """A CSV cell back to the type the JSON would have held."""
    if text in ("True", "False"):
        return text == "True"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    # not float(text) alone: it takes '2_8' (a pattern label) for 28.0
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?|-?(inf|nan)", text):
        return float(text)
    return text


# --- result files --------------------------------------------------------------------------------

def _read_text(path: Path, tree: Tree) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        tree.problems.append(Problem(path, f"cannot be read ({e.__class__.__name__}: {e}); skipped"))
        return None


def _json_rows(path: Path, tree: Tree) -> list[dict] | None:
    """The rows of a results JSON, or None (with a problem recorded) when it is not one."""
    text = _read_text(path, tree)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        tree.problems.append(Problem(path, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"))
        return None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        tree.problems.append(Problem(path, "has no 'rows' list (not a results file)"))
        return None
    good = [r for r in rows if isinstance(r, dict)]
    if len(good) != len(rows):
        tree.problems.append(Problem(path, f"{len(rows) - len(good)} row(s) are not JSON objects; skipped"))
    return good


def _csv_rows(path: Path, tree: Tree, *, report: bool) -> list[dict] | None:
    """The rows of a results CSV; a short row or a cut last line is a problem (when ``report``)."""
    text = _read_text(path, tree)
    if text is None:
        return None
    issues: list[str] = []
    rows: list[dict] = []
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        if report:
            tree.problems.append(Problem(path, f"is not valid CSV ({e})"))
        return None
    if not records or not records[0]:
        if report:
            tree.problems.append(Problem(path, "is empty (no CSV header)"))
        return None
    header = records[0]
    for lineno, rec in enumerate(records[1:], start=2):
        if not rec:
            continue
        if len(rec) != len(header):
            issues.append(f"line {lineno} has {len(rec)} of {len(header)} fields")
            continue
        rows.append({k: _typed(v) for k, v in zip(header, rec) if v != ""})
    if text and not text.endswith("\n"):
        issues.append("the last line is cut (no final newline)")
        if rows and len(records[-1]) == len(header):
            rows.pop()  # its last cell may be cut short: don't trust the line
    if issues and report:
        tree.problems.append(Problem(path, "is truncated or damaged: " + "; ".join(issues)))
    return rows


def _role_from_folder(folder: Path, hwtag_dir: Path) -> str | None:
    rel = folder.relative_to(hwtag_dir).parts
    if rel == (DENSE_FOLDER,):
        return DENSE
    if len(rel) == 2 and rel[0] == SPARSE_FOLDER:
        return norm_role(rel[1])
    return None


def _model_from_file(path: Path, stage: str) -> str:
    stem = path.name
    return stem[: -len(stage) - 1] if stem.endswith(f"_{stage}") else stem


def _read_result_pair(tree: Tree, stage: str, hwtag: str, role: str, stem_path: Path) -> None:
    """One '<model>_<stage>' pair: the JSON is the truth; the CSV is read as a fallback and checked."""
    # not with_suffix: model names hold dots ('llama3.2-1b')
    jpath, cpath = stem_path.with_name(stem_path.name + ".json"), stem_path.with_name(stem_path.name + ".csv")
    rows = _json_rows(jpath, tree) if jpath.exists() else None
    source = jpath
    if rows is None:
        if cpath.exists():
            rows = _csv_rows(cpath, tree, report=True)
            if rows is not None:
                why = "is missing" if not jpath.exists() else "is unreadable (above)"
                tree.problems.append(Problem(cpath, f"used instead of the JSON, which {why}; "
                                                    f"{len(rows)} row(s) read from the CSV"))
                source = cpath
        if rows is None:
            return
    elif cpath.exists():
        before = len(tree.problems)
        csv_rows = _csv_rows(cpath, tree, report=True)
        if csv_rows is not None and len(tree.problems) == before and len(csv_rows) != len(rows):
            tree.problems.append(Problem(cpath, f"has {len(csv_rows)} row(s) but its JSON has {len(rows)}: "
                                                "out of sync (the JSON is used)"))
    skipped, mismatched = 0, set()
    for r in rows:
        M = _as_int(r.get("M"))
        if M is None:
            skipped += 1
            continue
        model = str(r.get("model") or _model_from_file(stem_path, stage))
        dtype = norm_dtype(r.get("dtype") or _dtype_from_tag(hwtag))
        row_role = norm_role(r["pattern"], r.get("backend")) if "pattern" in r else role
        if row_role != role:  # the folder is the layout's contract for the role; say when a row disagrees
            mismatched.add(str(r.get("pattern")))
        tree.measurements.append(Measurement(tree.root, stage, hwtag, machine_key(hwtag), model, dtype, role,
                                             M, r, source))
    if skipped:
        tree.problems.append(Problem(source, f"{skipped} row(s) without an integer M; skipped"))
    if mismatched:
        tree.problems.append(Problem(source, f"row pattern(s) {', '.join(sorted(mismatched))} disagree with the "
                                             f"folder ({role}); the folder's role is used"))


def _dtype_from_tag(hwtag: str) -> str:
    for part in hwtag.split("_"):
        if part in _DTYPE_TAG_PARTS:
            return norm_dtype(part)
    return ""


def _scan_results(tree: Tree) -> None:
    for stage in STAGES:
        sdir = tree.root / stage
        if not sdir.is_dir():
            continue
        for hdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
            hwtag = hdir.name
            folders = [hdir / DENSE_FOLDER] + sorted((hdir / SPARSE_FOLDER).glob("*"))
            for extra in sorted(hdir.iterdir()):
                if extra.name not in (DENSE_FOLDER, SPARSE_FOLDER) and not extra.name.startswith("."):
                    tree.problems.append(Problem(extra, "is not a backend folder (cublaslt, cusparselt/2_L); "
                                                        "ignored"))
            for folder in folders:
                if not folder.is_dir():
                    continue
                role = _role_from_folder(folder, hdir)
                tree.result_dirs.setdefault((stage, hwtag), set()).add(role or folder.name)
                stems: dict[str, Path] = {}
                for f in sorted(folder.iterdir()):
                    if f.name.startswith("."):
                        if f.name.endswith(".tmp"):
                            tree.problems.append(Problem(f, "is a leftover temporary file (an interrupted "
                                                            "write); ignored"))
                        continue
                    if f.is_file() and f.suffix in (".json", ".csv"):
                        stems.setdefault(f.stem, folder / f.stem)
                for stem in sorted(stems):
                    tree.files_seen += 1
                    _read_result_pair(tree, stage, hwtag, role or folder.name, stems[stem])


# --- pipeline logs -------------------------------------------------------------------------------

_CASE_PARTS = ("stage", "model", "dtype", "backend", "pattern")


def from_case(case: str) -> dict:
    """'prefill/qwen2.5-7b/INT8/cusparselt/2_8' -> its parts ('cublaslt' cases have no pattern)."""
    parts = str(case).split("/")
    out = dict(zip(_CASE_PARTS, parts))
    if out.get("backend") == DENSE_FOLDER:
        out.setdefault("pattern", DENSE)
    return out


def _read_ledger(tree: Tree, path: Path) -> None:
    text = _read_text(path, tree)
    if text is None:
        return
    tree.ledgers.append(path)
    file_tag = path.stem[len("ledger_"):]
    torn, incomplete = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("not an object")
        except ValueError:
            torn.append(lineno)
            continue
        case = from_case(d.get("case", ""))
        get = lambda k: d.get(k) if d.get(k) not in (None, "") else case.get(k)  # noqa: E731
        M = _as_int(d.get("M"))
        stage, model, status = get("stage"), get("model"), d.get("status")
        if M is None or not stage or not model or not status:
            incomplete.append(lineno)
            continue
        hwtag = str(d.get("hwtag") or file_tag)
        tree.outcomes.append(Outcome(
            machine=machine_key(hwtag), hwtag=hwtag, stage=str(stage), model=str(model),
            dtype=norm_dtype(get("dtype") or _dtype_from_tag(hwtag)),
            role=norm_role(get("pattern"), get("backend")), M=M, status=str(status),
            error_type=str(d.get("error_type") or ""), message=str(d.get("message") or ""),
            location=str(d.get("location") or ""), duration_s=_as_float(d.get("duration_s")),
            time_utc=str(d.get("time_utc") or ""), impl=str(d.get("impl") or ""), case=str(d.get("case") or ""),
            file=path, line=lineno))
    if torn:
        tree.problems.append(Problem(path, f"line(s) {_lines(torn)} are not valid JSON (torn write?); skipped"))
    if incomplete:
        tree.problems.append(Problem(path, f"line(s) {_lines(incomplete)} lack stage/model/M/status; skipped"))


def _lines(nums: Sequence[int]) -> str:
    return ", ".join(map(str, nums[:10])) + (f" and {len(nums) - 10} more" if len(nums) > 10 else "")


def _read_status(tree: Tree, path: Path) -> None:
    text = _read_text(path, tree)
    if text is None:
        return
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        tree.problems.append(Problem(path, f"is not a valid status file ({e}); its tasks and matrix are unknown"))
        return
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    if data.get("hwtag"):
        key = machine_key(str(data["hwtag"]))
    elif machine:
        key = tag_from_machine(machine)
    else:
        tree.problems.append(Problem(path, "names neither 'hwtag' nor 'machine'; not matched to a machine"))
        key = "unknown"
    for k in ("tasks", "matrix", "cases"):
        if k in data and not isinstance(data[k], dict):
            tree.problems.append(Problem(path, f"'{k}' is not a JSON object; ignored"))
            data[k] = {}
    tree.runs.append(Run(path, data, key))


_PTXAS_RE = re.compile(r"ptxas", re.IGNORECASE)


def _scan_log(tree: Tree, path: Path) -> None:
    text = _read_text(path, tree)
    if text is None:
        return
    tree.logs.append(path)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if _PTXAS_RE.search(line):
            tree.ptxas_hits.append(LogHit(path, lineno, line.strip()[:300]))


def load_tree(root: str | Path) -> Tree:
    """Read one results root. Missing root -> FileNotFoundError; anything else unreadable -> problems."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"results directory {root} does not exist; give the root that holds "
                                f"<stage>/<hwtag>/... and logs/ (e.g. results/)")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory; give a results root (e.g. results/)")
    tree = Tree(root)
    _scan_results(tree)
    logs = root / "logs"
    if logs.is_dir():
        for p in sorted(logs.glob("ledger_*.jsonl")):
            tree.files_seen += 1
            _read_ledger(tree, p)
        for p in sorted(logs.glob("pipeline_*_status.json")):
            tree.files_seen += 1
            _read_status(tree, p)
        for p in sorted(logs.glob("pipeline_*.log")):
            tree.files_seen += 1
            _scan_log(tree, p)
        # a ledger or log whose run left no status file: the task table and matrix are unknown
        with_status = {r.machine for r in tree.runs}
        for m in sorted({o.machine for o in tree.outcomes} - with_status):
            tree.problems.append(Problem(logs, f"no pipeline status file for machine {m} (expected "
                                               "pipeline_<timestamp>_status.json): tasks and test matrix are "
                                               "derived from the ledger and result rows"))
        for log in tree.logs:
            if not log.with_name(log.name[:-len(".log")] + "_status.json").exists():
                tree.problems.append(Problem(log, "has no matching _status.json (the run's status was not "
                                                  "written or was lost)"))
    return tree


def load_trees(roots: Iterable[str | Path]) -> list[Tree]:
    """Read every root; no result rows, ledger or status anywhere -> ValueError."""
    unique: list[Path] = []
    for r in map(Path, roots):
        if r.resolve() not in {u.resolve() for u in unique}:  # a tree named twice is read once
            unique.append(r)
    roots = unique
    if not roots:
        raise ValueError("no results directory given")
    trees = [load_tree(r) for r in roots]
    if not any(t.files_seen for t in trees):
        where = ", ".join(str(r) for r in roots)
        raise ValueError(f"no results found under {where}: expected <stage>/<hwtag>/{{cublaslt,cusparselt/2_L}}/"
                         f"<model>_<stage>.json (stages {', '.join(STAGE_ORDER)}) or logs/ledger_*.jsonl / "
                         "logs/pipeline_*_status.json; run `slidesparse bench ...` or the pipeline first")
    return trees
