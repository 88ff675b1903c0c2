"""The Prometheus metrics endpoint's settings (off unless ``listen`` is set)."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_agent.settings.base import Section


class MetricsSettings(Section):
    """Where ``/metrics`` listens, if anywhere."""

    listen: str = Field(
        "",
        description="HOST:PORT of the Prometheus endpoint (/metrics), e.g. 127.0.0.1:9464; "
        "empty turns it off. Keep it on loopback unless a firewall guards the port.",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when off; IPv6 brackets are removed."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
