"""The team tracking server lets no one in without credentials: a real `deeprig cluster up`
(its MLflow server behind MLflow's basic-auth app), real users and permissions, the UI in
headless chromium behind the login."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO, free_port
from tests.e2e.conftest import assert_is_a_real_screenshot

pytestmark = pytest.mark.timeout(300)
DEEPRIG = [sys.executable, "-m", "deeprig.cli"]


def deeprig(*args: str, home, stdin: str | None = None, **env: str):
    return subprocess.run(
        [*DEEPRIG, *args],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")},
            "DEEPRIG_HOME": str(home),
            "COLUMNS": "100",
            **env,
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`deeprig cluster up --workers 0` (a head node and the tracking server): (home, its
    tracking URI, the credentials file's contents); an experiment `team` with one run,
    made by the admin."""
    from deeprig.cluster.local import down, find_cluster
    from deeprig.tracking.auth import ADMIN_USER, signed_in_as
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("auth-home")
    ports = {"--port": free_port(), "--dashboard-port": free_port(), "--tracking-port": 0}
    ports["--tracking-port"] = free_port()
    args = [str(a) for pair in ports.items() for a in pair]
    result = deeprig("cluster", "up", "--workers", "0", *args, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    state = find_cluster(home)
    credentials_path = home / "cluster" / "auth" / "credentials.json"
    credentials = json.loads(credentials_path.read_text())
    with signed_in_as(ADMIN_USER, credentials["admin_password"]):
        client = MlflowClient(state.tracking_uri)
        experiment = client.create_experiment("team")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "val_accuracy", 0.97)
        client.set_terminated(run.info.run_id)
    yield (
        home,
        state.tracking_uri,
        credentials,
        result.stdout,
        f"{experiment}/runs/{run.info.run_id}",
    )
    # (How `cluster down` stops a cluster is test_cluster_jobs.py's to check. Ray's raylet
    # and GCS outlast down's 10 s of grace after SIGTERM: 2 s, then SIGKILL, saves 8 s.)
    down(find_cluster(home) or state, home, grace_s=2.0)


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def test_anonymous_and_wrong_passwords_get_401(server):
    _, uri, credentials, _, _ = server
    search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=10"
    assert _get(search) == 401
    assert _get(search, "admin", "not-the-password") == 401
    assert _get(search, "admin", credentials["admin_password"]) == 200
    assert _get(f"{uri}/health") == 200  # what a load balancer probes stays open


def test_the_credentials_are_kept_0600_and_only_their_place_is_printed(server):
    home, _, credentials, up_output, _ = server
    path = home / "cluster" / "auth" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in " ".join(up_output.split())
    for secret in credentials.values():
        assert secret not in up_output


def test_a_reader_reads_and_cannot_log_and_an_outsider_sees_nothing(server):
    from deeprig.tracking.auth import signed_in_as
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    home, uri, _, _, run_path = server
    run_id = run_path.rsplit("/", 1)[1]
    for name in ("reader", "outsider"):
        added = deeprig(
            "users", "add", name, "--password-stdin", home=home, stdin=f"{name}-pass-12345\n"
        )
        assert added.returncode == 0, added.stdout + added.stderr
    granted = deeprig("users", "grant", "reader", "team", "read", home=home)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    listed = deeprig("users", "list", "-o", "json", home=home)
    names = {u["username"] for u in json.loads(listed.stdout)}
    assert {"admin", "deeprig-jobs", "reader", "outsider"} <= names

    with signed_in_as("reader", "reader-pass-12345"):
        client = MlflowClient(uri)
        assert client.get_run(run_id).data.metrics["val_accuracy"] == 0.97
        with pytest.raises(MlflowException) as refused:
            client.log_metric(run_id, "val_accuracy", 0.1)
        assert refused.value.get_http_status_code() == 403
    with signed_in_as("outsider", "outsider-pass-12345"):
        client = MlflowClient(uri)
        assert "team" not in {e.name for e in client.search_experiments()}
        with pytest.raises(MlflowException) as hidden:
            client.get_run(run_id)
        assert hidden.value.get_http_status_code() == 403


def test_granting_an_unknown_level_or_experiment_is_refused(server):
    home, *_ = server
    wrong_level = deeprig("users", "grant", "reader", "team", "owner", home=home)
    assert wrong_level.returncode == 2 and "read, edit, manage" in wrong_level.stderr
    no_experiment = deeprig("users", "grant", "reader", "nope", "read", home=home)
    assert no_experiment.returncode == 2 and "no experiment 'nope'" in no_experiment.stderr


def test_binding_to_every_address_without_auth_is_refused(tmp_path):
    result = deeprig("cluster", "up", "--host", "0.0.0.0", "--no-auth", home=tmp_path)
    assert result.returncode == 2
    flat = " ".join(result.stderr.split())
    assert "--host 0.0.0.0 without authentication" in flat and "drop --no-auth" in flat
    assert not (tmp_path / "cluster" / "cluster.json").exists()  # nothing was started


@pytest.mark.timeout(180)
def test_the_ui_behind_the_login_shows_the_run(server, chromium_page, test_artifacts):
    from playwright.sync_api import Error, expect

    _, uri, credentials, _, run_path = server
    screenshot = test_artifacts / "tracking_ui_behind_login.png"
    screenshot.unlink(missing_ok=True)
    context = chromium_page.context.browser.new_context(
        viewport={"width": 1400, "height": 900},
        http_credentials={"username": "admin", "password": credentials["admin_password"]},
    )
    page = context.new_page()
    with pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
        chromium_page.goto(f"{uri}/")  # a browser without credentials gets no page
    page.goto(f"{uri}/#/experiments/{run_path}")
    metric_row = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name="val_accuracy", exact=True)
    )
    expect(metric_row).to_contain_text("0.97", timeout=60_000)
    page.screenshot(path=screenshot, full_page=True)
    context.close()
    assert_is_a_real_screenshot(screenshot, width=1400)
