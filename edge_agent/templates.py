"""Topic and payload templates of allowlisted actions: ``{device}`` and ``{param}`` slots.

A placeholder is ``{name}`` with ``name`` an identifier; every other brace is literal,
so a JSON payload template reads naturally: ``{"state": "{state}", "brightness": {b}}``.
Pure code that imports nothing from the package. It lives outside ``edge_agent.actions``
so that settings can check templates without importing the package that imports them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
TemplateValue = str | int | float


class TemplateError(ValueError):
    """A template does not parse, or names a slot that does not exist."""


def placeholders(template: str) -> tuple[str, ...]:
    """The slot names of ``template`` in order of first use."""
    return tuple(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(template)))


def is_json_template(template: str) -> bool:
    """A payload template that must render to JSON: it opens with a literal { or [."""
    return PLACEHOLDER.sub("", template).lstrip()[:1] in ("{", "[")


def _fill(template: str, values: Mapping[str, TemplateValue], *, json_mode: bool) -> str:
    def one(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        if isinstance(value, str):
            # Inside a JSON template a string slot sits between quotes the template
            # wrote; escape it so a value can never close them.
            return json.dumps(value, ensure_ascii=False)[1:-1] if json_mode else value
        return repr(value) if isinstance(value, int) else format_float(value)

    return PLACEHOLDER.sub(one, template)


def format_float(value: float) -> str:
    """A float as JSON writes it, without exponent for the small ranges we allow."""
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def check_template(
    template: str,
    allowed: Sequence[str],
    sample: Mapping[str, TemplateValue],
    *,
    what: str,
    as_json: bool | None = None,
) -> None:
    """Raise :class:`TemplateError` unless ``template`` names only ``allowed`` slots and,
    for a JSON template, renders to valid JSON with the ``sample`` values."""
    unknown = [name for name in placeholders(template) if name not in allowed]
    if unknown:
        raise TemplateError(
            f"{what} template names unknown placeholder(s) {', '.join(unknown)}; "
            f"known: {', '.join(allowed) or 'none'}"
        )
    stray = PLACEHOLDER.sub("", template)
    if as_json is None:
        as_json = is_json_template(template)
    if not as_json and ("{" in stray or "}" in stray):
        raise TemplateError(f"{what} template has an unmatched brace: {template!r}")
    if as_json:
        rendered = _fill(template, {k: sample[k] for k in placeholders(template)}, json_mode=True)
        try:
            json.loads(rendered)
        except json.JSONDecodeError as exc:
            raise TemplateError(
                f"{what} template is not valid JSON once filled ({exc.msg} at column "
                f"{exc.colno}): {rendered!r}"
            ) from exc


def render(template: str, values: Mapping[str, TemplateValue]) -> str:
    """Fill ``template``; JSON templates escape string values. Raises KeyError on a gap."""
    return _fill(template, values, json_mode=is_json_template(template))
