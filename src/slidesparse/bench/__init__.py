"""Benchmarks: timing (``timing``), result files (``results``) and the benchmark drivers
(``linear_decode``; prefill, kernel and quant stages come later)."""

from .results import backend_folder, result_files, write_result_rows
from .timing import Timing, time_fn

__all__ = ["Timing", "time_fn", "backend_folder", "result_files", "write_result_rows"]
