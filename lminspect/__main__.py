"""``python -m lminspect`` (and ``torchrun -m lminspect train ...``)."""

from lminspect.cli import main

main()
