"""A local emulator of the Bitrix24 cloud REST API (webhook flavour), modelled on the real service's behaviour.

    from bitrix24_emulator import create_emulator, start_server
    emu = create_emulator(rate=2.0, burst=50, cost_per_call=0.0, event_url=None)
    server = start_server(emu)          # server.base == "http://127.0.0.1:PORT/rest/1/demo/"
    ...
    server.stop()

``emu`` is the WSGI app itself; ``emu.records``, ``emu.items`` (smart processes), ``emu.counters``,
``emu.events_sent``, ``emu.wait_events()`` and ``emu.reset()`` expose its state to tests. Command line:
``python -m bitrix24_emulator --port 5002 [--smart-process 128=Projects]``.
"""

from .emulator import ConnectionDropped, Counters, Emulator, create_emulator
from .server import RunningServer, start_server

__all__ = ["ConnectionDropped", "Counters", "Emulator", "RunningServer", "create_emulator", "start_server"]
