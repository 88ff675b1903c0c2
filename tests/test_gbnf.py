"""JSON schema -> GBNF: what llama.cpp's completions get in place of a schema."""

from __future__ import annotations

import pytest

from edge_agent.actions.schema import proposal_schema
from edge_agent.llm.gbnf import UnsupportedSchemaError, schema_to_gbnf
from edge_agent.settings import ActionSpec
from tests.test_actions_settings import light


def test_the_proposal_grammar_spells_keys_in_order_and_bounds_the_reason() -> None:
    level = {"level": {"type": "float", "min": -5, "max": 5}}
    spec = ActionSpec(**light(params=level, payload='{"level": {level}}'))
    grammar = schema_to_gbnf(proposal_schema((spec,), 120))
    assert grammar.startswith("root ::= ")
    assert '"\\"action\\":" ws "\\"hall_light\\""' in grammar
    assert '"\\"none\\""' in grammar
    assert "char{0,120}" in grammar
    assert '"-"? digits ("." digits)?' in grammar  # a float that may be negative


def test_llama_cpp_parses_the_grammar() -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install 'edge-agent[server-test]'")
    grammar = schema_to_gbnf(proposal_schema((ActionSpec(**light()),), 200))
    assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None


def test_an_optional_property_is_refused() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": []}
    with pytest.raises(UnsupportedSchemaError):
        schema_to_gbnf(schema)
