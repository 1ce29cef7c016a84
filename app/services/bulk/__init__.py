"""Bulk work: ``bx_batch`` (50 commands a request), ``bx_list_all`` (every row, constant memory) and
``bulk_write`` (thousands of creates and updates, each created exactly once).

All three go through ``bx_call``, so they are paced by the portal's bucket and retried by error
class like any call; a batch of reads is repeatable, a batch holding an ``*.add`` is not. They are
background work: they leave a fifth of the bucket to interactive calls and never queue ahead of them.
"""

from __future__ import annotations

from .batch import BATCH_LIMIT, BatchItem, bx_batch, command_string, run_chunk
from .list_all import PAGE, bx_list_all
from .write import ORIGINATOR, PORTAL_MAX_RUN, UnsendableItem, WriteOutcome, bulk_write

__all__ = [
    "BATCH_LIMIT",
    "ORIGINATOR",
    "PAGE",
    "PORTAL_MAX_RUN",
    "BatchItem",
    "UnsendableItem",
    "WriteOutcome",
    "bulk_write",
    "bx_batch",
    "bx_list_all",
    "command_string",
    "run_chunk",
]
