"""The host's hooks: event handlers and the API's ``authorize`` decision.

Held by the extension object and handed to each app's runtime, so services find the handlers
through ``runtime().hooks`` and never reach up to the extension itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# hook(client_id) -> True: allowed; False: forbidden (403); None: nobody is signed in (401).
AuthorizeHook = Callable[[int | None], "bool | None"]
EventHandler = Callable[[Any], None]


class Hooks:
    def __init__(self, authorize: AuthorizeHook | None = None) -> None:
        self.authorize: AuthorizeHook | None = authorize
        self._handlers: dict[str, list[EventHandler]] = {}

    def add_handler(self, event_name: str, handler: EventHandler) -> None:
        name = event_name.strip().upper()
        if not name:
            raise ValueError("an event name, or '*' for every event")
        self._handlers.setdefault(name, []).append(handler)

    def event_names(self) -> list[str]:
        """The events handlers are registered for by name (not ``*``)."""
        return sorted(name for name, handlers in self._handlers.items() if handlers and name != "*")

    def handlers_for(self, event_name: str) -> list[EventHandler]:
        return [*self._handlers.get(event_name.upper(), []), *self._handlers.get("*", [])]
