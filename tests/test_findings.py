"""Findings: what is notable in a window, ranked, with exactly the numbers it may cite."""

from __future__ import annotations

from datetime import UTC

from edge_agent.domain import Excursion, MetricFacts
from edge_agent.findings import FindingRules, Findings, find
from edge_agent.prompts import fallback_text, summary_title
from edge_agent.semantics import Naming

H = 3600.0
RULES = FindingRules(limits={"co2": (None, 1200.0)}, tz=UTC)


def _level(
    metric: str,
    unit: str,
    last: float,
    low: float,
    high: float,
    slope: float | None = None,
    device: str = "living_room/climate",
    area: str = "living_room",
) -> MetricFacts:
    mean = (low + high) / 2
    return MetricFacts(device, metric, 60, last, low, high, mean, 0.0, H, unit, area, slope)


def _state(metric: str, last: float, changes: tuple[tuple[float, float], ...] = (),
           device: str = "hallway/front_door", area: str = "hallway") -> MetricFacts:  # fmt: skip
    return MetricFacts(device, metric, 9, last, 0.0, 1.0, 0.5, 0.0, H, None, area, changes=changes)


def _find(*facts: MetricFacts, rules: FindingRules = RULES, **kw: object) -> Findings:
    return find(facts, rules=rules, names=Naming(), window_s=H, **kw)  # type: ignore[arg-type]


def test_a_closed_zigbee2mqtt_door_is_closed() -> None:
    found = _find(_state("contact", 1.0))
    (door,) = found.items
    assert door.sentence == "Front door is closed."
    assert door.state is True
    assert not door.numbers  # no 0/1 anywhere


def test_a_door_that_opened_three_times_says_so_with_the_last_time() -> None:
    flips = ((1000.0, 0.0), (1100.0, 1.0), (2000.0, 0.0), (2100.0, 1.0), (9 * H + 40 * 60, 0.0),
             (9 * H + 45 * 60, 1.0))  # fmt: skip
    (door,) = _find(_state("contact", 1.0, flips)).items
    assert door.phrase == "Front door opened 3 times, last at 09:40, now closed"
    assert [n.text for n in door.numbers] == ["3", "09:40"]


def test_an_arrival_is_news_with_its_local_time() -> None:
    arrived = _state("occupancy", 1.0, ((8 * H + 12 * 60, 1.0),), "office/sensor", "office")
    temp = _level("temperature", "°C", 21.43, 21.0, 21.5, device="office/sensor", area="office")
    found = _find(arrived, temp)
    assert found.top is not None
    assert found.top.phrase == "Office occupied since 08:12"
    assert found.notable


def test_an_open_excursion_is_the_top_finding_and_keeps_the_alert() -> None:
    co2 = _level("co2", "ppm", 1210, 900, 1487, 300.0)
    temp = _level("temperature", "°C", 21.4, 21.0, 21.5)
    exc = Excursion("living_room/climate", "co2", 1000.0, "above", 10 * H + 5 * 60, 1487, 1210,
                    "ppm", "living_room")  # fmt: skip
    found = _find(temp, co2, excursions=(exc,))
    assert found.top is not None
    assert found.top.kind == "excursion"
    assert found.top.sentence == (
        "CO2 has been above 1,000 ppm since 10:05, peak 1,487 ppm; it is 1,210 ppm now."
    )
    assert found.severity == "alert"
    assert {n.role for n in found.top.numbers} == {"now", "limit", "time", "peak"}


def test_a_level_past_its_limit_is_an_alert_until_it_comes_back() -> None:
    assert _find(_level("co2", "ppm", 1250, 900, 1260)).severity == "alert"
    assert _find(_level("co2", "ppm", 1150, 900, 1260)).severity == "info"


def test_a_shower_is_a_jump_from_low_to_high() -> None:
    (jump,) = _find(_level("humidity", "%", 85, 52, 85, 30.0)).items
    assert jump.phrase == "humidity rose from 52 % to 85 %"


def test_diagnostics_stay_out_unless_notable() -> None:
    full = _level("battery", "%", 94, 94, 94, device="hallway/front_door", area="hallway")
    radio = _level("linkquality", "lqi", 120, 100, 130, device="hallway/front_door", area="hallway")
    assert _find(full, radio).items == ()
    low = _level("battery", "%", 12, 12, 12, device="hallway/front_door", area="hallway")
    (battery,) = _find(low).items
    assert battery.sentence == "Front door battery is low at 12 %."


def test_a_silent_sensor_is_a_warning() -> None:
    stale = MetricFacts("attic", "temperature", 0, 12.0, 12.0, 12.0, 12.0, 9 * H, 9 * H, "°C",
                        "attic", stale=True)  # fmt: skip
    found = _find(stale)
    assert found.items[0].sentence == "Attic has sent nothing since 09:00."
    assert found.severity == "warning"


def test_titles_and_fallbacks_are_readable_sentences() -> None:
    temp = _level("temperature", "°C", 21.43, 21.0, 21.5)
    co2 = _level("co2", "ppm", 701, 640, 705, 120.0)
    found = _find(temp, co2)
    assert (
        summary_title("Living room", found.items) == "Living room: CO2 701 ppm and rising, 21.4 °C"
    )
    assert fallback_text(found.items) == "CO2 is 701 ppm and rising. Temperature is 21.4 °C."
    quiet = _find(temp)
    assert fallback_text(quiet.items) == "All quiet. Temperature is 21.4 °C."
    for text in (summary_title("Living room", found.items), fallback_text(found.items)):
        assert "_" not in text


def test_french_words_and_numbers() -> None:
    rules = FindingRules(limits={"co2": (None, 1200.0)}, language="fr", tz=UTC)
    door = _state("contact", 0.0, ((9 * H + 40 * 60, 0.0),))
    temp = _level("temperature", "°C", 21.43, 21.0, 21.5, device="hallway/t", area="hallway")
    found = _find(door, temp, rules=rules)
    assert fallback_text(found.items, "fr") == (
        "Front door : ouverte depuis 09:40. La température est de 21,4 °C."
    )
