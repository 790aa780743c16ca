"""Bind the spec's `args` to a user callable's signature before anything runs: unknown
keywords (with a did-you-mean), missing required ones, values of the wrong annotated type
(checked by pydantic, as the spec's own fields are)."""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any

from deeprig.spec.errors import Problem


def bind_arguments(
    obj: Any, args: dict[str, Any], field: str, filled: dict[str, Any]
) -> tuple[dict[str, Any], list[Problem]]:
    """The keyword arguments to call `obj` with — the spec's `args`, plus the values deeprig
    fills (`filled`, e.g. num_outputs) where `obj` takes a parameter of that name — and the
    problems found; `field` is the spec path of `args` (e.g. model.args)."""
    name = getattr(obj, "__name__", repr(obj))
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # a builtin without a signature: take args as given
        return dict(args), []
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        n: p
        for n, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    problems: list[Problem] = []
    for key in args:
        if key in filled and (key in named or takes_any):
            problems.append(
                Problem(f"{field}.{key}", f"deeprig fills {key} from the data; remove it")
            )
        elif key not in named and not takes_any:
            close = difflib.get_close_matches(key, list(named), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(Problem(f"{field}.{key}", f"not a parameter of {name}{hint}"))
    for key, parameter in named.items():
        if key in args or key in filled or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            problems.append(Problem(field, f"{name} takes {key!r} positionally only"))
        else:
            problems.append(Problem(field, f"{name} needs {key!r}; add it to {field}"))
    problems += _type_problems(obj, args, named, field)
    kwargs = dict(args) | {k: v for k, v in filled.items() if k in named or takes_any}
    return kwargs, problems


def _type_problems(
    obj: Any, args: dict[str, Any], named: dict[str, inspect.Parameter], field: str
) -> list[Problem]:
    from pydantic import TypeAdapter, ValidationError

    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # unresolvable annotations: nothing to check against
        return []
    problems = []
    for key, value in args.items():
        if key not in named or key not in hints:
            continue
        try:
            TypeAdapter(hints[key]).validate_python(value)
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            problems.append(Problem(f"{field}.{key}", f"{value!r} does not fit {key}: {why}"))
        except Exception:  # an annotation pydantic cannot check (a bare class, a protocol)
            continue
    return problems
