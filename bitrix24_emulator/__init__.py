"""A local emulator of the Bitrix24 cloud REST API (webhook flavour), modelled on the real service's behaviour.

    from bitrix24_emulator import create_emulator, start_server
    emu = create_emulator(rate=2.0, burst=50, cost_per_call=0.0, event_url=None)
    server = start_server(emu)          # server.base == "http://127.0.0.1:PORT/rest/1/demo/"
    ...
    server.stop()

``emu`` is the WSGI app itself; ``emu.records``, ``emu.items`` (smart processes), ``emu.counters``,
``emu.events_sent``, ``emu.wait_events()`` and ``emu.reset()`` expose its state to tests. Command line:
``python -m bitrix24_emulator --port 5002 [--smart-process 128=Projects]``.

Several portals in one process, told apart by Host (``portal-7.bitrix24.test``) or by the webhook
secret (``demo`` for portal 1, ``demo7`` for portal 7), each with its own data, limits and events::

    portals = create_portals(count=100, preload={"contact": 1000})
    server = start_server(portals)      # server.bases[6] == "http://127.0.0.1:PORT/rest/1/demo7/"
    portals.portal(7).records           # portals.portals[6], an Emulator

Command line: ``python -m bitrix24_emulator --portals 100``.

An OAuth application (``create_emulator(app=(client_id, client_secret))``, ``--app ID:SECRET``) is installed
with ``POST /_emulator/install``, calls ``/rest/<method>?auth=<token>`` and renews its tokens at
``/oauth/token/`` (oauth.py, docs/emulator.md).
"""

from .emulator import ConnectionDropped, Counters, Emulator, create_emulator
from .portals import Portals, create_portals
from .server import RunningServer, start_server

__all__ = ["ConnectionDropped", "Counters", "Emulator", "Portals", "RunningServer", "create_emulator",
           "create_portals", "start_server"]
