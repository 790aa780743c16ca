"""The spec reference in Markdown, generated from the pydantic models (the README embeds it;
a test keeps the two in step).  python -m deeprig.spec.reference

Its sections are derived, not listed: each kind's top level, then every model nested in it,
depth first in field order, one section per member of a union looked up by a key (a new
model family or data source is in the reference once it is in its union)."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from deeprig.spec.loader import SPEC_BY_KIND


def sections() -> list[tuple[str, type[BaseModel]]]:
    """(title, model) of every section, each model once."""
    found: list[tuple[str, str, type[BaseModel], str | None]] = []  # kind, path, model, key
    for kind, spec in SPEC_BY_KIND.items():
        found.append((kind, "", spec, None))
        found += [(kind, *nested) for nested in _nested(spec, "")]
    kinds_at: dict[tuple[str, type], list[str]] = {}
    classes_at: dict[str, set[type]] = {}
    for kind, path, model, _ in found:
        kinds_at.setdefault((path, model), []).append(kind)
        classes_at.setdefault(path, set()).add(model)
    titled: dict[type, str] = {}
    for kind, path, model, key in found:
        if model in titled:
            continue
        if not path:
            titled[model] = f"top level (`kind: {kind}`)"
            continue
        title = f"`{path}`"
        if key is not None:
            first, *more = typing.get_args(model.model_fields[key].annotation)
            title += f" with `{key}: {first}`" + "".join(f" or `{value}`" for value in more)
        if len(classes_at[path]) > 1 and key is None:  # e.g. `model`: a train or an rl one
            title += f" ({', '.join(kinds_at[path, model])})"
        titled[model] = title
    return [(title, model) for model, title in titled.items()]


def _nested(
    model: type[BaseModel], prefix: str
) -> Iterator[tuple[str, type[BaseModel], str | None]]:
    """(path, model, the key it is looked up by or None) of the models under `model`;
    another kind's top level (a search's base) is its own."""
    for name, field in model.model_fields.items():
        for member, key, suffix in _models_in(field.annotation, field.discriminator):
            if member in SPEC_BY_KIND.values():
                continue
            path = f"{prefix}{name}{suffix}"
            yield path, member, key
            yield from _nested(member, f"{path}.")


def _models_in(
    annotation: typing.Any, key: typing.Any = None, suffix: str = ""
) -> Iterator[tuple[type[BaseModel], str | None, str]]:
    """(model, the key its union is looked up by, path suffix) of each model in a type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        found = [
            m.discriminator for m in args[1:] if isinstance(getattr(m, "discriminator", None), str)
        ]
        yield from _models_in(args[0], found[0] if found else key, suffix)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, key if isinstance(key, str) else None, suffix)
    elif origin is dict:
        yield from _models_in(args[1], None, f"{suffix}.<key>")
    elif origin is list:
        yield from _models_in(args[0], None, f"{suffix}[]")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, key if isinstance(key, str) else None, suffix


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        made = field.default_factory()
        # An empty list or mapping reads best as itself; a section's defaults are its own.
        return f"`{made}`" if made in ([], {}) else "see below"
    return f"`{field.default}`" if field.default is not None else "—"


def render() -> str:
    lines = []
    for title, model in sections():
        lines += [f"#### {title}", "", "| field | default | what it does |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | {_default(field)} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
