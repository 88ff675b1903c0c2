"""edge-agent: an on-device LLM assistant for MQTT sensor networks."""

__version__ = "0.1.0"
