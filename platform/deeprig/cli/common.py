"""What every verb shares: the consoles, the exit codes, loading a spec or exiting 2, and
the pre-flight check of any kind of spec."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from enum import IntEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import typer
from rich.console import Console
from rich.table import Table

from deeprig.spec import SpecError, load_spec
from deeprig.spec.loader import JobSpec, with_lines

if TYPE_CHECKING:
    from deeprig.cluster.resources import ClusterResources

console = Console()
errors = Console(stderr=True)

OUTPUT_HELP = "table (for people), json or csv (for scripts: whole values, every column)."
SET_HELP = "Override a spec field: --set optim.lr=0.01 (value parsed as YAML; repeatable)."


class ExitCode(IntEnum):
    """What `deeprig` exits with. A followed cluster job exits with its final status."""

    OK = 0
    FAILED = 1  # the job failed (its MLflow run is marked FAILED)
    BAD_INPUT = 2  # nothing was started or recorded
    STOPPED = 3  # a cluster job was stopped
    NOT_ENDED = 4  # a cluster job is still pending or running
    # The job failed for a reason outside it (a lost worker or node, the infrastructure:
    # deeprig.failures' classes a restart can cure), so running it again may succeed
    # (sysexits' EX_TEMPFAIL). Its run is marked FAILED.
    RETRY_MAY_SUCCEED = 75
    INTERRUPTED = 130  # Ctrl-C (the run is marked KILLED)


def report_spec_error(exc: SpecError, source: str) -> None:
    """Every problem, by field path and YAML line, with its fix."""
    # (a spec that is not UTF-8 text already says so: it has no lines to point at)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        exc = with_lines(exc, Path(source).read_text())
    count = len(exc.problems)
    errors.print(f"[bold red]{source}: {count} problem{'s' if count > 1 else ''}[/]")
    for problem in exc.problems:
        errors.print(
            f"  {problem.render(exc.source or source)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def bad_spec(exc: SpecError, job: Path) -> NoReturn:
    """Report the spec's problems and exit 2."""
    report_spec_error(exc, str(job))
    raise typer.Exit(ExitCode.BAD_INPUT)


def load_spec_or_exit(job: Path, overrides: list[str]) -> JobSpec:
    try:
        return load_spec(job, overrides)
    except SpecError as exc:
        bad_spec(exc, job)


def print_records(
    records: list[dict[str, Any]],
    columns: tuple[str, ...],
    output: str,
    table: Callable[[list[dict[str, Any]]], Table] | None = None,
    empty: str = "nothing yet",
    header: str | None = None,
) -> None:
    """Records for people (`--output table`: `header`, then the table `table` builds of
    them, or `empty` when there are none) or for scripts (`--output json|csv`: whole
    values, every column, no styling)."""
    import csv
    import json
    import sys

    if output == "table" and table is not None:
        if header:
            console.print(header, soft_wrap=True, highlight=False)
        console.print(table(records) if records else empty, soft_wrap=not records)
    elif output == "json":
        print(json.dumps(records, indent=1, default=str))
    elif output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    else:
        errors.print(f"--output {output!r}: one of table, json, csv")
        raise typer.Exit(ExitCode.BAD_INPUT)


# A table's columns for `fit_columns`: (header, cells, narrowest it may get: None, never).
Columns = list[tuple[str, list[str], int | None]]


def fit_columns(columns: Columns) -> list[int] | None:
    """Widths for a simple-head table of (header, cells, narrowest it may get: None for
    never) columns that fit the console: each as wide as its widest cell, then the widest
    of those that may narrow cut down one character at a time until the row fits (the
    table, `Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))`, adds 2
    columns between cells and 2 at its edges). None: they cannot fit."""
    from rich.cells import cell_len

    widths = [max(cell_len(text) for text in [header, *cells]) for header, cells, _ in columns]
    room = console.width - 2 * (len(columns) - 1) - 2
    while sum(widths) > room:
        narrowing = [i for i, (*_, least) in enumerate(columns) if least and widths[i] > least]
        if not narrowing:
            return None
        widths[max(narrowing, key=lambda i: widths[i])] -= 1
    return widths


