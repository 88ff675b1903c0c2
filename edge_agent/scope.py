"""Which series an ask is about, picked before any finding is made, at a bounded cost.

An ask used to compute the findings of every series and then keep the few its question
named: with a thousand series that was tens of milliseconds on the event loop. Here the
question's words go through the store's indexes instead (area, device and id words,
newest readings first, plus what each word means: "warm" is a temperature, "door" a
contact or opening) and at most ``limit`` series are taken, the ones most of the
question's words name first. Series with news are always added: open excursions,
changes a state explained, and the last series that raised an anomaly (a silent sensor,
a jump). The rest of the budget goes to the series with the newest readings, so a
question that names nothing gets a whole-home selection, the whole home when it has
at most ``limit`` series. The narrator ranks the findings of these facts only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.domain import Excursion, ExplainedChange, MetricFacts
from edge_agent.facts import Key, WindowStore, id_words
from edge_agent.semantics import Naming, question_metrics

ASK_SERIES = 128
"""Series an ask computes findings for, at most (~30 µs each): about 4 ms per ask."""

NOTABLE_KEPT = 64
"""Series that raised the latest anomalies, kept as candidates of every ask."""

MAX_QUESTION_WORDS = 32
"""Distinct question words looked up; a longer question's further words are ignored."""

_WORD = re.compile(r"[\w']+")
"""A question's words, as :func:`edge_agent.prompts.question_words` reads them."""


@dataclass(frozen=True, slots=True)
class AskMaterial:
    """What an answer is made from: the candidate facts and the area news around them."""

    facts: tuple[MetricFacts, ...]
    excursions: tuple[Excursion, ...]
    explained: tuple[ExplainedChange, ...]


class AskScope:
    """Picks the series a question is about from the store's indexes (see module doc)."""

    def __init__(
        self,
        store: WindowStore,
        names: Naming,
        *,
        excursions: Callable[[str | None], Sequence[Excursion]] | None = None,
        explained: Callable[[str | None], Sequence[ExplainedChange]] | None = None,
        limit: int = ASK_SERIES,
    ) -> None:
        self._store = store
        self._names = names
        self._excursions = excursions
        self._explained = explained
        self._limit = limit
        self._notable: dict[Key, None] = {}
        """Series of the latest anomalies, newest last (a bounded recency set)."""
        self._named: tuple[tuple[int, int], dict[str, set[str]]] | None = None
        """(version, word -> devices) of the configured and learned device names."""
        self._areas: dict[str, set[str]] | None = None
        """Word -> areas of the configured area names (built on the first ask)."""

    def note(self, device: str, metric: str) -> None:
        """Remember a series that just raised an anomaly: it is news for the next asks."""
        key = (device, metric)
        self._notable.pop(key, None)
        self._notable[key] = None
        if len(self._notable) > NOTABLE_KEPT:
            del self._notable[next(iter(self._notable))]

    def material(self, question: str, now: float) -> AskMaterial:
        """The facts, open excursions and explained changes an answer to ``question``
        is made from; costs the series taken (and the areas), never all series."""
        excursions: list[Excursion] = []
        explained: list[ExplainedChange] = []
        for area in self._store.areas:  # areas come from the config: a handful
            if self._excursions is not None:
                excursions.extend(self._excursions(area))
            if self._explained is not None:
                explained.extend(self._explained(area))
        keys = dict.fromkeys(self.select(question))
        for exc in excursions:
            keys[(exc.device, exc.metric)] = None
        for change in explained:
            keys[(change.device, change.metric)] = None
        for key in reversed(self._notable):
            keys[key] = None
        for key in self._store.newest(self._limit):
            if len(keys) >= self._limit:
                break
            keys[key] = None
        return AskMaterial(self._store.facts_of(keys, now), tuple(excursions), tuple(explained))

    def select(self, question: str) -> tuple[Key, ...]:
        """Up to ``limit`` series the question's words name, best named first.

        A word weighs more the fewer series it names (``log(1 + series / named)``): a
        device's own word ("000500", "fridge") beats "temperature", which names every
        thermometer and of which only the newest ``limit`` are taken.
        """
        store, limit = self._store, self._limit
        total = max(store.series_count, 1)
        named = self._device_words()
        score: dict[Key, float] = {}
        # In the order asked: a long question's first words are the ones looked up.
        asked = list(dict.fromkeys(w.lower() for w in _WORD.findall(question)))
        asked = asked[:MAX_QUESTION_WORDS]
        for word in asked:
            # Ordered collections only: ties keep the store's order (newest first), so
            # the same question over the same store always takes the same series.
            found: dict[Key, None] = {}
            count = 0
            for form in dict.fromkeys((word, *id_words(word), *sorted(question_metrics(word)))):
                count += store.word_count(form)
                found.update(dict.fromkeys(store.with_word(form, limit)))
            for device in sorted(named.get(word, ())):
                count += 1
                found.update(dict.fromkeys(store.of_device(device, limit)))
            for area in sorted(self._area_words().get(word, ())):
                count += limit
                found.update(dict.fromkeys(store.in_area(area, limit)))
            weight = math.log1p(total / max(count, 1))
            for key in found:
                score[key] = score.get(key, 0.0) + weight
        ranked = sorted(score, key=lambda k: -score[k])
        return tuple(ranked[:limit])

    def _area_words(self) -> dict[str, set[str]]:
        """Word -> areas, from the configured area names (area ids are in the store's
        words); the names are fixed at start, so it is built once."""
        if self._areas is None:
            index: dict[str, set[str]] = {}
            for area, name in self._names.area_names.items():
                for word in id_words(name):
                    index.setdefault(word, set()).add(area)
            self._areas = index
        return self._areas

    def _device_words(self) -> dict[str, set[str]]:
        """Word -> devices, from configured and learned names; rebuilt when they change."""
        version = (self._names.version, len(self._names.device_names))
        if self._named is None or self._named[0] != version:
            index: dict[str, set[str]] = {}
            for source in (self._names.device_names, self._names.learned):
                for device, name in source.items():
                    for word in id_words(name):
                        index.setdefault(word, set()).add(device)
            self._named = (version, index)
        return self._named[1]
