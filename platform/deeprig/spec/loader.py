"""Read a YAML job spec, apply `--set` overrides, validate it once.

Every problem is collected (not just the first) and reported with its field path, the
YAML line it came from, and how to fix it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from deeprig.spec.common import StrictModel
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.paths import resolve_code_paths, resolve_data_paths
from deeprig.spec.predict import PredictSpec
from deeprig.spec.rl import RLSpec
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec

# The kinds of spec (each has its runner in deeprig.runners.RUNNERS; a test keeps the two
# in step).
SPEC_BY_KIND: dict[str, type[StrictModel]] = {
    "train": TrainSpec,
    "tune": TuneSpec,
    "rl": RLSpec,
    "predict": PredictSpec,
}
JobSpec = TrainSpec | TuneSpec | RLSpec | PredictSpec


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Load and validate the spec at `path`; raise SpecError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([Problem("", f"no such file: {path}")], str(path)) from None
    except UnicodeDecodeError as exc:
        why = (
            f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): "
            "a job spec is a YAML file; is this the right file?"
        )
        raise SpecError([Problem("", why)], str(path)) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise SpecError([Problem("", f"cannot read the spec: {exc}")], str(path)) from None
    return load_spec_text(text, overrides, source=str(path))


def load_spec_text(
    text: str, overrides: list[str] | None = None, source: str | None = None
) -> JobSpec:
    raw = _parse_yaml(text, source)
    folder = Path(source).parent if source else Path.cwd()
    if raw.get("kind") == "tune" and isinstance(raw.get("base"), str):
        raw["base"] = _load_base(raw["base"], source)
    problems: list[Problem] = []
    for override in overrides or []:
        problem = _apply_override(raw, override)
        if problem:
            problems.append(problem)
    if problems:
        raise SpecError(problems, source)
    resolve_code_paths(raw, folder)
    resolve_data_paths(raw)
    if raw.get("kind") == "tune" and isinstance(raw.get("base"), dict):
        resolve_code_paths(raw["base"], folder)
        resolve_data_paths(raw["base"])
    try:
        return validate_mapping(raw, text, source)
    except SpecError as exc:
        raise _blame_overrides(exc, overrides or []) from None


def _blame_overrides(error: SpecError, overrides: list[str]) -> SpecError:
    """A problem with a value that came from `--set` points at the `--set`, not at the
    file's line the value replaced."""
    given = {o.partition("=")[0].strip(): o for o in overrides}

    def origin(path: str) -> str | None:
        for dotted, override in given.items():
            if path == dotted or path.startswith(dotted + "."):
                return override
        return None

    problems = []
    for problem in error.problems:
        override = origin(problem.path)
        if override is None:
            problems.append(problem)
        else:
            problems.append(Problem(problem.path, problem.message, None, override))
    return SpecError(problems, error.source)


def _load_base(reference: str, source: str | None) -> dict[str, Any]:
    """A tune spec's `base: other.yaml`, relative to the tune spec's own folder."""
    folder = Path(source).parent if source else Path.cwd()
    path = (folder / reference) if not Path(reference).is_absolute() else Path(reference)
    try:
        text = path.read_text()
    except OSError:
        raise SpecError([Problem("base", f"no such base spec: {path}")], source) from None
    try:
        base = _parse_yaml(text, str(path))
        resolve_code_paths(base, path.parent)  # relative to the base file's own folder
        return base
    except SpecError as exc:
        raise SpecError(
            [Problem("base", p.render(str(path))) for p in exc.problems], source
        ) from None


def validate_mapping(raw: dict[str, Any], text: str = "", source: str | None = None) -> JobSpec:
    kind = raw.get("kind")
    if kind not in SPEC_BY_KIND:
        known = ", ".join(SPEC_BY_KIND)
        if kind is None:
            message = f"required field is missing; add `kind: train` (one of: {known})"
        else:
            message = f"unknown kind {kind!r}{_did_you_mean(str(kind), SPEC_BY_KIND)}"
            message += f" (one of: {known})"
        raise SpecError([Problem("kind", message, _line_of(text, ("kind",)))], source)
    model_class = SPEC_BY_KIND[kind]
    try:
        return model_class.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = [p for err in exc.errors() for p in _problems_from_error(err, model_class, text)]
        raise SpecError(_dedupe(problems), source) from None


def with_lines(error: SpecError, text: str) -> SpecError:
    """Point problems found after parsing (data, resources) at their YAML lines."""
    located = [
        p
        if p.line is not None or not p.path or p.override is not None
        else Problem(p.path, p.message, _line_of(text, tuple(p.path.split("."))))
        for p in error.problems
    ]
    return SpecError(located, error.source)


# ------------------------------------------------------------------ YAML


def _parse_yaml(text: str, source: str | None) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark:  # e.g. "while parsing a flow mapping" + where
            what += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SpecError([Problem("", f"YAML syntax error: {what}", line)], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"YAML error: {exc}")], source) from None
    if raw is None:
        raise SpecError(
            [Problem("", "the file is empty; a job spec needs at least name, kind, model, data")],
            source,
        )
    if not isinstance(raw, dict):
        raise SpecError(
            [Problem("", f"a job spec is a mapping of fields, got a {type(raw).__name__}")],
            source,
        )
    return raw


