"""Spec problems: one per field, each naming the field path and the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec. `path` is dotted (`scaling.num_workers`), or '' for the file."""

    path: str
    message: str
    line: int | None = None
    override: str | None = None  # the `--set` the bad value came from, if it did

    def render(self, source: str | None = None) -> str:
        where = source or "spec"
        if self.override is not None:
            where = f"--set {self.override}"
        elif self.line is not None:
            where = f"{where}:{self.line}"
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {field}{self.message}"


class SpecError(Exception):
    """Raised with every problem found, so a user fixes them all in one go."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(p.render(source) for p in problems))
