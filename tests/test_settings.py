"""Settings: every field documented, unknown keys rejected, environment wins over TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_agent.errors import ConfigError
from edge_agent.settings import Settings, load_settings, read_password


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += _models(candidate)
    return found


@pytest.mark.parametrize("model", _models(Settings), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    undocumented = [name for name, f in model.model_fields.items() if not f.description]
    assert undocumented == []


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mqtt]\nhost = "from-file"\nport = 1884\n')
    monkeypatch.setenv("EDGE_AGENT_MQTT__PORT", "1999")
    settings = load_settings(config)
    assert (settings.mqtt.host, settings.mqtt.port) == ("from-file", 1999)


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[mqqt]\nhost = 'x'\n")
    with pytest.raises(ConfigError, match="mqqt: unknown key"):
        load_settings(config)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    settings = Settings(mqtt={"password_file": secret})
    assert read_password(settings.mqtt) == "s3cret"


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        Settings(mqtt={"password": "a", "password_file": tmp_path / "pw"})
