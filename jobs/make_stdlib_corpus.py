"""Write a code corpus, Python standard library modules' own source, as CSV: the input of
jobs/stdlib_transformer.yaml (a causal transformer's language modelling).

    python jobs/make_stdlib_corpus.py            # -> jobs/data/stdlib.csv
    python jobs/make_stdlib_corpus.py OUT.csv

One row per module (columns `module`, `text`), in the fixed order below, read from the
running interpreter's standard library (nothing downloaded). The language model's split
is chronological: the last modules, about a tenth of the characters, validate.
"""

from __future__ import annotations

import csv
import sys
import sysconfig
from pathlib import Path

MODULES = (
    "abc", "bisect", "calendar", "colorsys", "contextlib", "copy", "csv", "dataclasses",
    "difflib", "enum", "fnmatch", "fractions", "functools", "getopt", "glob", "heapq",
    "keyword", "linecache", "numbers", "operator", "queue", "random", "reprlib", "sched",
    "shlex", "shutil", "statistics", "string", "textwrap", "tokenize", "traceback",
    "types", "weakref", "gettext", "graphlib", "secrets", "stat", "struct",
)  # fmt: skip


def write_stdlib_csv(out: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["module", "text"])
        for module in MODULES:
            writer.writerow([module, (stdlib / f"{module}.py").read_text(encoding="utf-8")])
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/stdlib.csv"
    print(f"wrote {write_stdlib_csv(target)}")
