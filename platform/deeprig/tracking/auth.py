"""The team tracking server's door: MLflow's own basic-auth app (`mlflow server --app-name
basic-auth`), its users and per-experiment permissions. No proxy of deeprig's own.

`deeprig cluster up` keeps what the server needs under `$DEEPRIG_HOME/cluster/auth/`: the
auth config (`basic_auth.ini`: its user database beside it, and `default_permission =
NO_PERMISSIONS`, so a user sees only the experiments they were granted or created) and
`credentials.json` (mode 0600): the admin's password, generated on first start, the jobs
user's, and the Flask secret key. Jobs on the cluster log as the jobs user through the
environment MLflow reads (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`), set on
the cluster's nodes; never in a spec, the job's metadata, its logs or the run's params.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deeprig.tracking.store import private_file, private_folder

ADMIN_USER = "admin"
JOBS_USER = "deeprig-jobs"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PERMISSIONS = {"read": "READ", "edit": "EDIT", "manage": "MANAGE"}


class AuthProblem(RuntimeError):
    """The tracking server refused or could not do what was asked (the message says why)."""


@dataclass(frozen=True)
class ServerCredentials:
    admin_password: str
    jobs_password: str
    flask_secret: str

    @classmethod
    def load_or_create(cls, folder: Path) -> ServerCredentials:
        """This server's credentials; made (and written with mode 0600) on first start."""
        path = credentials_file(folder)
        if path.exists():
            return cls(**json.loads(path.read_text()))
        made = cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_hex(32))
        private_folder(folder)
        # Created 0600 from the start: never readable by others, even for an instant.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(made), out, indent=1)
        return made


def auth_folder(home: Path) -> Path:
    """The tracking server's auth config, user database and credentials (0600)."""
    return home / "cluster" / "auth"


def credentials_file(folder: Path) -> Path:
    return folder / "credentials.json"


def record_server_uri(folder: Path, uri: str) -> None:
    private_file(folder / "server_uri").write_text(uri)


@dataclass(frozen=True)
class LocalServer:
    """The tracking server this home's `cluster up` started."""

    uri: str
    credentials: ServerCredentials
    credentials_path: Path


def local_server(home: Path, uri: str | None = None) -> LocalServer | None:
    """This home's cluster server, when it has credentials (and is the one at `uri`)."""
    folder = auth_folder(home)
    recorded = folder / "server_uri"
    if not recorded.exists() or not credentials_file(folder).exists():
        return None
    local = recorded.read_text().strip().rstrip("/")
    if uri is not None and uri.rstrip("/") != local:
        return None
    return LocalServer(local, ServerCredentials.load_or_create(folder), credentials_file(folder))


def sign_in_if_local_server(uri: str, home: Path) -> None:
    """A deeprig command on the machine whose `cluster up` started the server at `uri`
    talks to it as the jobs user, unless the environment names a user already."""
    if os.environ.get(USERNAME_ENV):
        return
    server = local_server(home, uri)
    if server is not None:
        os.environ.update(jobs_env(server.credentials))


def server_env(folder: Path, credentials: ServerCredentials) -> dict[str, str]:
    """What `mlflow server --app-name basic-auth` needs in its environment."""
    database = folder / "basic_auth.db"
    if database.exists():  # (made before its modes were kept private)
        private_file(database)
    config = private_file(folder / "basic_auth.ini")
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{database}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request pays a PBKDF2 check of the password (measured: a job's
        # shutdown then outlasted Ray's stop grace and its run stayed RUNNING). One
        # server process, so a changed password is honoured at once; a deleted user's
        # cached login lasts at most this long.
        "auth_cache_ttl_seconds = 60\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials.admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials.flask_secret,
    }


def jobs_env(credentials: ServerCredentials) -> dict[str, str]:
    """The environment through which a job's MLflow client logs as the jobs user."""
    return {USERNAME_ENV: JOBS_USER, PASSWORD_ENV: credentials.jobs_password}


@contextlib.contextmanager
def signed_in_as(username: str, password: str) -> Iterator[None]:
    """MLflow's clients in this block present these credentials (they read the env)."""
    saved = {key: os.environ.get(key) for key in (USERNAME_ENV, PASSWORD_ENV)}
    os.environ[USERNAME_ENV], os.environ[PASSWORD_ENV] = username, password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _auth_client(uri: str) -> Any:
    import warnings

    # (importing it imports MLflow's server, whose Starlette warns of a deprecation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient
    return AuthServiceClient(uri)


def add_user(uri: str, admin_password: str, username: str, password: str) -> None:
    from mlflow.exceptions import MlflowException

    with signed_in_as(ADMIN_USER, admin_password):
        try:
            _auth_client(uri).create_user(username, password)
        except MlflowException as exc:
            raise AuthProblem(_reason(exc)) from None


def list_users(uri: str, admin_password: str) -> list[dict[str, Any]]:
    """Every user: name and whether an admin."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    creds = MlflowHostCreds(uri, username=ADMIN_USER, password=admin_password)
    response = http_request(creds, "/api/2.0/mlflow/users/list", "GET")
    if response.status_code != 200:
        raise AuthProblem(f"the tracking server answered {response.status_code}")
    users = response.json().get("users", [])
    return [{"username": u["username"], "admin": bool(u.get("is_admin"))} for u in users]


def grant(uri: str, admin_password: str, username: str, experiment: str, level: str) -> str:
    """Give `username` read, edit or manage on `experiment` (by name); its id."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with signed_in_as(ADMIN_USER, admin_password):
        found = MlflowClient(uri).get_experiment_by_name(experiment)
        if found is None:
            raise AuthProblem(f"no experiment {experiment!r} on {uri}")
        try:
            _auth_client(uri).grant_user_permission(
                username, "experiment", found.experiment_id, PERMISSIONS[level]
            )
        except MlflowException as exc:
            raise AuthProblem(_reason(exc)) from None
    return found.experiment_id


def ensure_user(uri: str, admin_password: str, username: str, password: str) -> None:
    """`username` exists (created on a new server; left as it is on a restarted one)."""
    try:
        add_user(uri, admin_password, username, password)
    except AuthProblem as exc:
        if "already exists" not in str(exc):
            raise


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.splitlines()[0]
