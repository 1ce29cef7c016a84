"""``bx_batch``: commands in ``batch`` requests of 50, each command's result or error kept apart."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..bitrix24_service import bx_call
from ..caller import is_repeatable
from ..errors import BadInput, Bitrix24Error, classify
from ..wire import (
    ENCODE_ERRORS,
    EncodedCommand,
    batch_body,
    batch_key,
    batch_section,
    encode_command,
    encode_form,
    flatten_params,
)

BATCH_LIMIT = 50  # commands per batch request (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html)
_REFERENCE = re.compile(r"\$(?:result|next|total|time|error)\[([^\]]+)\]")


@dataclass
class BatchItem:
    """One command's outcome. ``error`` is None on success."""

    key: str
    method: str
    result: Any = None
    error: Bitrix24Error | None = None
    total: int | None = None
    next: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def command_string(method: str, params: Any) -> str:
    """``crm.contact.get?id=5``: each command is parsed by PHP's parse_str on the portal."""
    query = encode_form(flatten_params(params))
    return f"{method}?{query}" if query else method


def _references(params: Any) -> set[str]:
    found: set[str] = set()
    for _, value in flatten_params(params):
        found.update(_REFERENCE.findall(value))
    return found


def bx_batch(
    commands: Mapping[str, tuple[str, Any]] | Iterable[tuple[str, Any]],
    *,
    client_id: int | None = None,
    halt: bool = False,
    max_wait: float | None = None,
) -> dict[str, BatchItem] | list[BatchItem]:
    """Run commands in ``batch`` requests of 50, back to back at the pace the bucket allows.

    ``commands`` is a dict ``{key: (method, params)}`` (an answer keyed the same) or a list of
    ``(method, params)`` (an answer list in the same order). ``$result[key][...]`` references may
    point to earlier commands of the same chunk of 50; a reference across chunks is refused before
    anything is sent. Every command gets a ``BatchItem``: its result, or its error (with
    ``halt=True``, commands after a failure get a ``BATCH_HALTED`` error; when a later request of
    the batch fails as a whole, its commands and the ones after it carry that error while the
    results of the requests that ran are kept). Nothing is dropped.
    """
    keyed = isinstance(commands, Mapping)
    pairs = list(commands.items()) if keyed else [(f"c{i}", cmd) for i, cmd in enumerate(commands)]
    for key, cmd in pairs:
        if not (isinstance(cmd, tuple) and len(cmd) == 2 and isinstance(cmd[0], str)):
            raise ValueError(f"command {key!r} must be a (method, params) pair")
    chunks = [pairs[i : i + BATCH_LIMIT] for i in range(0, len(pairs), BATCH_LIMIT)]
    for chunk in chunks:
        keys = {str(k) for k, _ in chunk}
        for key, (_, params) in chunk:
            outside = _references(params) - keys
            if outside:
                raise ValueError(f"command {key!r} refers to {sorted(outside)} outside its batch of {BATCH_LIMIT}")

        for number, (key, (method, params)) in enumerate(chunk):
            try:  # refuse what cannot be sent before the first chunk runs, not halfway through; encoded once
                batch_key(str(key))
                chunk[number] = (key, (method, encode_command(method, params)))
            except ENCODE_ERRORS as exc:
                raise ValueError(f"command {key!r} cannot be sent: {exc}") from None

    items: list[BatchItem] = []
    halted = False
    failure: Bitrix24Error | None = None
    for chunk in chunks:
        if halted or failure is not None:
            # Earlier chunks ran: their results stand. These did not run, and say why.
            items += [BatchItem(str(k), m, error=failure) if failure else _halted(str(k), m) for k, (m, _) in chunk]
            continue
        try:
            chunk_items = run_chunk(chunk, client_id=client_id, halt=halt, max_wait=max_wait)
        except Bitrix24Error as exc:
            if not items:
                raise  # nothing ran: the caller gets the error itself
            failure = exc
            items += [BatchItem(str(k), m, error=exc) for k, (m, _) in chunk]
            continue
        items += chunk_items
        halted = halt and any(not item.ok for item in chunk_items)
    return {item.key: item for item in items} if keyed else items


def _halted(key: str, method: str) -> BatchItem:
    return BatchItem(key, method, error=Bitrix24Error("not run: an earlier command failed and halt was set",
                                                      code="BATCH_HALTED", method=method))


def run_chunk(
    chunk: list[tuple[Any, tuple[str, Any]]], *, client_id: int | None, halt: bool, max_wait: float | None
) -> list[BatchItem]:
    """One ``batch`` request (at most 50 commands) -> one ``BatchItem`` per command, in order. A command's
    params may be an ``EncodedCommand`` already (``encode_command``), sent as it is."""
    try:
        body = batch_body(halt, {str(key): params if isinstance(params, EncodedCommand)
                                 else encode_command(method, params) for key, (method, params) in chunk})
    except ENCODE_ERRORS as exc:
        raise BadInput(f"these params cannot be sent to Bitrix24: {exc}", code="INVALID_PARAMS",
                       method="batch") from None
    repeatable = all(is_repeatable(method) for _, (method, _) in chunk)
    envelope = bx_call("batch", body, client_id=client_id, max_wait=max_wait, repeatable=repeatable, background=True)
    body = envelope.get("result") if isinstance(envelope.get("result"), dict) else {}
    results, errors = batch_section(body.get("result")), batch_section(body.get("result_error"))
    totals, nexts = batch_section(body.get("result_total")), batch_section(body.get("result_next"))
    items = []
    for key, (method, _) in chunk:
        key = str(key)
        item = BatchItem(key, method, total=totals.get(key), next=nexts.get(key))
        if key in errors:
            err = errors[key] if isinstance(errors[key], dict) else {}
            item.error = classify(400, err.get("error"), err.get("error_description"), method=method, body=err)
        elif key in results:
            item.result = results[key]
        else:
            item.error = _halted(key, method).error
        items.append(item)
    return items

