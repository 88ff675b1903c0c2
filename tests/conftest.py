"""Shared fixtures: a real Mosquitto broker and the tiny int4 Gemma 2 model."""

from tests.support.broker import broker, probe  # noqa: F401  (fixture re-exports)
from tests.support.models import tiny_k4, tiny_model, tiny_optimum  # noqa: F401  (fixture re-export)
