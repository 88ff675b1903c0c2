"""Hypothesis strategies for hostile MQTT input: JSON built as text, so it can hold what
``json.dumps`` never writes (5,000-digit integers, 100,000-deep arrays, ``\\ud800``
escapes, fullwidth digits in strings), plus random bytes and plain-text readings."""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Names the adapters treat as readings, so wrong types land on fields that matter.
READING_KEYS = (
    "temperature",
    "humidity",
    "co2",
    "battery",
    "occupancy",
    "contact",
    "linkquality",
    "last_seen",
    "Temperature",
    "Humidity",
    "Pressure",
    "Power",
    "POWER",
    "POWER1",
    "Dimmer",
    "UptimeSec",
    "Wifi",
    "RSSI",
    "Signal",
    "Time",
    "TempUnit",
    "AM2301",
    "ENERGY",
    "state",
    "value",
    "ts",
)

_DIGITS = "0123456789０１２３４５６７８９٠١٢٣٤٥٦٧٨٩۰۱۲۳"

number_literal = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(16, 6000).map(lambda n: "1" * n),  # past float, past int's 4,300 digits
    st.integers(1, 400).map(lambda n: f"1e{n}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "0.0", "1E+2"]),
)

string_literal = st.one_of(
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(
        [
            '"\\ud800"',
            '"\\udfff x"',
            '"a\\ud83d"',
            '"２１"',
            '"٢١"',
            '"21"',
            '"21.5"',
            '"ON"',
            '"OFF"',
            '"online"',
            '""',
            '"2024-05-01T12:00:00+02:00"',
            '"1970-01-01T00:00:05"',
            '"\\u0000"',
        ]
    ),
    st.text(alphabet=_DIGITS, min_size=1, max_size=6).map(lambda s: json.dumps(s)),
)

key_literal = st.one_of(
    st.sampled_from(READING_KEYS).map(json.dumps),
    string_literal,
)

leaf = st.one_of(
    st.sampled_from(["null", "true", "false"]),
    number_literal,
    string_literal,
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


json_text = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_array),
        st.lists(st.tuples(key_literal, inner), max_size=5).map(_object),
    ),
    max_leaves=12,
)

deep_nesting = st.one_of(
    st.integers(20, 100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(20, 20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(20, 20_000).map(lambda n: '{"temperature": ' + "[" * n + "]" * n + "}"),
    st.integers(20, 5_000).map(lambda n: '{"q": ' + "[" * n + '"x"' + "]" * n + "}"),
    st.integers(1, 200).map(lambda n: '"' + "[" * n + '"'),  # brackets inside a string
)

plain_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=_DIGITS + ".-e", min_size=1, max_size=8),
    st.integers(16, 6000).map(lambda n: "9" * n),
    st.sampled_from(["nan", "inf", "-Infinity", "1_000", "on", "OFF", "unavailable", " 21.5 "]),
)

payload = st.one_of(
    json_text.map(str.encode),
    deep_nesting.map(str.encode),
    plain_text.map(str.encode),
    st.binary(max_size=64),
)
"""Bytes of any of the above: the payload of one hostile message."""

topic_tail = st.text(
    alphabet=st.characters(exclude_characters="+#/\x00", exclude_categories=("Cs",)),
    min_size=0,
    max_size=12,
)
