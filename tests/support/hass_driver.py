"""Runs inside the Home Assistant venv: a real Home Assistant, driven over stdin/stdout.

Home Assistant starts exactly as ``hass -c <config_dir> --skip-pip`` does (its own
``runner.run`` and ``bootstrap``), with the MQTT integration set up from a config entry
that the test wrote. Beside it, a thread reads one JSON command per line on stdin and
answers one line on stdout, prefixed with ``@@hass``:

* ``{"cmd": "snapshot"}``: the MQTT entities and devices in HA's registries, every
  state, MQTT discovery's bookkeeping and whether the MQTT client is connected;
* ``{"cmd": "stop"}`` (or end of input): stop Home Assistant.

The first line, ``{"event": "started"}``, comes once Home Assistant has started.
This file is not imported by the test suite; the HA venv's Python runs it.
"""

import asyncio
import json
import sys
import threading

from homeassistant import runner
from homeassistant.const import EVENT_HOMEASSISTANT_STARTED
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

PREFIX = "@@hass "
_original = runner.setup_and_run_hass


def say(message):
    """One answer line on stdout (HA logs to stderr and its log file)."""
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def snapshot(hass):
    """What the test asserts on: registries, states and MQTT discovery's own view."""
    entities = [
        {
            "entity_id": e.entity_id,
            "unique_id": e.unique_id,
            "platform": e.platform,
            "device_id": e.device_id,
        }
        for e in er.async_get(hass).entities.values()
        if e.platform == "mqtt"
    ]
    devices = [
        {"id": d.id, "identifiers": sorted(list(i) for i in d.identifiers), "name": d.name}
        for d in dr.async_get(hass).devices.values()
        if any(i[0] == "mqtt" for i in d.identifiers)
    ]
    mqtt = hass.data.get("mqtt")
    return {
        "entities": entities,
        "devices": devices,
        "states": {s.entity_id: s.state for s in hass.states.async_all()},
        "discovered": sorted(
            " ".join(h) for h in getattr(mqtt, "discovery_already_discovered", ())
        ),
        "mqtt_connected": bool(mqtt is not None and mqtt.client.connected),
    }


def serve(hass):
    """Read commands on a plain thread; run each one on HA's loop."""

    async def handle(line):
        command = json.loads(line)["cmd"]
        if command == "snapshot":
            say(snapshot(hass))
        elif command == "stop":
            await hass.async_stop()

    for line in sys.stdin:
        if line.strip():
            asyncio.run_coroutine_threadsafe(handle(line), hass.loop).result()
    asyncio.run_coroutine_threadsafe(hass.async_stop(), hass.loop)


async def setup_and_run(runtime_config):
    """``runner.setup_and_run_hass`` with the command thread started once HA has started."""
    from homeassistant import bootstrap

    hass = await bootstrap.async_setup_hass(runtime_config)
    if hass is None:
        return 1
    # As runner.setup_and_run_hass does: threading._shutdown can deadlock forever.
    threading._shutdown = runner.deadlock_safe_shutdown

    def started(_event):
        say({"event": "started"})
        threading.Thread(target=serve, args=(hass,), daemon=True, name="edge_agent_probe").start()

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STARTED, started)
    return await hass.async_run()


if __name__ == "__main__":
    config_dir, log_file = sys.argv[1], sys.argv[2]
    runner.setup_and_run_hass = setup_and_run
    sys.exit(
        runner.run(runner.RuntimeConfig(config_dir=config_dir, skip_pip=True, log_file=log_file))
    )
