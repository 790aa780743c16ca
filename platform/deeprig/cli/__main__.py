"""`python -m deeprig.cli ...`, the same as the `deeprig` command."""

from deeprig.cli import main

main()
