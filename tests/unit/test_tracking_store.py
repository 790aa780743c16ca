"""Where a command reads and writes runs (one rule, cluster/tracking_target.py), what deeprig
creates for a store being its owner's alone, and MLflow's fluent API leaving the process as
found."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from deeprig.cluster.state import LocalCluster, state_file
from deeprig.cluster.tracking_target import resolve_tracking
from deeprig.tracking.store import (
    EMBEDDED,
    checkpoint_storage,
    embedded_target,
    prepare_store,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def a_cluster_json(home: Path, pgid: int) -> LocalCluster:
    cluster = LocalCluster(
        dashboard="http://127.0.0.1:8265",
        gcs_address="127.0.0.1:6379",
        tracking_uri="http://127.0.0.1:5999",
        storage=str(home / "cluster" / "storage"),
        temp_dir="/tmp/deeprig-test",
        workers=0,
        cpus_per_node=1,
        process_groups={"head": pgid},
    )
    cluster.save(state_file(home))
    return cluster


def test_the_store_is_the_given_uri_then_the_environment_then_the_cluster_then_embedded(
    deeprig_home, monkeypatch
):
    assert resolve_tracking(None).chosen_by == EMBEDDED
    a_cluster_json(deeprig_home, os.getpgid(0))  # "running": this test's process group
    on_cluster = resolve_tracking(None)
    assert on_cluster.uri == "http://127.0.0.1:5999" and "cluster up" in on_cluster.chosen_by
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    assert resolve_tracking(None).uri == "http://elsewhere:5000"
    assert resolve_tracking(None).described == "http://elsewhere:5000 ($MLFLOW_TRACKING_URI)"
    given = resolve_tracking("sqlite:////tmp/x.db", given_by="--tracking-uri")
    assert given.uri == "sqlite:////tmp/x.db" and given.chosen_by == "--tracking-uri"


def test_a_cluster_whose_processes_are_gone_is_not_the_store(deeprig_home):
    ended = subprocess.Popen([sys.executable, "-c", ""], start_new_session=True)
    ended.wait()
    a_cluster_json(deeprig_home, ended.pid)
    assert resolve_tracking(None).chosen_by == EMBEDDED


def test_a_new_embedded_store_and_its_checkpoints_are_their_owners_alone(deeprig_home):
    from deeprig.tracking.runs import RunRecorder

    target = embedded_target(deeprig_home)
    prepare_store(target)
    spec = {"name": "private", "kind": "train"}
    RunRecorder.create(target, "private", spec, "name: private\n", deeprig_home)
    assert mode(deeprig_home / "mlflow.db") == 0o600
    assert mode(deeprig_home / "mlartifacts") == 0o700
    (deeprig_home / "mlflow.db").chmod(0o644)  # a store made before they were kept private
    prepare_store(target)
    assert mode(deeprig_home / "mlflow.db") == 0o600
    assert mode(Path(checkpoint_storage(None, deeprig_home))) == 0o700
    a_cluster_json(deeprig_home, os.getpgid(0))
    assert mode(state_file(deeprig_home)) == 0o600
    assert mode(deeprig_home / "cluster") == 0o700


@pytest.mark.parametrize("found", [None, "http://a-server:5000"])
def test_mlflows_fluent_api_leaves_the_tracking_uri_and_environment_as_found(
    found, monkeypatch, tmp_path
):
    import mlflow
    from deeprig.tracking.runs import fluent_api_on

    monkeypatch.chdir(tmp_path)
    if found is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", found)
    before = mlflow.get_tracking_uri()
    with fluent_api_on(f"sqlite:///{tmp_path / 'job.db'}"):
        assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'job.db'}"
    assert os.environ.get("MLFLOW_TRACKING_URI") == found  # unset stays unset
    assert mlflow.get_tracking_uri() == before


def test_two_jobs_in_one_process_each_record_to_their_own_store(tmp_path, monkeypatch):
    """A notebook running two jobs: the second must not record to a stray ./mlflow.db."""
    import numpy as np
    import torch
    from deeprig.tracking.logged_model import ModelInterface, log_torch_model
    from deeprig.tracking.runs import RunRecorder
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recorded = {}
    for job in ("first", "second"):
        home = tmp_path / job
        monkeypatch.setenv("DEEPRIG_HOME", str(home))
        target = resolve_tracking(None)
        recorder = RunRecorder.create(
            target, "notebook", {"name": job, "kind": "train"}, f"name: {job}\n", tmp_path
        )
        sample = np.zeros((2, 4), dtype=np.float32)
        # (pickled: the fluent API's round trip is the point, torch.export's time is not)
        net, interface = torch.nn.Linear(4, 2), ModelInterface("tensor", (4,))
        log_torch_model(recorder, net, interface, sample, None, exportable=False)
        recorder.finish("FINISHED")
        recorded[job] = (home, recorder.run_id)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert not (tmp_path / "mlflow.db").exists()
    for home, run_id in recorded.values():
        run = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(run_id)
        assert run.info.status == "FINISHED"
