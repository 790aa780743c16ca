"""User code: the user's own model class, data function and Ray Train loop, named in the
spec as `module:attr` targets and found on `code.paths`.

`bundle.py` finds the files under `code.paths`, puts them on the driver's path, ships them
to every Ray worker (Ray's runtime_env `py_modules`, and inside the worker's config for a
Ray someone else started) and records them. `targets.py` imports a target with errors
that name the field and the fix. `signature.py` binds the spec's `args` against the
target's signature. Nothing here imports the user's code until asked: resolving a target
runs it, so deeprig resolves targets only from a spec file the user passed.
"""

from deeprig.usercode.bundle import CodeBundle
from deeprig.usercode.targets import UserCodeProblem, resolve_target

__all__ = ["CodeBundle", "UserCodeProblem", "resolve_target"]
