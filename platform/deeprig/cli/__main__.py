"""`python -m deeprig.cli ...`, the same as the `deeprig` command."""

from deeprig.cli import app

app()
