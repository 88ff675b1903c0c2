"""The docs cannot drift: the configuration reference and the README's commands are checked."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

import pytest

from edge_agent.cli import build_parser
from edge_agent.configdoc import REGENERATE, render_reference
from edge_agent.settings import ENV_PREFIX, Settings
from tests.support.agent import run_cli

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"


def test_configuration_reference_is_current() -> None:
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert committed == render_reference(Settings, ENV_PREFIX), (
        f"docs/configuration.md is stale: run `{REGENERATE}`"
    )


def test_reference_lists_every_key_with_its_environment_variable() -> None:
    text = render_reference(Settings, ENV_PREFIX)
    for section, field in Settings.model_fields.items():
        assert f"## `[{section}]`" in text
        assert field.annotation is not None
        for key in field.annotation.model_fields:
            assert f"`{ENV_PREFIX}{section.upper()}__{key.upper()}`" in text
    # Nested tables, lists of tables, and tagged unions get tables of their own.
    assert "`EDGE_AGENT_MQTT__TLS__CA_FILE`" in text
    assert "### `[[sensors.subscriptions]]`" in text
    assert "### `[anomalies.thresholds.<name>]`" in text
    assert '### `[actions.allow.params.<name>]` with `type = "int"`' in text
    # Placeholders outside code are escaped, or Markdown would take them for HTML.
    assert "&lt;base_topic&gt;/&lt;node_id&gt;" in text


def test_config_docs_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "configuration.md"
    result = run_cli("config", "docs", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == render_reference(Settings, ENV_PREFIX)
    printed = run_cli("config", "docs")
    assert printed.stdout == out.read_text(encoding="utf-8")


def _code_in_readme() -> list[str]:
    """Lines of fenced code blocks and inline code spans of README.md."""
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines.extend(block.splitlines())
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    lines.extend(re.findall(r"`([^`\n]+)`", prose))
    return lines


def _commands(word: str) -> list[list[str]]:
    """Each use of ``word`` as a command (after VAR=value prefixes), with its arguments."""
    found = []
    for line in _code_in_readme():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue  # not shell (TOML, JSON)
        while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
            tokens.pop(0)
        if tokens and tokens[0] in ("sudo", "exec"):
            tokens.pop(0)
        if tokens and (tokens[0] == word or tokens[0].startswith(f"{word}/")):
            cut = next((i for i, t in enumerate(tokens) if t in ("|", ";", "&&", "||")), None)
            found.append(tokens[:cut])
    return found


def _parse(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`edge-agent {shlex.join(argv)}` does not parse") from exc


def _parser_for(words: list[str]) -> argparse.ArgumentParser | None:
    """The (sub-)parser that ``words`` (sub-command names only) lead to, if any."""
    parser = build_parser()
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return None
        parser = subs[0].choices[word]
    return parser


def test_readme_scripts_exist() -> None:
    text = README.read_text(encoding="utf-8")
    paths = set(re.findall(r"\bscripts/[\w.-]+", text))
    assert paths, "the README names no scripts/... any more: update this test"
    for path in sorted(paths):
        script = ROOT / path
        assert script.is_file(), f"README mentions {path}, which does not exist"
        assert os.access(script, os.X_OK), f"{path} is not executable"
    # scripts/demo passes its arguments to `edge-agent demo`.
    for argv in _commands("scripts"):
        if argv[0] == "scripts/demo" and len(argv) > 1 and "--help" not in argv:
            _parse(["demo", *argv[1:]])


def test_readme_edge_agent_commands_parse(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [argv[1:] for argv in _commands("edge-agent") if len(argv) > 1]
    assert commands, "the README shows no edge-agent command: update this test"
    broken = []
    for argv in commands:
        if "--help" in argv or "-h" in argv:
            # `edge-agent actions --help`: the command path must exist.
            words = argv[: min(argv.index(h) for h in ("--help", "-h") if h in argv)]
            if _parser_for(words) is None:
                broken.append(f"`edge-agent {shlex.join(argv)}`: no such command")
            continue
        # A synopsis's optional part, `[--peers]`, must still name a real option.
        argv = [t[1:-1] if re.fullmatch(r"\[-[^]]+\]", t) else t for t in argv]
        if _parser_for(argv) is not None:
            continue  # a command named in passing, e.g. `edge-agent model` or `edge-agent bench`
        try:
            assert callable(_parse(argv).handler)
        except AssertionError as exc:
            broken.append(f"{exc}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not broken, "README commands that the CLI rejects:\n" + "\n".join(broken)


def test_every_command_has_help_with_examples() -> None:
    """``--help`` of each command that does something (not a bare group) shows examples."""
    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and "example" not in (parser.epilog or ""):
            missing.append(" ".join(path))
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*path, name])

    walk(build_parser(), ["edge-agent"])
    assert not missing, f"no examples in --help of: {', '.join(missing)}"
