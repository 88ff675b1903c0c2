"""The proposal grammar as a JSON schema, for model servers that constrain output by schema.

The on-device runtime constrains decoding with the byte automaton in ``grammar``; a
remote server (``model.backend = "openai"``) is handed this schema in
``response_format`` instead. It describes the same documents: one object per live
action (its id, one of its devices, its typed and ranged parameters, a short reason)
or ``{"action": "none", "reason": ...}``. What a schema cannot say (a float's number of
decimals) the policy still checks, as it checks everything the model writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_agent.actions.types import NO_ACTION
from edge_agent.settings import ActionSpec, EnumParam, IntParam


def proposal_schema(specs: Sequence[ActionSpec], reason_max: int) -> dict[str, Any]:
    """The JSON schema of a proposal over ``specs`` (actions in mode 'off' left out)."""
    reason = {"type": "string", "maxLength": reason_max}
    options: list[dict[str, Any]] = []
    for spec in specs:
        if spec.mode == "off":
            continue
        params: dict[str, Any] = {}
        for name, param in spec.params.items():
            if isinstance(param, EnumParam):
                params[name] = {"type": "string", "enum": list(param.values)}
            else:
                kind = "integer" if isinstance(param, IntParam) else "number"
                params[name] = {"type": kind, "minimum": param.min, "maximum": param.max}
        options.append(
            _object(
                {
                    "action": {"type": "string", "const": spec.id},
                    "device": {"type": "string", "enum": list(spec.devices)},
                    "params": _object(params),
                    "reason": reason,
                }
            )
        )
    options.append(_object({"action": {"type": "string", "const": NO_ACTION}, "reason": reason}))
    return {"anyOf": options}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    # Every key required and in this order: llama.cpp's schema grammar writes keys in
    # the order given, as the on-device grammar does.
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
