"""The canonical line per result (summary, answer, action decision, dead letter).

Each result is logged once, with every field an operator filters on, through
:func:`record`. The same call feeds the metrics, so the journal and ``/metrics`` count
the same things and no code path counts twice. The observer and the fields every line
carries (model, backend) are set by the app for the service's tasks through a context
variable, so two agents in one process (tests) each see only their own results, and
code that runs without the app (unit tests) logs exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Observer = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ResultContext:
    """What the app adds to every canonical line, and who else sees it."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    """E.g. ``model`` and ``backend``; a field the caller passes wins."""
    observer: Observer | None = None


_context: ContextVar[ResultContext | None] = ContextVar("edge_agent_results", default=None)


def record(emit: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log ``event`` with ``emit`` (e.g. ``log.info``) and hand it to the observer.

    The observer is called whatever the log level, so metrics do not depend on it.
    """
    ctx = _context.get()
    if ctx is not None:
        fields = {**ctx.fields, **fields}
    emit(event, **fields)
    if ctx is not None and ctx.observer is not None:
        ctx.observer(event, fields)


@contextmanager
def results_context(observer: Observer | None = None, **fields: Any) -> Iterator[ResultContext]:
    """Set the observer and common fields for the code (and tasks) started inside."""
    ctx = ResultContext(dict(fields), observer)
    token = _context.set(ctx)
    try:
        yield ctx
    finally:
        _context.reset(token)
