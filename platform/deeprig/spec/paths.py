"""Paths in a spec, made absolute once when it is loaded: the user's code relative to the
spec file's folder, local data relative to the directory deeprig runs in."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_code_paths(raw: dict[str, Any], folder: Path) -> None:
    """`code.paths` are relative to the spec file's folder (not the current directory), so
    a spec runs the same from anywhere: made absolute here, once."""
    code = raw.get("code")
    if not isinstance(code, dict):
        return
    paths = code.get("paths")
    if isinstance(paths, list):
        code["paths"] = [
            str((folder / p).resolve()) if isinstance(p, str) and p else p for p in paths
        ]


def resolve_data_paths(raw: dict[str, Any]) -> None:
    """A local `data.path` / `data.test_path` is relative to the directory deeprig runs in:
    made absolute here, once, because a Tune trial or a Ray worker that reads it runs in
    a directory of its own. URIs stay as they are."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("path", "test_path"):
        value = data.get(key)
        if isinstance(value, str) and value and "://" not in value:
            data[key] = str(Path(value).expanduser().resolve())
