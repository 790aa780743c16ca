"""Import a `module:attr` target, with errors that say where deeprig looked and what the
module does hold."""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from typing import Any

from deeprig.spec.common import TARGET_PATTERN

# The code paths this process put on sys.path (CodeBundle.activate / install): where a
# module that is not found was looked for.
ACTIVE_CODE_PATHS: list[str] = []


class UserCodeProblem(ValueError):
    """User code that cannot be used; `path` is the spec field to fix."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def resolve_target(target: str, field: str, search_path: list[str] | None = None) -> Any:
    """The object `module:attr` names, imported from `search_path` (the code paths) or the
    installed packages. UserCodeProblem names `field` and the fix."""
    if not re.match(TARGET_PATTERN, target):
        raise UserCodeProblem(field, f"{target!r} is not module:attr (e.g. 'mynets:SmallResNet')")
    module_name, _, attr_path = target.partition(":")
    module = _import(module_name, field, search_path or [])
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = getattr(obj, "__name__", module_name)
            raise UserCodeProblem(field, f"{where} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _import(module_name: str, field: str, search_path: list[str]) -> Any:
    for folder in reversed(search_path):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] != exc.name.split(".")[0]:
            # The user's module was found, but it imports something that is not installed.
            raise UserCodeProblem(
                field, f"{module_name} imports {exc.name!r}, which is not installed"
            ) from None
        looked = search_path or ACTIVE_CODE_PATHS
        where = f"code.paths ({', '.join(looked)})" if looked else "code.paths (none given)"
        raise UserCodeProblem(
            field,
            f"no module {module_name!r} on {where} or in the installed packages; add its "
            "folder to code.paths",
        ) from None
    except Exception as exc:  # the user's module raised while being imported
        raise UserCodeProblem(
            field, f"importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