def _line_of(text: str, path: tuple[Any, ...]) -> int | None:
    """The 1-based YAML line where `path` (or its deepest existing parent) is written."""
    if not text:
        return None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    keys = list(path)
    while keys:
        if isinstance(node, yaml.MappingNode):
            # Keys may themselves hold dots (search_space: {optim.lr: ...}): longest first.
            for width in range(len(keys), 0, -1):
                name = ".".join(str(k) for k in keys[:width])
                match = next((kv for kv in node.value if kv[0].value == name), None)
                if match is not None:
                    break
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
            keys = keys[width:]
        elif isinstance(node, yaml.SequenceNode) and isinstance(keys[0], int):
            if keys[0] >= len(node.value):
                break
            node = node.value[keys[0]]
            line = node.start_mark.line + 1
            keys = keys[1:]
        else:
            break
    return line


# ------------------------------------------------------------------ overrides


def _apply_override(raw: dict[str, Any], override: str) -> Problem | None:
    """Apply `a.b.c=value` (value parsed as YAML, so 0.01 is a float and [1, 2] a list)."""
    dotted, sep, value_text = override.partition("=")
    dotted = dotted.strip()
    if not sep or not dotted:
        return Problem("--set", f"expected KEY.PATH=VALUE, got {override!r}")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        value = value_text
    keys = dotted.split(".")
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            return Problem(dotted, f"--set cannot descend into {where}: it is not a mapping")
        node = child
    node[keys[-1]] = value
    return None


# ------------------------------------------------------------------ errors


def _problems_from_error(err: ErrorDetails, root: type[BaseModel], text: str) -> list[Problem]:
    """A cross-field check may report several `path: message` parts in one error."""
    problem = _problem_from_error(err, root, text)
    if err["type"] != "value_error" or ": " not in problem.message:
        return [problem]
    out = []
    for part in problem.message.split("; "):
        path, sep, message = part.partition(": ")
        if sep and " " not in path and "." in path or path in root.model_fields:
            full = f"{problem.path}.{path}" if problem.path else path
            out.append(Problem(full, message, _line_of(text, tuple(full.split(".")))))
        else:
            out.append(Problem(problem.path, part, problem.line))
    return out


def _problem_from_error(err: ErrorDetails, root: type[BaseModel], text: str) -> Problem:
    loc = _strip_union_tags(tuple(err["loc"]), root)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    path = ".".join(str(p) for p in loc)

    if kind == "extra_forbidden":
        parent, field = loc[:-1], str(loc[-1])
        allowed = _fields_at(root, parent)
        hint = _did_you_mean(field, allowed)
        listing = f" (allowed: {', '.join(sorted(allowed))})" if allowed and not hint else ""
        fix = f"{hint[2:]}" if hint else f"remove it{listing}"
        return Problem(path, f"unknown field; {fix}", _line_of(text, loc))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        expected = ctx.get("expected_tags", "")
        choices = [t.strip(" '") for t in str(expected).split(",")]
        field = str(ctx.get("discriminator", "")).strip("'")
        what = {"name": "model", "source": "data source"}.get(field, "value")
        return Problem(
            f"{path}.{field}" if path else field,
            f"unknown {what} {tag!r}{_did_you_mean(str(tag), choices)} (one of: {expected})",
            _line_of(text, (*loc, field)),
        )
    if kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "")).strip("'")
        return Problem(f"{path}.{field}", "required field is missing", _line_of(text, loc))
    if kind == "missing":
        return Problem(path, "required field is missing", _line_of(text, loc[:-1]))
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",")]
        hint = _did_you_mean(str(got), choices)
        return Problem(path, f"must be one of {expected}{hint} (got {got!r})", _line_of(text, loc))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[kind]
        bound = next(iter(ctx.values()))
        return Problem(path, f"must be {op} {bound} (got {got!r})", _line_of(text, loc))
    if kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        return Problem(path, message, _line_of(text, loc))
    msg = err["msg"][0].lower() + err["msg"][1:]
    return Problem(path, f"{msg} (got {got!r})", _line_of(text, loc))


def _strip_union_tags(loc: tuple[Any, ...], root: type[BaseModel]) -> tuple[Any, ...]:
    """pydantic puts the union tag in the location (model.cnn.channels); users wrote
    model.channels."""
    out: list[Any] = []
    model: Any = root
    i = 0
    while i < len(loc):
        key = loc[i]
        out.append(key)
        field = model.model_fields.get(key) if _is_model(model) else None
        model = None
        if field is not None:
            choices = _union_members(field.annotation)
            if len(choices) > 1 and i + 1 < len(loc) and isinstance(loc[i + 1], str):
                tagged = _member_for_tag(choices, loc[i + 1])
                if tagged is not None:
                    model = tagged
                    i += 2
                    continue
            model = choices[0] if len(choices) == 1 else None
        i += 1
    return tuple(out)


def _fields_at(root: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for key in parent:
        if not _is_model(model) or key not in model.model_fields:
            return []
        choices = _union_members(model.model_fields[key].annotation)
        if not choices:
            return []
        # Fields of any union member: good enough for a did-you-mean.
        if len(choices) > 1:
            return sorted({f for c in choices for f in c.model_fields})
        model = choices[0]
    return list(model.model_fields) if _is_model(model) else []


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _union_members(args[0])
    if args:  # a union (an optional one too: `ModelSpec | None`), or a generic
        return [m for a in args for m in _union_members(a)]
    return [annotation] if _is_model(annotation) else []


def _member_for_tag(choices: list[type[BaseModel]], tag: str) -> type[BaseModel] | None:
    import typing

    for choice in choices:
        for field_name in ("name", "source", "kind"):
            field = choice.model_fields.get(field_name)
            if field is not None and tag in typing.get_args(field.annotation):
                return choice
    return None


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out
