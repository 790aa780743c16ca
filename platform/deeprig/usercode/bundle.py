"""The user's code as one bundle: the `.py` files under `code.paths`, their hashes, and
how they reach every process that imports them.

- The driver puts the code paths on `sys.path` (`activate`).
- When deeprig starts or joins Ray, the bundle goes in the job's runtime_env as
  `py_modules` (each top-level module file and package folder), so every Ray process of
  the job — training workers, Ray Data tasks, Tune trials, on every node — imports it.
- A training worker also gets the files themselves in its config and installs them
  (`install`) when they are not importable: a Ray someone else started (a notebook, the
  test suite's) has no py_modules of this job.
- The run records exactly these files (artifacts under `code/`, a sha256 manifest, and the
  tag `deeprig.code_sha256`).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deeprig.usercode.targets import ACTIVE_CODE_PATHS, UserCodeProblem

# More than this much source is not a code folder but a data or checkout folder.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_SKIPPED_FOLDERS = {"__pycache__", "node_modules", "site-packages"}
# Bundles this process installed from their shipped files (by manifest hash).
_INSTALLED: set[str] = set()


@dataclass(frozen=True)
class CodeFile:
    root: int  # index of the code path it was found under
    relative: str  # its path under that root, as Python imports it (mynets.py, pkg/a.py)
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class CodeBundle:
    roots: tuple[str, ...]  # absolute folders that go on sys.path
    files: tuple[CodeFile, ...]

    @classmethod
    def collect(cls, paths: list[str]) -> CodeBundle:
        """The bundle of `paths` (absolute: the loader resolves them against the spec's
        folder); UserCodeProblem on `code.paths` when one is missing or too big."""
        roots: list[str] = []
        files: list[CodeFile] = []
        for index, raw in enumerate(paths):
            path = Path(raw)
            if path.is_file() and path.suffix == ".py":
                roots.append(str(path.parent))
                files.append(CodeFile(index, path.name, path.read_bytes()))
            elif path.is_dir():
                roots.append(str(path))
                files += [
                    CodeFile(index, f.relative_to(path).as_posix(), f.read_bytes())
                    for f in _python_files(path)
                ]
            else:
                raise UserCodeProblem(
                    f"code.paths.{index}", f"{raw} is neither a folder nor a .py file"
                )
        size = sum(len(f.content) for f in files)
        if size > MAX_BUNDLE_BYTES:
            raise UserCodeProblem(
                "code.paths",
                f"{size / 2**20:.1f} MiB of Python under code.paths (at most "
                f"{MAX_BUNDLE_BYTES // 2**20} MiB): point it at the folder of your modules",
            )
        return cls(tuple(roots), tuple(files))

    @property
    def empty(self) -> bool:
        return not self.roots

    def manifest(self) -> str:
        """One line per file, `sha256  path` (sha256sum's format), paths under their root."""
        return "".join(f"{f.sha256}  {f.relative}\n" for f in self.files)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.manifest().encode()).hexdigest()

    def artifact_files(self) -> dict[str, bytes]:
        """The files as the run records them: by their path under their code path (under
        `<index>/` when there are several code paths)."""
        prefix = len(self.roots) > 1
        return {(f"{f.root}/" if prefix else "") + f.relative: f.content for f in self.files}

    def activate(self) -> None:
        """Put the code paths first on this process's sys.path."""
        for root in reversed(self.roots):
            if root not in sys.path:
                sys.path.insert(0, root)
            if root not in ACTIVE_CODE_PATHS:
                ACTIVE_CODE_PATHS.append(root)

    def py_modules(self) -> list[str]:
        """Ray runtime_env `py_modules` entries: each top-level module file and package
        folder of each root (Ray makes a folder importable by its name)."""
        entries: set[str] = set()
        for f in self.files:
            top = f.relative.split("/")[0]
            entries.add(str(Path(self.roots[f.root]) / top))
        return sorted(entries)

    def install(self) -> None:
        """On a worker: make the bundle importable. Where Ray shipped it (py_modules) or the
        code paths exist (one machine), that is the code paths; else the files are written
        to a temporary folder of this process."""
        if all(Path(root).is_dir() for root in self.roots):
            self.activate()
            return
        if self.sha256 in _INSTALLED:  # a reused actor (a Tune trial) installs once
            return
        base = Path(tempfile.mkdtemp(prefix="deeprig-code-"))
        _INSTALLED.add(self.sha256)
        for f in self.files:
            target = base / str(f.root) / f.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
        for index in reversed(range(len(self.roots))):
            sys.path.insert(0, str(base / str(index)))


def _python_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts[:-1]
        if any(p.startswith(".") or p in _SKIPPED_FOLDERS for p in parts):
            continue
        found.append(path)
    return found


def modules_outside(bundle: CodeBundle | None) -> list[str]:
    """Files of modules this process imported that are neither under the bundle's code
    paths, nor in the standard library, nor in an installed package: the user's code
    found them on this machine's path, and workers on another node will not."""
    import importlib.metadata
    import sysconfig

    installed = set(importlib.metadata.packages_distributions())
    system = [
        Path(sysconfig.get_paths()[k]).resolve()
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
    ]
    roots = [Path(r).resolve() for r in (bundle.roots if bundle else ())]
    found = []
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        file = getattr(module, "__file__", None)
        # (`__main__`, and aliases of it such as multiprocessing's `__mp_main__`, are the
        # program that runs, not code the job needs.)
        if not file or top in installed or top in sys.stdlib_module_names or top.startswith("__"):
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(p) for p in [*roots, *system]):
            found.append(str(path))
    return sorted(found)
