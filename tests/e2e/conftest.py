"""Resources of the end-to-end tests: a headless browser, a folder for what a test leaves
to look at (screenshots), the deeprig CLI as a user runs it (`deeprig`), and a real
`deeprig cluster up` cluster on this machine (`start_cluster`). The tracking UI as `deeprig
ui` serves it (`tracking_ui`) is in tests/conftest.py: the integration tests use it too."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

DEEPRIG = [sys.executable, "-m", "deeprig.cli"]

# Debian's chromium (CI installs it with apt): Playwright drives it as it is, so nothing is
# downloaded at test time (`playwright install` is not needed).
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS_ENV = "DEEPRIG_TEST_ARTIFACTS"


@pytest.fixture
def chromium_page():
    """A page of headless Debian chromium driven by Playwright. Skips where chromium is not
    installed (CI installs it, so there it runs)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


@pytest.fixture
def test_artifacts() -> Path:
    """Where tests leave files to look at: $DEEPRIG_TEST_ARTIFACTS, else tests/e2e/artifacts/
    (git-ignored)."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "tests" / "e2e" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_is_a_real_screenshot(path: Path, width: int) -> None:
    from PIL import Image

    assert path.stat().st_size > 20_000, f"{path}: {path.stat().st_size} bytes"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == width and image.height >= 900, image.size
        # A blank or half-rendered page has a handful of colours; this one has text, a chart.
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100, f"{path}: almost blank"


def deeprig(*args: str, home: Path, timeout: float = 240, **env: str):
    """`deeprig ARGS` in a subprocess, as a user runs it, with deeprig's home at `home` (and
    no tracking URI of this process's): its CompletedProcess, output captured."""
    return subprocess.run(
        [*DEEPRIG, *args],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "DEEPRIG_HOME": str(home),
            "COLUMNS": "200",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def start_cluster(tmp_path_factory):
    """`start_cluster(workers, cpus_per_node=None)`: `deeprig cluster up --workers N` on free
    ports, as a user runs it, in a home of its own: (home, its LocalCluster). This process
    then reads the cluster as deeprig on this machine does: with Ray's token and signed in
    to its tracking server. Each cluster still up when the module ends is brought down, and
    no process of it may be left."""
    from deeprig.cluster.local import down, find_cluster

    homes: list[Path] = []

    def start(workers: int, cpus_per_node: float | None = None):
        home = tmp_path_factory.mktemp("cluster-home")
        homes.append(home)
        ports = ["--port", free_port(), "--dashboard-port", free_port()]
        ports += ["--tracking-port", free_port()]
        cpus = ["--cpus-per-node", f"{cpus_per_node:g}"] if cpus_per_node else []
        up = deeprig("cluster", "up", "--workers", str(workers), *cpus, *map(str, ports), home=home)
        assert up.returncode == 0, up.stdout + up.stderr
        state = find_cluster(home)
        from deeprig.cluster.ray_env import use_token_auth_if_available
        from deeprig.tracking.auth import sign_in_if_local_server

        use_token_auth_if_available()
        sign_in_if_local_server(state.tracking_uri, home)
        return home, state

    yield start
    for home in homes:
        if (state := find_cluster(home)) is not None:  # (a test may bring its own down)
            assert down(state, home) == []  # no process left behind


# --- jobs on a `cluster up` cluster, and its nodes lost -----------------------------------------


def submit_digits(home: Path, name: str, epochs: int, *settings: str) -> str:
    """jobs/digits_mlp.yaml submitted with --no-wait to the cluster of `home`, in experiment
    `name`, one worker a node (STRICT_SPREAD), `max_failures: 2`, `settings` (`--set`s) on
    top: its Ray job id."""
    submitted = deeprig(
        "submit",
        "jobs/digits_mlp.yaml",
        "--no-wait",
        *("--set", f"name={name}", "--set", f"tracking.experiment={name}"),
        *("--set", f"optim.num_epochs={epochs}", "--set", "failure.max_failures=2"),
        *("--set", "scaling.placement_strategy=STRICT_SPREAD"),
        *(item for setting in settings for item in ("--set", setting)),
        home=home,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return next(w for w in submitted.stdout.split() if w.startswith(f"deeprig-{name}"))


def job_status(home: Path, job_id: str) -> str:
    """The Ray job's status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED."""
    from deeprig.cluster.jobs import jobs_client
    from deeprig.cluster.local import find_cluster

    return str(jobs_client(find_cluster(home).dashboard).get_job_status(job_id)).split(".")[-1]


def run_of(client, experiment: str):
    """The run of `experiment`; None before the job made it (MLflow's basic auth answers
    403 for an experiment that does not exist yet)."""
    from mlflow.exceptions import MlflowException

    from tests.conftest import runs_in

    try:
        runs = runs_in(client, experiment)
    except MlflowException:
        return None
    return runs[0] if runs else None


def metric_steps(client, experiment: str, key: str) -> dict[int, float]:
    """{step: value} of `key` in the run of `experiment` ({} before it exists)."""
    run = run_of(client, experiment)
    if run is None:
        return {}
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def newest_worker_node(home: Path) -> str:
    """The role (`worker-N`) of the last worker node started that still runs."""
    from deeprig.cluster.local import find_cluster
    from deeprig.cluster.processes import group_alive

    state = find_cluster(home)
    groups = state.process_groups.items()
    alive = [r for r, g in groups if r.startswith("worker-") and group_alive(g)]
    return max(alive, key=lambda role: int(role.split("-")[1]))


def kill_node(home: Path, role: str) -> int:
    """SIGKILL every process of the node `role` started (its `ray start`, raylet, workers),
    as a machine that vanishes: how many there were."""
    import signal

    import psutil
    from deeprig.cluster.local import find_cluster

    state = find_cluster(home)
    root = psutil.Process(state.process_groups[role])
    node = [root, *root.children(recursive=True)]
    for process in node:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(node, timeout=10)
    return len(node)


# --- what a fault cost, from the MLflow records of the run it hit ----------------------------

# A file (JSON lines) that each fault test appends its row to, for benchmarks/faults.py's table.
FAULT_ROWS_ENV = "DEEPRIG_FAULT_ROWS"


def epoch_history(client, run_id: str, key: str = "epoch") -> list:
    """The run's `key` points, in step order (duplicates kept: they are counted)."""
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))