@contextlib.contextmanager
def library_output_to(log: Path) -> Iterator[None]:
    """Ray's and MLflow's own messages to `log` instead of the terminal: the process's
    file descriptor 2 (where Ray's C++ core and every logging handler made before now
    write) goes to the file, while deeprig's console keeps the terminal."""
    import io
    import os
    import sys

    try:
        is_real_stderr = sys.stderr.fileno() == 2
    except (AttributeError, OSError, io.UnsupportedOperation):  # (captured, as in tests)
        is_real_stderr = False
    if not is_real_stderr:
        yield
        return
    from deeprig.tracking.store import private_file

    sys.stderr.flush()
    saved = os.dup(2)
    with private_file(log).open("ab") as sink:  # (the owner's alone: it logs their runs)
        os.dup2(sink.fileno(), 2)
    previous = sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb"), line_buffering=True)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)


def report_failure(exc: BaseException, log: Path | None) -> ExitCode:
    """A failed job's one short block (deeprig.failures: what happened, where, the likeliest
    fix, the log's path), its whole traceback in `log`, or here when `log` is None (--verbose);
    the exit code its class calls for."""
    import os
    import traceback

    from deeprig.failures import classify

    failure = classify(exc)
    if log is None:
        errors.print_exception()
    else:
        with contextlib.suppress(OSError):
            log.parent.mkdir(parents=True, exist_ok=True)
            # (the owner's alone, as the process's own log there: it holds their paths)
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a") as whole:
                traceback.print_exception(exc, file=whole)
                if failure.trace:  # (a worker's, which the driver's traceback lacks)
                    whole.write(f"\nWhere it was raised:\n{failure.trace}\n")
    for line in failure.block(str(log) if log else None):
        errors.print(line, markup=False, highlight=False, soft_wrap=True)
    return ExitCode.RETRY_MAY_SUCCEED if failure.facts.restart_cures else ExitCode.FAILED


def check_spec(spec: Any, resources: ClusterResources) -> str:
    """The kind's pre-flight checks (SpecError on any problem); the one-line summary."""
    from deeprig.runners import RUNNERS

    return RUNNERS[spec.kind].check(spec, resources).summary


class _Rendered(Protocol):
    def render(self, console: Console) -> None: ...


def run_to_its_end(
    run: Callable[[], _Rendered],
    home: Path,
    log_prefix: str,
    verbose: bool,
    spec_path: Path,
    interrupted: str,
) -> None:
    """A job run the way every verb that runs one does: `deeprig stop` / `ray job stop`
    (SIGTERM) end it like Ctrl-C, its run marked KILLED; libraries' output goes to the
    job's log unless --verbose; a failure prints its one short block; else the closing
    table."""
    if threading.current_thread() is threading.main_thread():  # (tests run it in threads)
        signal.signal(signal.SIGTERM, _interrupt)
    log = home / "logs" / f"{log_prefix}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    quiet = contextlib.nullcontext() if verbose else library_output_to(log)
    try:
        with quiet:
            outcome = run()
    except SpecError as exc:
        bad_spec(exc, spec_path)
    except KeyboardInterrupt:
        errors.print(f"[yellow]interrupted: {interrupted}[/]")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as exc:  # the job failed; its run is already marked FAILED
        raise typer.Exit(report_failure(exc, None if verbose else log)) from None
    outcome.render(console)
    note_records_kept(home)


def note_records_kept(home: Path) -> None:
    """One short block when a tracking server has not taken every record yet: the job
    ended all the same; where they wait, and the command that uploads them."""
    from deeprig.tracking.spool import SPOOL_FOLDER, spooled_runs

    waiting = spooled_runs(home)
    if waiting:
        runs = ", ".join(f"{run[:8]} ({count})" for run, count in waiting.items())
        errors.print(
            f"[yellow]the tracking server did not answer: records of run(s) {runs} are kept "
            f"in {home / SPOOL_FOLDER}.[/]\nupload them once it is back: deeprig runs --sync",
            soft_wrap=True,
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
