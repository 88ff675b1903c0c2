"""The one exception tree of edge-agent, grouped by cause.

Adapters translate library errors (paho, onnxruntime, tokenizers, pydantic) into
these with ``raise ... from exc`` so callers never catch a third-party type.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


# --- startup: the process cannot run; the message says what to fix -------------------


class StartupError(EdgeAgentError):
    """The service cannot start; ``str(err)`` tells a person what to fix."""


class ConfigError(StartupError):
    """The configuration file or environment is invalid."""


class ModelError(StartupError):
    """A model folder is missing, corrupt, or not loadable."""


class ModelVerifyError(ModelError):
    """A model folder failed manifest or checksum verification."""


class BackendUnreachableError(StartupError):
    """The model server (``model.backend = "openai"``) did not answer at start-up."""


class ExportError(EdgeAgentError):
    """Building, exporting or quantizing a model failed."""


# --- runtime: one unit of work fails, the service goes on -----------------------------


class PayloadError(EdgeAgentError):
    """An incoming MQTT payload cannot be turned into sensor events.

    ``reason`` is a short machine-readable code published on the dead-letter topic.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class GenerationError(EdgeAgentError):
    """Text generation failed for one request."""


class ContextOverflowError(GenerationError):
    """The prompt does not fit in the model's context window."""


class BackendError(GenerationError):
    """A remote model server failed one request (``model.backend = "openai"``).

    ``reason`` is the summary's fallback reason: ``backend_unavailable`` (no connection,
    5xx), ``backend_timeout``, ``backend_bad_response`` (nonsense on the wire),
    ``backend_rejected`` (4xx) or ``backend_model_missing``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BacklogFullError(GenerationError):
    """The inference backlog is full and the request was not accepted."""


class ServiceFailedError(EdgeAgentError):
    """A main task (intake, inference worker, status) ended while the service ran.

    The process exits non-zero so that its supervisor (systemd) restarts it: a live
    process whose intake is dead must not exist.
    """


class TransportError(EdgeAgentError):
    """The broker connection failed or refused an operation."""
