"""What a call costs the portal's server: the time charged to the method's operating budget.

The emulator answers in microseconds, so its own run time would never reach the 0.1 s a portal
starts counting at (https://apidocs.bitrix24.com/limits.html). Instead each call is given the
server time a real portal would spend, and that is what the operating budget is charged.

The shape follows Bitrix24's own page on huge lists
(https://apidocs.bitrix24.com/settings/performance/huge-data.html): with ``start >= 0`` every page
also COUNTs the whole matching set (for ``total``), which on 2,387,743 leads took 49.9 s, while the
same page with ``start=-1`` and a ``>ID`` cursor took 0.0685 s of processing, at any depth. An offset
page also skips ``start`` rows; the page does not give that cost, so it is modelled as a tenth of a
counted row's. Writes and single reads are cheap. Nothing below the 0.1 s threshold is charged, as
on a portal: a keyset page never is, an offset page on a large set always is.
"""

from __future__ import annotations

from .phpform import php_int

# Seconds.
PAGE = 0.0685  # one page of 50 rows found by an index (the docs' keyset page)
PER_COUNTED_ROW = 49.9 / 2_387_743  # each row COUNT visits for "total" (the docs' 49.9 s)
PER_SKIPPED_ROW = PER_COUNTED_ROW / 10  # each row an offset page skips (not in the docs: an estimate)
READ = 0.02  # crm.*.get, fields, profile and the other small reads
WRITE = 0.05  # add, update, delete (the record, its history and its events)


def server_time(method: str, params: dict, total: int | None, overrides: dict[str, float] | None = None) -> float:
    """The modelled server time of one call (a batch's commands are charged one by one). ``overrides``
    gives some methods a time of their own: on a real portal an update that starts business processes
    and automation rules, or a method of a slow module, can take seconds."""
    if overrides and method in overrides:
        return overrides[method]
    action = method.rsplit(".", 1)[-1]
    if action == "list":
        start = php_int(params.get("start"))  # as the portal reads it: 10**400 is INF, which is 0
        if start < 0:
            return PAGE  # keyset: no COUNT, no skipping
        return PAGE + PER_SKIPPED_ROW * start + PER_COUNTED_ROW * (total or 0)
    if action in ("add", "update", "delete"):
        return WRITE
    return READ
