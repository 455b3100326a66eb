"""SlideSparse: (2N-2):2N structured sparsity on 2:4 sparse tensor cores via sliding windows."""

from .pattern import Pattern, parse_patterns
from .quant import dequant, quantize_per_token, quantize_weight
from .sparsify import check_pattern, is_2to4, lift, prune, slide, slide_index, unslide

__version__ = "0.1.0"

__all__ = [
    "Pattern", "parse_patterns", "prune", "slide", "lift", "unslide", "slide_index", "check_pattern",
    "is_2to4", "quantize_per_token", "quantize_weight", "dequant", "__version__",
]
