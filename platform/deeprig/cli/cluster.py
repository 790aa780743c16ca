"""`deeprig cluster up|add-node|restart tracking|status|down`: a multi-node Ray cluster and an
MLflow tracking server on this machine. Parsing and printing only; the work is in
deeprig.cluster.local."""

from __future__ import annotations

import typer
from rich.table import Table

from deeprig.cli.common import ExitCode, console, errors

cluster_app = typer.Typer(
    help="A Ray cluster (head + worker nodes via `ray start`) and an MLflow tracking server "
    "on this machine.\n\nExample: deeprig cluster up --workers 1",
    no_args_is_help=True,
)
restart_app = typer.Typer(
    help="Restart one service of the running local cluster, the rest left running.\n\n"
    "Example: deeprig cluster restart tracking",
    no_args_is_help=True,
)
cluster_app.add_typer(restart_app, name="restart")


@cluster_app.command("up")
def cluster_up(
    workers: int = typer.Option(1, min=0, help="Worker nodes besides the head."),
    cpus_per_node: float = typer.Option(
        None, help="CPUs each node offers (default: this machine's CPUs split over the nodes)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address every service binds to."),
    port: int = typer.Option(6379, help="Ray head (GCS) port."),
    dashboard_port: int = typer.Option(8265, help="Ray dashboard / Jobs API port."),
    tracking_port: int = typer.Option(5000, help="MLflow tracking server port."),
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        help="Serve the tracking server without MLflow's basic auth (127.0.0.1 only).",
    ),
) -> None:
    """Start a multi-node Ray cluster and an MLflow tracking server on this machine.

    Jobs submitted to it record to the tracking server and keep checkpoints in a
    folder every node sees. The tracking server asks for credentials (MLflow's
    basic auth: an admin, and the user jobs log as; add people with `deeprig
    users add`). Every verb on this machine reads and writes runs there while
    it runs. `deeprig cluster down` stops all of it.

    Example: deeprig cluster up --workers 1; deeprig submit jobs/digits_cnn.yaml
    """
    from deeprig.cluster.local import ClusterError, OpenToTheNetwork, up

    try:
        cluster = up(
            workers=workers,
            cpus_per_node=cpus_per_node,
            host=host,
            port=port,
            dashboard_port=dashboard_port,
            tracking_port=tracking_port,
            say=lambda text: console.print(f"  {text}", soft_wrap=True),
            auth=not no_auth,
        )
    except OpenToTheNetwork as exc:
        errors.print(f"[bold red]refused:[/] {exc}")
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    except ClusterError as exc:
        errors.print(f"[bold red]cluster up failed:[/] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    console.print(
        f"[green]cluster up[/]: dashboard {cluster.dashboard}, tracking {cluster.tracking_uri}\n"
        "  submit: deeprig submit jobs/digits_cnn.yaml   stop it all: deeprig cluster down"
    )


@cluster_app.command("add-node")
def cluster_add_node() -> None:
    """Start one more worker node and join it to the running local cluster.

    A lost node's replacement: a fixed-size job waiting for room continues on it,
    and an elastic job (scaling.num_workers: {min, max}) grows into it at its next
    look for room (scaling.resize_interval_s).

    Example: deeprig cluster add-node
    """
    from deeprig.cluster.local import ClusterError, add_node

    try:
        role = add_node(say=lambda text: console.print(f"  {text}", soft_wrap=True))
    except ClusterError as exc:
        errors.print(f"[bold red]cluster add-node failed:[/] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    console.print(f"[green]node added[/]: {role} (deeprig cluster status lists the nodes)")


@restart_app.command("tracking")
def cluster_restart_tracking(
    timeout_s: float = typer.Option(120.0, help="Seconds to wait for it to answer."),
) -> None:
    """Restart the cluster's MLflow tracking server on its port and store.

    Only the tracking server: the Ray nodes and running jobs go on. Jobs keep
    their records while it is away and deliver them, in order, once it answers.
    A server that is gone (crashed, killed) is started again; one that runs is
    stopped first.

    Example: deeprig cluster restart tracking
    """
    from deeprig.cluster.local import ClusterError, restart_tracking, running_cluster
    from deeprig.tracking.store import deeprig_home

    home = deeprig_home()
    cluster = running_cluster(home)
    if cluster is None:
        errors.print("no cluster is up (deeprig cluster up starts one)")
        raise typer.Exit(ExitCode.FAILED)
    try:
        restart_tracking(
            cluster,
            home,
            timeout_s,
            say=lambda text: console.print(f"  {text}", soft_wrap=True),
            running_too=True,
        )
    except ClusterError as exc:
        errors.print(f"[bold red]cluster restart tracking failed:[/] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    console.print(f"[green]tracking server restarted[/]: {cluster.tracking_uri}")


@cluster_app.command("status")
def cluster_status() -> None:
    """Show the local cluster's nodes, CPUs, tracking server and processes.

    Example: deeprig cluster status
    """
    from deeprig.cluster.jobs import dashboard_resources
    from deeprig.cluster.local import find_cluster, processes
    from deeprig.cluster.tracking_server import tracking_healthy

    cluster = find_cluster()
    if cluster is None:
        console.print("no cluster is up (deeprig cluster up starts one)")
        raise typer.Exit(ExitCode.FAILED)
    table = Table(show_header=False, title="local cluster")
    try:
        resources = dashboard_resources(cluster.dashboard)
        table.add_row("nodes", f"{resources.nodes} alive, {resources.cpus:g} CPUs")
    except Exception as exc:
        table.add_row("nodes", f"[red]dashboard not answering: {exc}[/]")
    table.add_row("dashboard", cluster.dashboard)
    healthy = tracking_healthy(cluster.tracking_uri)
    table.add_row("tracking", f"{cluster.tracking_uri} ({'healthy' if healthy else 'DOWN'})")
    table.add_row("checkpoints", cluster.storage)
    table.add_row("processes", str(len(processes(cluster))))
    table.add_row("logs", cluster.logs)
    console.print(table)


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the local cluster and its tracking server; no process is left behind.

    The recorded runs and checkpoints stay in the deeprig home folder.

    Example: deeprig cluster down
    """
    from deeprig.cluster.local import down, find_cluster

    cluster = find_cluster()
    if cluster is None:
        console.print("no cluster is up")
        return
    left = down(cluster)
    if left:
        errors.print(f"[red]processes still running: {left}[/]")
        raise typer.Exit(ExitCode.FAILED)
    console.print("[green]cluster down[/]: every process stopped")
