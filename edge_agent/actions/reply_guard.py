"""Where the agent may publish an answer: never onto its own inputs or a device's commands.

A question names its reply topic (JSON ``reply_to`` or the MQTT 5 Response Topic), so
whoever may publish on ``ask`` would otherwise choose a topic the agent publishes on.
Pointed at ``.../action/approve`` the answer approved a proposal; pointed at a lock's
``.../set`` it sent the answer JSON to the lock. The rule here refuses every topic the
agent reads or that steers something, and leaves the asker the answer topic (and topics
under it), or any unrelated topic of their own. Pure code: plain strings in, a reason out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.templates import PLACEHOLDER

FORBIDDEN_REASON = "reply_to_forbidden"
"""The dead letter's reason for a refused reply topic."""

# Device command topics by convention: zigbee2mqtt/z-wave JS ``.../set``, Tasmota
# ``cmnd/...``, ESPHome/HA ``.../command``. Not allowlisted does not mean harmless.
_COMMAND_LAST = frozenset({"set", "command"})
_COMMAND_ANY = "cmnd"


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest, also the parent)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex for every topic an action's topic template can render to.

    Slots are device names and parameter values, which never hold ``/`` (settings
    refuse it), so one slot matches within one level.
    """
    parts = PLACEHOLDER.split(template)
    # split() with one group alternates literal text and slot names.
    regex = "".join(re.escape(p) if i % 2 == 0 else "[^/]+" for i, p in enumerate(parts))
    return re.compile(regex)


@dataclass(frozen=True, slots=True)
class ReplyRules:
    """What a reply topic is checked against, as plain values."""

    answer_topic: str
    """``<base_topic>/<node_id>/answer``: allowed, and so is every topic under it."""
    own_root: str
    """``<base_topic>``: every other topic under it belongs to us or a sibling agent."""
    subscribed: tuple[str, ...]
    """Every filter we subscribe to: sensors, ask, approve, reject, HA status."""
    command_templates: tuple[str, ...] = ()
    """Topic templates of the allowlisted actions."""
    reserved_roots: tuple[str, ...] = ()
    """Other namespaces we never answer into (e.g. Home Assistant's discovery prefix)."""

    @classmethod
    def build(
        cls,
        *,
        answer_topic: str,
        subscribed: Iterable[str],
        command_templates: Iterable[str] = (),
        reserved_roots: Iterable[str] = (),
    ) -> ReplyRules:
        """Rules around ``answer_topic`` = ``<base_topic>/<node_id>/answer``."""
        own_root = answer_topic.rsplit("/", 2)[0] if answer_topic.count("/") >= 2 else ""
        return cls(
            answer_topic,
            own_root,
            tuple(subscribed),
            tuple(command_templates),
            tuple(r for r in reserved_roots if r),
        )


def forbidden_reply(topic: str, rules: ReplyRules) -> str | None:
    """Why ``topic`` may not carry an answer, or None when it may."""
    if not topic or len(topic.encode("utf-8", errors="replace")) > 65_535:
        return "empty or too long"
    if "+" in topic or "#" in topic or "\x00" in topic:
        return "contains a wildcard or NUL"
    if topic.startswith("$"):
        return "a broker ($) topic"
    if topic == rules.answer_topic or topic.startswith(rules.answer_topic + "/"):
        return None
    if rules.own_root and (topic == rules.own_root or topic.startswith(rules.own_root + "/")):
        return f"one of our own topics (under {rules.own_root}/)"
    for root in rules.reserved_roots:
        if topic == root or topic.startswith(root + "/"):
            return f"a reserved namespace ({root}/)"
    for topic_filter in rules.subscribed:
        if topic_matches(topic_filter, topic):
            return f"matches our subscription {topic_filter!r}"
    for template in rules.command_templates:
        if template_pattern(template).fullmatch(topic):
            return f"an allowlisted action's command topic ({template!r})"
    levels = [level.lower() for level in topic.split("/")]
    if levels[-1] in _COMMAND_LAST or _COMMAND_ANY in levels:
        return "looks like a device command topic"
    return None
