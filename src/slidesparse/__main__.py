"""``python -m slidesparse`` = the ``slidesparse`` console script (for trees used without installing)."""

from .cli import main

main()
