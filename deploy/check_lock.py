"""Check that this Python environment holds exactly the versions that pin files name.

    python deploy/check_lock.py requirements.lock deploy/requirements-deploy.txt \
        --python 3.11 --require ray torch mlflow

Every `name==version` line of the pin files whose package is installed must match the
installed version (a local label such as torch's `+cpu` is ignored, as pip does when it
matches `==`). Pinned packages that are not installed are fine: the lock also pins the dev and
benchmark tools, which the image does not install. `--require` names packages that must be
installed; `--python` the `major.minor` the interpreter must be. Exit 1 with every mismatch
listed. The container build runs it (deploy/Dockerfile); stdlib only.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def problems(pin_files: list[Path], required: list[str], python: str | None) -> list[str]:
    found = []
    if python and "{}.{}".format(*sys.version_info[:2]) != python:
        found.append(f"python: {python} wanted, {sys.version.split()[0]} installed")
    for path in pin_files:
        for name, pinned in read_pins(path).items():
            try:
                installed = version(name)
            except PackageNotFoundError:
                continue
            if installed.split("+")[0] != pinned.split("+")[0]:
                found.append(f"{name}: {path.name} pins {pinned}, {installed} installed")
    for name in required:
        try:
            version(name)
        except PackageNotFoundError:
            found.append(f"{name}: required but not installed")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pin_files", nargs="+", type=Path)
    parser.add_argument("--require", nargs="*", default=[], help="packages that must be present")
    parser.add_argument("--python", help="major.minor the interpreter must be, e.g. 3.11")
    args = parser.parse_args(argv)
    found = problems(args.pin_files, args.require, args.python)
    for line in found:
        print(f"lock drift: {line}", file=sys.stderr)
    if not found:
        print(f"environment matches {', '.join(str(p) for p in args.pin_files)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
