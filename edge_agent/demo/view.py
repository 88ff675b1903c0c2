"""The demo's live terminal view: rich tables drawn from a :class:`DemoState`.

What is shown is decided in ``state.py``; this module draws it and runs the demo under it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from edge_agent.demo.runner import DemoOptions, run_demo
from edge_agent.demo.state import DemoState, hhmm

SEVERITY_STYLE = {"info": "green", "warning": "yellow", "alert": "bold red"}


def render(state: DemoState, now: float) -> Layout:
    """The whole screen for one refresh; ``now`` is a monotonic time, for the event rate."""
    layout = Layout()
    layout.split_column(
        Layout(_header(state, now), name="header", size=4),  # wraps on narrow terminals
        Layout(name="body"),
        Layout(_footer(state), name="footer", size=3),
    )
    layout["body"].split_row(Layout(name="left", ratio=2), Layout(name="right", ratio=3))
    layout["left"].split_column(
        Layout(_facts(state), name="facts", ratio=3),
        Layout(_events(state, now), name="events", ratio=2),
    )
    layout["right"].split_column(
        Layout(_stream(state), name="stream", size=6),
        Layout(_summaries(state), name="summaries", ratio=3),
        Layout(_anomalies_and_actions(state), name="alerts", ratio=2),
    )
    return layout


def _header(state: DemoState, now: float) -> Panel:
    text = Text.assemble(
        ("sim ", "dim"),
        (hhmm(state.sim_t), "bold cyan"),
        (f" ({state.speed:g}x)   ", "dim"),
        ("model ", "dim"),
        (state.model, "bold"),
        ("   broker ", "dim"),
        (state.broker, "bold"),
        ("   decode ", "dim"),
        ("-" if state.decode_tok_s is None else f"{state.decode_tok_s:.0f} tok/s", "bold"),
        (f"   summaries {state.summaries_total}", ""),
        (f" (fallback {state.fallbacks_total})" if state.fallbacks_total else "", "yellow"),
        (f"   dead letters {state.deadletters_total}" if state.deadletters_total else "", "red"),
    )
    return Panel(text, title="edge-agent demo", title_align="left")


def _footer(state: DemoState) -> Panel:
    note = state.notes[-1] if state.notes else state.phase
    return Panel(Text.assemble((note, "dim"), ("   Ctrl-C to stop", "bold")))


def _facts(state: DemoState) -> Panel:
    table = Table(expand=True, box=None, header_style="bold")
    for name in ("area", "fact", "last", "min", "max"):
        table.add_column(name, justify="right" if name in ("last", "min", "max") else "left")
    for area in sorted(state.facts):
        for i, (fact_id, row) in enumerate(sorted(state.facts[area].items())):
            unit = f" {row.unit}" if row.unit else ""
            table.add_row(
                area if i == 0 else "",
                fact_id.split(".", 1)[-1],
                f"{row.last:g}{unit}",
                f"{row.min:g}",
                f"{row.max:g}",
            )
    body: RenderableType = table if state.facts else Text("waiting for the first summary…")
    return Panel(body, title="facts per area (computed by code)", title_align="left")


def _events(state: DemoState, now: float) -> Panel:
    table = Table(expand=True, box=None, show_header=False)
    table.add_column("t", style="cyan", no_wrap=True, min_width=5)
    table.add_column("device", no_wrap=True, min_width=12)
    table.add_column("payload", overflow="ellipsis", no_wrap=True, ratio=1)
    for sim_time, topic, payload in state.events:
        table.add_row(sim_time, topic.split("/", 1)[-1], payload)
    title = f"events  {state.rate(now):.0f}/s  ({state.events_total} total)"
    return Panel(table, title=title, title_align="left")


def _stream(state: DemoState) -> Panel:
    # Newlines collapsed, newest text kept: the panel is four lines high.
    shown = " ".join(state.stream.split())[-300:]
    text = Text(shown or "…", overflow="fold")
    title = "last generation" if state.stream_done else "generating"
    return Panel(text, title=f"{title} (summary/stream)", title_align="left")


def _summaries(state: DemoState) -> Panel:
    table = Table(expand=True, box=None, header_style="bold")
    table.add_column("area", no_wrap=True)
    table.add_column("at", style="cyan", no_wrap=True)
    table.add_column("summary", ratio=1)
    for area in sorted(state.summaries):
        doc = state.summaries[area]
        marker = Text("FALLBACK ", style="bold yellow") if doc.get("fallback") else Text("")
        text = Text.assemble(
            marker, (str(doc.get("text", "")), SEVERITY_STYLE.get(doc.get("severity", ""), ""))
        )
        table.add_row(area, str(doc.get("sim_time", "")), text)
    body: RenderableType = table if state.summaries else Text("no summary yet")
    return Panel(body, title="last summary per area", title_align="left")


def _anomalies_and_actions(state: DemoState) -> Panel:
    lines: list[RenderableType] = []
    for doc in reversed(state.anomalies):
        lines.append(_line(doc, "anomaly", "bold red", str(doc.get("message", ""))))
    for doc in reversed(state.actions):
        what = f"{doc.get('action', '?')}({doc.get('device', '?')}) {doc.get('reason', '')}"
        lines.append(_line(doc, str(doc.get("event_type", "action")), "bold magenta", what))
    body: RenderableType = Group(*lines) if lines else Text("none yet")
    return Panel(body, title="anomalies and proposed actions", title_align="left")


def _line(doc: dict[str, Any], label: str, style: str, text: str) -> Text:
    return Text.assemble((f"{doc.get('sim_time', '')} ", "cyan"), (f"{label} ", style), text)


class LiveView:
    """The rich ``Live`` display; a context manager, redrawn by :meth:`refresh`.

    No refresh thread: the caller redraws from its event loop, where the state changes.
    """

    def __init__(self, state: DemoState) -> None:
        self._state = state
        self._live = Live(
            get_renderable=self._frame,
            console=Console(),
            auto_refresh=False,
            screen=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def _frame(self) -> Layout:
        return render(self._state, time.monotonic())

    def refresh(self) -> None:
        """Draw the current state."""
        self._live.refresh()

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)


def run_live(opts: DemoOptions) -> int:
    """Run the demo under the live view; print a one-line recap when it ends."""
    state = DemoState(speed=opts.speed)
    _log_into(state)
    with LiveView(state) as view:
        code = asyncio.run(_with_view(opts, state, view))
    print(
        f"edge-agent demo: {state.summaries_total} summaries "
        f"({state.fallbacks_total} fallback), {state.anomalies_total} anomalies, "
        f"{state.events_total} sensor messages up to {hhmm(state.sim_t)} simulated"
    )
    return code


class StateSink:
    """Feeds a :class:`DemoState` for the live view (all calls on the event loop)."""

    def __init__(self, state: DemoState) -> None:
        self.state = state

    def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Fold the record into the state."""
        self.state.apply(kind, fields)

    def sensor(self, sim_t: float, topic: str, payload: bytes) -> None:
        """Add the message to the events tail."""
        self.state.sensor(sim_t, topic, payload, time.monotonic())

    def token(self, delta: str) -> None:
        """Append to the text being generated."""
        self.state.token(delta)


class _Refresh(Protocol):
    def refresh(self) -> None: ...


async def _with_view(opts: DemoOptions, state: DemoState, view: _Refresh) -> int:
    async def refresh() -> None:
        # Drawn on the event loop, so the state is never read while it changes.
        while True:
            view.refresh()
            await asyncio.sleep(0.25)

    refresher = asyncio.create_task(refresh(), name="live-view")
    try:
        return await run_demo(opts, StateSink(state))
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)


class _NoteHandler(logging.Handler):
    """Log records (warnings and up) into the view's footer instead of over the screen."""

    def __init__(self, state: DemoState) -> None:
        super().__init__(logging.WARNING)
        self._state = state

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg.get("event") if isinstance(record.msg, dict) else None
        self._state.note(f"{record.levelname.lower()}: {event or record.getMessage()}")


def _log_into(state: DemoState) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_NoteHandler(state)]
