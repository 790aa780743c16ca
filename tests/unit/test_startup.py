"""What a job's start-up costs: the Ray Train controller and workers import only what they
use (each is a fresh process that unpickles deeprig's callbacks and loop before the first
epoch), the controller opens MLflow while the workers start, and a job's start-up counts
from its own start."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
from pathlib import Path

from deeprig.tracking.report_logger import SinkWarmUp

# What the controller unpickles (its callbacks) and what a worker adds (deeprig's loop).
CONTROLLER_MODULES = (
    "deeprig.runners.resource_wait",
    "deeprig.runners.retries",
    "deeprig.runners.preemptions",
    "deeprig.tracking.report_logger",
)
WORKER_MODULES = ("deeprig.failures", "deeprig.training.loop", "deeprig.training.user_loop")
# Never needed there: MLflow (the controller imports it when it first logs, not to unpickle
# its callbacks), and the runner table with every runner behind it. (FSDP is not among
# them: every torch optimizer's construction imports dynamo, and dynamo imports FSDP.)
NOT_THERE = ("mlflow", "sqlalchemy", "deeprig.runners.kinds", "deeprig.runners.train")
PLATFORM = Path(__file__).parents[2] / "platform"


def _source(module: str) -> Path | None:
    """deeprig's file of a module (a package's __init__.py); None for others' modules."""
    base = PLATFORM.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if module.startswith("deeprig") and path.exists():
            return path
    return None


def imported_with(modules: tuple[str, ...]) -> set[str]:
    """Every module that importing `modules` imports: deeprig's followed through the
    import statements their files run when imported (not those inside functions or under
    TYPE_CHECKING; a package's __init__ with each module in it), others' named. Read from
    the source, not by importing: no torch or Ray to import in a unit test."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)]
        if (path := _source(name)) is None:
            continue
        for statement in ast.parse(path.read_text()).body:
            if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
                continue
            for node in (
                ast.walk(statement) if isinstance(statement, ast.If | ast.Try) else [statement]
            ):
                if isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    named = (f"{node.module}.{alias.name}" for alias in node.names)
                    todo += [node.module, *(m for m in named if _source(m))]
    return seen


def test_the_train_controller_and_workers_import_neither_mlflow_nor_the_runners():
    for process, modules in (
        ("controller", CONTROLLER_MODULES),
        ("worker", CONTROLLER_MODULES + WORKER_MODULES),
    ):
        imported = imported_with(modules)
        assert "deeprig.tracking.sink" in imported  # (what it reads, it follows)
        unwanted = sorted(m for m in imported if m in NOT_THERE or m.split(".")[0] in NOT_THERE)
        assert unwanted == [], f"the Train {process}'s deeprig modules import {unwanted}"


def test_what_the_import_reader_follows_it_finds():
    # the runner table, behind the package's lazy names, holds every runner
    assert {"deeprig.runners.train", "deeprig.runners.rl"} <= imported_with(
        ("deeprig.runners.kinds",)
    )
    # a function's import is not followed: the sink imports MLflow only when first used
    assert "mlflow" not in imported_with(("deeprig.tracking.sink",))


def test_a_later_job_in_the_same_process_counts_its_start_up_from_its_own_start():
    code = (
        "import json, time, psutil\n"
        "from deeprig.runners.stages import StageClock\n"
        "first = StageClock()\n"
        "before = time.time()\n"
        "second = StageClock()\n"
        "print(json.dumps([first.started_at, psutil.Process().create_time(), before,\n"
        "    second.started_at, time.time(), second.seconds['imports']]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    first, process_began, before, second, after, imports = json.loads(result.stdout)
    assert first == process_began  # the process's first job: its imports are start-up too
    assert before <= second <= after  # a later one: from its own start
    assert imports < 0.5


def test_the_controller_opens_the_sinks_store_in_the_background_at_its_start():
    class Sink:
        def __init__(self) -> None:
            self.warmed = threading.Event()

        def warm_up(self) -> None:
            assert threading.current_thread() is not threading.main_thread()
            self.warmed.set()

    sink = Sink()
    SinkWarmUp(sink).after_controller_start(None)  # type: ignore[arg-type]
    assert sink.warmed.wait(timeout=30)
