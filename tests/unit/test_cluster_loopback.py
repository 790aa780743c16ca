"""A `cluster up` cluster on loopback (deeprig.cluster.ray_nodes): which processes get
Ray's one-machine switch, and a driver joining such a cluster takes loopback as its own
address. Pure logic; no Ray is started (the e2e node-loss test lists a real cluster's
nodes)."""

from __future__ import annotations

import os
import sys

import pytest
from deeprig.cluster.ray_nodes import (
    is_loopback,
    join_on_loopback,
    loopback_env,
    ray_start_command,
)

SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_a_loopback_node_and_what_it_starts_get_rays_one_machine_switch(host):
    assert is_loopback(host)
    assert loopback_env(host) == {SWITCH: "0"}


@pytest.mark.parametrize("host", ["192.0.2.2", "0.0.0.0", "head.example"])
def test_a_node_others_reach_keeps_rays_defaults(host):
    assert not is_loopback(host) and loopback_env(host) == {}


def test_nodes_start_through_deeprigs_ray_start_with_this_python():
    command = ray_start_command(["--head", "--node-ip-address=127.0.0.1"])
    assert command[:4] == [sys.executable, "-m", "deeprig.cluster.ray_nodes", "start"]
    assert command[4:] == ["--head", "--node-ip-address=127.0.0.1"]


def test_a_driver_joining_a_loopback_cluster_takes_loopback_as_its_address(monkeypatch):
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray._private.worker

    monkeypatch.delenv(SWITCH, raising=False)
    # A driver not yet joined: the suite's own local Ray (if up) would answer for it.
    monkeypatch.setattr(ray._private.worker, "_global_node", None)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    join_on_loopback("192.0.2.2:6379")  # a cluster others reach: Ray's own rules
    assert SWITCH not in os.environ and ray_constants.ENABLE_RAY_CLUSTER
    join_on_loopback("ray://127.0.0.1:10001")
    assert os.environ[SWITCH] == "0" and not ray_constants.ENABLE_RAY_CLUSTER
    # What Ray then resolves the cluster's address and its own to: loopback, as given.
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_a_lost_node_of_one_machine_is_named_by_its_role():
    from deeprig.runners.resource_wait import NodeView, WorkerNeeds, lacking

    def view(name: str, alive: bool = True) -> NodeView:
        entry = {"NodeID": f"{name}-id", "NodeName": name, "NodeManagerAddress": "127.0.0.1"}
        return NodeView.of(entry | {"Alive": alive, "Resources": {"CPU": 1.0}})

    text = lacking(WorkerNeeds(3, 1.0, 0.0, True), 80, [view("worker-2", False)], [view("head")])
    assert "nodes lost: worker-2 at 127.0.0.1 (worker-2, 1 CPU)" in text
