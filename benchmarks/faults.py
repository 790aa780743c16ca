"""The faults injected into real jobs on a `deeprig cluster up` cluster on this machine, and
what each cost, as the runs' MLflow records show it: the epochs trained again after the
restart, the epochs the run holds no point for and the points it holds twice (the goal is
none of either), the seconds from the fault to the first new epoch, and how the job ended
(an elastic job's world_size by epoch through a node loss and a node's return).

Each fault is a slow end-to-end test (tests/e2e): it injects the fault, reads the run back
from the cluster's MLflow server and appends its row to $DEEPRIG_FAULT_ROWS; this script
runs the modules named, one after the other, keeps every module's latest rows in one
file, and prints the table of all of them:

    python benchmarks/faults.py tests/e2e/test_node_loss.py      # ~12 min on 2 CPUs
    python benchmarks/faults.py tests/e2e/test_node_drain.py     # ~6 min
    python benchmarks/faults.py tests/e2e/test_fsdp_cluster.py   # ~2 min
    python benchmarks/faults.py                                  # the table so far

(Each module's tests end with their pytest timeout, 900 s a test.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = REPO / "tests" / "e2e" / "artifacts" / "fault-rows.jsonl"
COLUMNS = [
    ("fault", "fault injected"),
    ("job", "job"),
    ("epochs_recomputed", "epochs recomputed"),
    ("points_missing", "points missing"),
    ("duplicates", "duplicates"),
    ("recovery_s", "to the first new epoch (s)"),
    ("outcome", "outcome"),
]


def run_module(module: str, rows: Path) -> int:
    """The module's slow tests, its rows in place of those of its last run: pytest's exit."""
    kept = [r for r in read_rows(rows) if not r["test"].startswith(module)]
    fresh = rows.with_suffix(".new")
    fresh.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "slow", module, "-q", "--durations=5"]
    done = subprocess.run(command, cwd=REPO, env=os.environ | {"DEEPRIG_FAULT_ROWS": str(fresh)})
    rows.write_text("".join(json.dumps(r) + "\n" for r in [*kept, *read_rows(fresh)]))
    fresh.unlink(missing_ok=True)
    return done.returncode


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    """Markdown, as the issue's closing note quotes it."""

    def cell(value) -> str:
        return "-" if value is None else str(value).replace("|", "/")

    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="slow test modules to run (none: print)")
    parser.add_argument("--rows", type=Path, default=ROWS, help=f"the rows file ({ROWS})")
    args = parser.parse_args()
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    failed = [m for m in args.modules if run_module(m, args.rows) != 0]
    print(table(read_rows(args.rows)))
    if failed:
        print(f"failed: {' '.join(failed)} (their rows are those they recorded)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
