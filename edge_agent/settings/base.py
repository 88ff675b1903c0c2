"""The base of every settings section, and the environment prefix."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "EDGE_AGENT_"


class Section(BaseModel):
    """A config section: frozen, and unknown keys are an error (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
