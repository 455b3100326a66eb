"""The benchmark pipeline: tasks 1-7 (download, convert, tune-coarse, tune-fine, quick check, prefill,
decode) over a matrix of (model, dtype, dense | pattern, M), every case in an isolated worker process,
a resumable ledger, a status JSON and logs.

Modules: ``cases`` (case ids, the matrix, the backend plan), ``worker`` (worker processes, crash
capture, fault injection via SLIDESPARSE_CRASH_CASE), ``ledger`` (results/logs/ledger_<hwtag>.jsonl),
``status`` (results/logs/pipeline_<ts>_status.json + .log), ``tasks`` (tasks 1-5 and the engine case
runner), ``runner`` (``run_pipeline``). The CLI is ``slidesparse.commands.pipeline``.
"""

from .cases import Case, Matrix
from .ledger import Ledger, ledger_path
from .runner import PipelineOptions, PipelineRun, run_pipeline

__all__ = ["Case", "Matrix", "Ledger", "ledger_path", "PipelineOptions", "PipelineRun", "run_pipeline"]
