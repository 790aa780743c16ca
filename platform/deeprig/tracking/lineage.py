"""Where a run came from: spec hash, git commit, package versions, Ray job id."""

from __future__ import annotations

import hashlib
import json
import os
import platform as stdlib_platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from deeprig.tracking.tags import MLFLOW_GIT_COMMIT, Tag


def spec_hash(spec_dict: dict[str, Any]) -> str:
    canonical = json.dumps(spec_dict, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def git_commit(directory: Path) -> tuple[str, bool] | None:
    """(commit, dirty) of the repository holding `directory`, or None outside a repo."""
    try:
        commit = _git(directory, "rev-parse", "HEAD")
        status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(status)


def _git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
    )
    return done.stdout.strip()


def package_versions() -> dict[str, str]:
    versions = {"python": stdlib_platform.python_version()}
    for name in ("deeprig", "ray", "torch", "mlflow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lineage_tags(
    spec_dict: dict[str, Any], spec_dir: Path, ray_job_id: str | None
) -> dict[str, str]:
    tags = {
        Tag.JOB_NAME: str(spec_dict["name"]),
        Tag.KIND: str(spec_dict["kind"]),
        Tag.SPEC_HASH: spec_hash(spec_dict),
    }
    tags.update({f"{Tag.VERSION_PREFIX}{k}": v for k, v in package_versions().items()})
    found = git_commit(spec_dir)
    if found:
        tags[Tag.GIT_COMMIT] = found[0]
        tags[MLFLOW_GIT_COMMIT] = found[0]
        tags[Tag.GIT_DIRTY] = str(found[1]).lower()
    if ray_job_id:
        tags[Tag.RAY_JOB_ID] = ray_job_id
    submission = ray_submission_id()
    if submission:
        tags[Tag.RAY_SUBMISSION_ID] = submission
    return tags


def standard_tags(spec_text: str, spec_path: Path | None) -> dict[str, str]:
    """MLflow's own tags, so its UI's Source, User and Description show them: the spec as
    the source, where it ran, who ran it, and the spec's header comment as the note."""
    import getpass

    tags = {
        "mlflow.source.type": "JOB" if ray_submission_id() else "LOCAL",
        "mlflow.user": _user(getpass),
    }
    if spec_path is not None:
        tags["mlflow.source.name"] = str(spec_path)
    header = []
    # The file's own header: with --set, the recorded text is the resolved spec.
    text = spec_text
    if spec_path is not None and spec_path.is_file():
        text = spec_path.read_text()
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    note = "\n".join(header).strip()
    if note:
        tags["mlflow.note.content"] = note
    return tags


def _user(getpass) -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def ray_submission_id() -> str | None:
    """The Jobs API submission id when this driver runs as a submitted Ray job: Ray's job
    supervisor hands the driver its job config (with the id in its metadata) as JSON."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested spec -> {"optim.lr": "0.003", ...}: MLflow params are flat strings."""
    if isinstance(value, dict):
        for key, child in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), child, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | None) else str(value)
    return out
