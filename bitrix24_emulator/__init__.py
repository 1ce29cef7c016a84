"""A local emulator of the Bitrix24 cloud REST API (webhook flavour), see bitrix24-api.md."""

from .emulator import ConnectionDropped, Counters, Emulator, create_emulator
from .server import RunningServer, start_server

__all__ = ["ConnectionDropped", "Counters", "Emulator", "RunningServer", "create_emulator", "start_server"]
