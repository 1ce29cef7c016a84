"""How method families plug into the emulator.

A family is a module with:

- ``METHODS``: the lower-case method names it serves;
- ``call(method, params, portal, context)``: runs one of them and returns its ``result`` (or an
  :class:`Outcome` when the answer also carries ``total``/``next``); raises ``ApiError`` to refuse;
- optionally ``SCOPES``: ``{method: scope}`` where the scope is not the method's first name segment
  (``tasks.task.add`` needs ``task``; ``event.bind`` needs none, i.e. ``"basic"``);
- optionally ``State``: a class built once per portal as ``State(portal)`` for the family's own data
  (``portal.state(module)`` returns it; ``portal.reset()`` forgets it).

``context`` carries the request's ``host`` and ``scheme`` (for event payloads). The portal offers
``portal.store`` (legacy CRM records), ``portal.item_store`` (crm.item), ``portal.clock``,
``portal.user_id``, ``portal.scopes`` and ``portal.emit(event_name, data_pairs, context)`` to post an
outbound event to the bound handlers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    """A method's answer: ``result``, plus ``total`` and ``next`` for list methods."""

    result: object
    total: int | None = None
    next: int | None = None


def method_table(families) -> dict[str, object]:
    """{method: family module}; two families serving one name is a programming error."""
    table: dict[str, object] = {}
    for family in families:
        for name in family.METHODS:
            if name in table:
                raise RuntimeError(f"{name} is served by both {table[name].__name__} and {family.__name__}")
            table[name] = family
    return table


def scope_table(families) -> dict[str, str]:
    out: dict[str, str] = {}
    for family in families:
        out.update(getattr(family, "SCOPES", {}))
    return out
