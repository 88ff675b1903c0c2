"""Render the configuration reference (Markdown) by walking the pydantic settings models.

Nothing here is written by hand per setting: sections, keys, types, defaults,
constraints and descriptions all come from the models' fields, so the reference cannot
drift from the code (a test regenerates it and compares with ``docs/configuration.md``).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REGENERATE = "edge-agent config docs --out docs/configuration.md"
"""The command that writes the committed reference."""

INTRO = f"""\
# Configuration reference

<!-- Generated from edge_agent.settings.Settings by `{REGENERATE}`.
     Do not edit by hand: change the field's description in settings.py and regenerate. -->

edge-agent reads a TOML file (`edge-agent run --config FILE`), then environment
variables, which win: `EDGE_AGENT_<SECTION>__<KEY>`, with `__` between nested levels
(`EDGE_AGENT_MQTT__TLS__ENABLED=true`). A list or a table is given in the environment
as JSON (`EDGE_AGENT_SENSORS__SUBSCRIPTIONS='[{{"topic": "zigbee2mqtt/#"}}]'`); keys
inside list items have no variables of their own. Unknown keys are errors, and
`edge-agent config check` prints the effective configuration or every problem.
"""


@dataclass(frozen=True, slots=True)
class _Table:
    """One Markdown table to render: its TOML header, model and environment prefix."""

    header: str
    """e.g. ``[mqtt.tls]``, ``[[sensors.subscriptions]]``, ``[anomalies.thresholds.<metric>]``."""
    model: type[BaseModel]
    env: str | None
    """Environment variable prefix of its keys; None inside lists and free-form tables."""
    note: str = ""
    variant: str = ""
    """Heading suffix telling the variants of a union apart, e.g. `` (type = "int")``."""


def render_reference(settings: type[BaseModel], env_prefix: str) -> str:
    """The whole reference: one section per top-level field of ``settings``."""
    out = [INTRO]
    for name, field in settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is None:
            raise TypeError(f"top-level setting {name!r} is not a section model")
        out.append(f"## `[{name}]`\n")
        out.append(_paragraph(field.description, model.__doc__))
        pending = [_Table(f"[{name}]", model, f"{env_prefix}{name.upper()}__")]
        first = True
        while pending:
            table = pending.pop(0)
            if not first:
                out.append(f"### `{table.header}`{table.variant}\n")
                out.append(_paragraph(table.note, table.model.__doc__))
            first = False
            rows, children = _rows(table)
            out.append(rows)
            pending[0:0] = children  # depth first: a sub-table right after its parent
    return "\n".join(out).rstrip() + "\n"


def _paragraph(*parts: str | None) -> str:
    text = " ".join(p.strip() for p in parts if p and p.strip())
    return f"{_escape(text)}\n" if text else ""


def _rows(table: _Table) -> tuple[str, list[_Table]]:
    lines = [
        "| key | type | default | environment variable | description |",
        "|---|---|---|---|---|",
    ]
    children: list[_Table] = []
    path = table.header.strip("[]")
    for name, field in table.model.model_fields.items():
        env = f"`{table.env}{name.upper()}`" if table.env else "—"
        kind, child = _nested(field, f"{path}.{name}", table.env, name)
        children.extend(child)
        cells = [
            f"`{name}`",
            kind or _type_text(field),
            _default_text(field),
            env,
            field.description or "",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n", children


def _nested(
    field: FieldInfo, path: str, env: str | None, name: str
) -> tuple[str | None, list[_Table]]:
    """A field holding models: its type text and the tables to render for them."""
    ann = _strip(field.annotation)
    model = _model_of(ann)
    if model is not None:
        prefix = f"{env}{name.upper()}__" if env else None
        optional = " (optional)" if _is_optional(ann) else ""
        return f"table{optional}, see `[{path}]`", [_Table(f"[{path}]", model, prefix)]
    origin, args = get_origin(ann), get_args(ann)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _model_of(args[0])
        if item is not None:
            return f"list of tables, see `[[{path}]]`", [_Table(f"[[{path}]]", item, None)]
    if origin is dict and len(args) == 2:
        variants = _models_in(args[1])
        if variants:
            key = "<name>"
            tables = [
                _Table(f"[{path}.{key}]", v, None, variant=_variant(v) if len(variants) > 1 else "")
                for v in variants
            ]
            return f"table of tables, see `[{path}.{key}]`", tables
    return None, []


def _variant(model: type[BaseModel]) -> str:
    """`` with `type = "int"` `` for a tagged union member, else its class name."""
    tag = model.model_fields.get("type")
    if tag is not None and get_origin(_strip(tag.annotation)) is Literal:
        return f' with `type = "{get_args(_strip(tag.annotation))[0]}"`'
    return f" ({model.__name__})"


def _strip(ann: Any) -> Any:
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    return ann


def _is_optional(ann: Any) -> bool:
    return get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann)


def _models_in(ann: Any) -> list[type[BaseModel]]:
    ann = _strip(ann)
    if get_origin(ann) in (Union, types.UnionType):
        return [m for a in get_args(ann) if (m := _model_of(a)) is not None]
    model = _model_of(ann)
    return [model] if model is not None else []


def _model_of(ann: Any) -> type[BaseModel] | None:
    """The model class in ``Model`` or ``Model | None``; None for anything else."""
    ann = _strip(ann)
    if _is_optional(ann):
        rest = [a for a in get_args(ann) if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


_NAMES: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    Path: "path",
    SecretStr: "secret string",
}


def _type_text(field: FieldInfo) -> str:
    return _describe(field.annotation) + _constraints(field.metadata)


def _describe(ann: Any) -> str:
    if get_origin(ann) is Annotated:
        base, *meta = get_args(ann)
        return _describe(base) + _constraints(meta)
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a) for a in rest)
        return f"{text} (optional)" if len(rest) < len(args) else text
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _describe(args[0])
            return f"list of ({item})" if ", " in item else f"list of {item}"
        return "[" + ", ".join(_describe(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_describe(args[1])}"
    return _NAMES.get(ann, getattr(ann, "__name__", str(ann)))


def _constraints(metadata: list[Any] | tuple[Any, ...]) -> str:
    parts: list[str] = []
    for m in metadata:
        if isinstance(m, Ge):
            parts.append(f"≥ {m.ge}")
        elif isinstance(m, Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, Le):
            parts.append(f"≤ {m.le}")
        elif isinstance(m, Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, MinLen):
            parts.append(f"length ≥ {m.min_length}")
        elif isinstance(m, MaxLen):
            parts.append(f"length ≤ {m.max_length}")
        elif (pattern := getattr(m, "pattern", None)) is not None:
            parts.append(f"matches `{pattern}`")
        elif isinstance(m, FieldInfo):  # Annotated[str, Field(pattern=...)] inside a list
            parts.append(_constraints(m.metadata).removeprefix(", "))
    parts = [p for p in parts if p]
    return (", " + ", ".join(parts)) if parts else ""


def _default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel) and not value.model_fields_set:
        return "defaults below"
    data = TypeAdapter(field.annotation or Any).dump_python(
        value, mode="json", exclude_defaults=True
    )
    if isinstance(data, str) and field.annotation is SecretStr:
        return "***"
    return f"`{json.dumps(data, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return _escape(text).replace("|", "\\|").strip()


def _escape(text: str) -> str:
    """Escape ``<`` and ``>`` outside code spans, so ``<node_id>`` is not taken for HTML."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)
