"""The git commit a run records: the commit of the repository holding the spec, whether
tracked files differ from it, and nothing outside a repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deeprig.tracking.lineage import git_commit


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


def test_the_commit_and_whether_tracked_files_changed(tmp_path: Path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "job.yaml").write_text("name: a\n")
    _git(tmp_path, "add", "job.yaml")
    _git(tmp_path, "commit", "-q", "-m", "a job")
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "untracked.txt").write_text("not part of the commit\n")
    assert git_commit(tmp_path) == (head, False)
    (tmp_path / "job.yaml").write_text("name: b\n")
    assert git_commit(tmp_path) == (head, True)


def test_outside_a_repository_there_is_no_commit(tmp_path: Path):
    assert git_commit(tmp_path) is None
