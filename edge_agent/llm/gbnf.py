"""A JSON schema as a llama.cpp GBNF grammar, for completions servers that take ``grammar``.

llama.cpp's servers (the C++ ``llama-server`` and llama-cpp-python's) constrain
``/v1/completions`` with a GBNF ``grammar``; llama-cpp-python takes no JSON schema there
at all. The schemas we send (``edge_agent.actions.schema``) use a small subset, and
only that subset is translated: ``anyOf``, objects whose properties are all required
and written in order, strings (``const``, ``enum``, ``maxLength``), integers, numbers
and booleans. Ranges are left to the policy, which checks every value anyway. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# One optional space after ':' and ',', as the on-device grammar allows.
_COMMON = 'ws ::= " "?\nchar ::= [^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]\ndigits ::= [0-9]+\n'


class UnsupportedSchemaError(ValueError):
    """The schema uses a feature outside the translated subset."""


def schema_to_gbnf(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar (``root`` rule first) accepting the documents of ``schema``."""
    rules: list[str] = []
    root = _value(schema, rules)
    return f"root ::= {root}\n" + "".join(rules) + _COMMON


def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    return json.dumps(text, ensure_ascii=False)


def _json_string(value: str) -> str:
    """A GBNF literal matching ``value`` written as a JSON string."""
    return _literal(json.dumps(value, ensure_ascii=False))


def _rule(body: str, rules: list[str]) -> str:
    name = f"r{len(rules)}"
    rules.append(f"{name} ::= {body}\n")
    return name


def _value(schema: Mapping[str, Any], rules: list[str]) -> str:
    if "anyOf" in schema:
        options = [_value(option, rules) for option in schema["anyOf"]]
        return _rule(" | ".join(options), rules)
    if "const" in schema:
        return _json_string(str(schema["const"]))
    if "enum" in schema:
        return _rule(" | ".join(_json_string(str(v)) for v in schema["enum"]), rules)
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, rules)
    if kind == "string":
        most = schema.get("maxLength")
        count = "*" if most is None else f"{{0,{int(most)}}}"
        return _rule(f'"\\"" char{count} "\\""', rules)
    if kind in ("integer", "number"):
        sign = "" if float(schema.get("minimum", -1)) >= 0 else '"-"? '
        fraction = ' ("." digits)?' if kind == "number" else ""
        return _rule(f"{sign}digits{fraction}", rules)
    if kind == "boolean":
        return '("true" | "false")'
    raise UnsupportedSchemaError(f"no GBNF for schema {json.dumps(schema)[:120]}")


def _object(schema: Mapping[str, Any], rules: list[str]) -> str:
    props: Mapping[str, Any] = schema.get("properties", {})
    if set(schema.get("required", ())) != set(props):
        raise UnsupportedSchemaError("only objects whose properties are all required")
    parts = ['"{"']
    for i, (name, sub) in enumerate(props.items()):
        if i:
            parts.append('"," ws')
        parts.append(f"{_literal(json.dumps(name) + ':')} ws {_value(sub, rules)}")
    parts.append('"}"')
    return _rule(" ".join(parts), rules)