def missing_and_duplicated(client, run_id: str, epochs: int, key: str = "epoch"):
    """(epochs of 0..epochs-1 the run holds no `key` point for, points beyond one an epoch)."""
    steps = [m.step for m in epoch_history(client, run_id, key)]
    return sorted(set(range(epochs)) - set(steps)), len(steps) - len(set(steps))


def sizes_by_epoch(client, run_id: str) -> list[tuple[int, int]]:
    """An elastic run's `world_size` through its epochs: [(size, epochs in a row)]."""
    sizes = [int(m.value) for m in epoch_history(client, run_id, "world_size")]
    return [(size, len(list(run))) for size, run in itertools.groupby(sizes)]


def first_epoch_after(client, run_id: str, wall_s: float, key: str = "epoch"):
    """The first `key` point the run records as ended after `wall_s` (time.time()); None
    while there is none. Its timestamp is when the worker ended that epoch."""
    later = [m for m in epoch_history(client, run_id, key) if m.timestamp / 1000 > wall_s]
    return min(later, key=lambda m: m.timestamp, default=None)


def record_fault(
    fault: str,
    job: str,
    recomputed: int | None,
    missing: list[int],
    duplicates: int,
    recovery_s: float | None,
    outcome: str,
) -> None:
    """One row of the fault table: printed, and appended to $DEEPRIG_FAULT_ROWS if set.
    `recomputed`: epochs trained again after the restart (None: not applicable);
    `recovery_s`: from the fault to the first epoch the run recorded after it."""
    row = {
        "fault": fault,
        "job": job,
        "epochs_recomputed": recomputed,
        "points_missing": len(missing),
        "duplicates": duplicates,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "outcome": outcome,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
    }
    print(f"fault: {json.dumps(row)}")
    if rows := os.environ.get(FAULT_ROWS_ENV):
        with open(rows, "a") as out:
            out.write(json.dumps(row) + "\n")
