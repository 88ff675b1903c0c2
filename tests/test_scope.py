"""Which series an ask is about: picked through the store's indexes, bounded, before findings."""

from __future__ import annotations

from edge_agent.domain import Excursion, SensorEvent
from edge_agent.facts import WindowStore
from edge_agent.findings import FindingRules, find
from edge_agent.prompts import relevant
from edge_agent.scope import ASK_SERIES, NOTABLE_KEPT, AskScope
from edge_agent.semantics import Naming

NOW = 10_000.0


def _store(devices: int, *, area: str | None = None, metric: str = "temperature") -> WindowStore:
    """``devices`` thermometers named like a flood of distinct zigbee2mqtt names."""
    store = WindowStore(600, max_series=5000, max_devices=5000)
    for i in range(devices):
        unit = "°C" if metric == "temperature" else None
        store.add(SensorEvent(f"dev-{i:06d}", metric, 21.0, NOW - 300 + i * 0.01, "z", unit, area))
    return store


def _top(store: WindowStore, scope: AskScope, question: str) -> list[str]:
    """The devices an answer would show: the relevant findings of the scope's facts."""
    material = scope.material(question, NOW)
    rules, excursions = FindingRules(), material.excursions
    found = find(material.facts, rules=rules, names=Naming(), excursions=excursions)
    return [f.device for f in relevant(question, found.items)]


def test_a_small_home_is_taken_whole_for_a_question_naming_nothing() -> None:
    store = _store(40)
    store.add(SensorEvent("hall/door", "contact", 1.0, NOW - 5, "z", None, "hall"))
    material = AskScope(store, Naming()).material("Anything new?", NOW)
    assert material.facts == store.facts(NOW)


def test_one_device_among_thousands_is_found_by_its_own_word() -> None:
    store = _store(3000)
    scope = AskScope(store, Naming())
    material = scope.material("What is the temperature of dev 000500?", NOW)
    assert len(material.facts) <= ASK_SERIES
    assert "dev-000500" in {f.device for f in material.facts}
    assert _top(store, scope, "What is the temperature of dev 000500?")[0] == "dev-000500"


def test_a_metric_is_found_by_what_the_question_means() -> None:
    # 300 thermometers are newer than the door: "open" and "door" still find the contact.
    store = WindowStore(600)
    store.add(SensorEvent("entrance", "contact", 1.0, NOW - 400, "z", None, "hall"))
    for i in range(300):
        store.add(SensorEvent(f"t{i}", "temperature", 21.0, NOW - 100 + i * 0.1, "z", "°C"))
    scope = AskScope(store, Naming(), limit=32)
    assert "entrance" in {f.device for f in scope.material("Is the door open?", NOW).facts}
    assert _top(store, scope, "Is the door open?") == ["entrance"]


def test_configured_area_names_and_learned_device_names_select_series() -> None:
    store = _store(500)
    store.add(SensorEvent("lr/thermo", "temperature", 19.5, NOW - 500, "z", "°C", "lr"))
    store.add(SensorEvent("0x00124b0012ab34cd", "temperature", 4.0, NOW - 500, "z", "°C"))
    names = Naming(area_names={"lr": "Salon"})
    names.learn("0x00124b0012ab34cd", "Fridge")
    scope = AskScope(store, names, limit=16)
    assert ("lr/thermo", "temperature") in scope.select("Quelle température au salon ?")
    assert scope.select("How cold is the fridge?")[0] == ("0x00124b0012ab34cd", "temperature")


def test_past_the_budget_a_question_naming_nothing_gets_the_newest_and_the_news() -> None:
    store = _store(1000)
    opened = Excursion("dev-000001", "temperature", 30.0, "above", NOW - 200, 35.0, 35.0, "°C")
    scope = AskScope(store, Naming(), excursions=lambda area: [opened] if area is None else [])
    scope.note("dev-000002", "temperature")  # a silent sensor or a jump, said by an anomaly
    material = scope.material("Anything new?", NOW)
    devices = {f.device for f in material.facts}
    assert len(material.facts) <= ASK_SERIES + NOTABLE_KEPT
    assert {"dev-000001", "dev-000002", "dev-000999"} <= devices
    assert "dev-000100" not in devices  # old and quiet: left out
    assert material.excursions == (opened,)


def test_the_notable_set_is_bounded_and_keeps_the_latest() -> None:
    scope = AskScope(_store(0), Naming())
    for i in range(NOTABLE_KEPT + 10):
        scope.note(f"d{i}", "temperature")
    scope.note("d5", "temperature")  # seen again: now the newest
    kept = list(scope._notable)
    assert len(kept) == NOTABLE_KEPT
    assert kept[-1] == ("d5", "temperature")
    assert ("d0", "temperature") not in kept


def test_the_word_index_follows_readings_moves_and_pruning() -> None:
    store = WindowStore(60, baseline_s=60, stale_min_gaps=3)
    store.add(SensorEvent("sensor.living_room_co2", "state", 700.0, 0.0, "z", "ppm", "lr"))
    store.add(SensorEvent("kitchenCO2", "co2", 650.0, 1.0, "z", "ppm", "kitchen"))
    assert set(store.with_word("co2", 10)) == {("kitchenCO2", "co2"),
                                               ("sensor.living_room_co2", "state")}  # fmt: skip
    store.add(SensorEvent("sensor.living_room_co2", "state", 710.0, 2.0, "z", "ppm", "lr"))
    # More than asked for: the newest readings first.
    assert store.with_word("co2", 1) == [("sensor.living_room_co2", "state")]
    assert store.with_word("living", 10) == [("sensor.living_room_co2", "state")]
    # Another area: filed under its words, gone from the old area's.
    store.add(SensorEvent("kitchenCO2", "co2", 660.0, 3.0, "z", "ppm", "office"))
    assert store.with_word("office", 10) == [("kitchenCO2", "co2")]
    assert store.word_count("kitchen") == 1  # still the device's own word
    assert list(store.in_area("kitchen", 10)) == []
    # One-off names leave the indexes with their readings.
    before = store.names_version
    store.facts(1000.0)
    assert store.series_count == 0
    assert store.word_count("co2") == 0
    assert store.names_version > before
    assert list(store.of_device("kitchenCO2", 10)) == []
