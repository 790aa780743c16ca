"""The Ray nodes of a `deeprig cluster up` cluster, kept on the address they are given.

`ray start` turns a loopback `--node-ip-address` (and a loopback `--address` to join) into
the machine's network address: Ray assumes a multi-node cluster spans machines. Every node
would then register under that address and its servers listen on every interface. A
`cluster up` cluster lives on one machine, so its nodes run `ray start` through this
module's `main`, which keeps a loopback address as given; Ray's servers (GCS, raylets,
object managers, agents) listen on 127.0.0.1 alone when their node's address is 127.0.0.1.

The processes a node starts (Ray's workers, a job's driver) learn their own address from
Ray too; Ray's switch for one-machine clusters, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` in
their environment (`loopback_env`), makes it loopback. The same switch would stop `ray
start` from joining a cluster, so `main` turns it back on for itself alone.
"""

from __future__ import annotations

import os
import sys


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_env(host: str) -> dict[str, str]:
    """What the environment of a node on `host`, and of everything it starts, adds: Ray's
    one-machine switch when `host` is loopback (`ray start` itself goes through `main`)."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"} if is_loopback(host) else {}


def join_on_loopback(address: str) -> None:
    """A driver about to join the cluster at `address` (`host:port`, `ray://host:port`)
    takes loopback as its own address when `host` is loopback: Ray would take the machine's
    network address, which no node of a loopback cluster listens on. Through Ray's switch,
    in the environment (read when Ray is imported) and in Ray's constants when it is."""
    host = address.split("://")[-1].rpartition(":")[0]
    if not host or not (env := loopback_env(host)):
        return
    os.environ.update(env)
    if "ray._private.ray_constants" in sys.modules:
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ray_start_command(args: list[str]) -> list[str]:
    """`ray start ARGS`, run through `main` with this Python."""
    return [sys.executable, "-m", "deeprig.cluster.ray_nodes", "start", *args]


def node_addresses(dashboard: str) -> list[str]:
    """The address each alive node of the cluster registered under (what `ray.nodes()`
    calls NodeManagerAddress), read through Ray's state API."""
    from ray.util.state import list_nodes

    from deeprig.cluster.ray_env import use_token_auth_if_available

    use_token_auth_if_available()
    nodes = list_nodes(
        address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
    )
    return [node.node_ip for node in nodes]


def main() -> None:
    """Ray's own `ray start` command line, a loopback address left as given."""
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    from ray.scripts.scripts import main as ray_main

    # (only `ray start` reads the switch this process inherited as a guard)
    ray_constants.ENABLE_RAY_CLUSTER = True
    original = services.resolve_ip_for_localhost

    def kept_if_loopback(host: str) -> str:
        return host if is_loopback(host) and host != "localhost" else original(host)

    services.resolve_ip_for_localhost = kept_if_loopback
    sys.argv = ["ray", *sys.argv[1:]]
    ray_main()


if __name__ == "__main__":
    main()
