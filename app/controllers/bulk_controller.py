"""Bulk endpoints: stream every row of a list, write many records, run raw batch commands."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, stream_with_context

from ..entities import ENTITIES, Entity
from ..services.bitrix24_service import Bitrix24Error, bx_batch, bx_list_all
from ..services.bulk import UnsendableItem, bulk_write
from ..services.wire import ENCODE_ERRORS, check_sendable, parse_php_form
from .errors import ApiError
from .params import check_command_names, check_field_names

log = logging.getLogger("flask_bitrix24")

_FLUSH_BYTES = 64 * 1024
_CRUD_ACTIONS = ("add", "get", "update", "delete", "list", "fields")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stream_all(ent: Entity, params: dict[str, Any], client_id: int,
               transform: Callable[[Any], Any] | None = None) -> Response:
    """Every matching row as one JSON document, ``{"result": [...], "total": N}``, streamed; each row
    through ``transform`` when given (``labels=1`` adds the labels of its list fields).

    The first batch is fetched before the answer starts, so a missing config or a refused
    credential still gets its own status. A failure later cannot change the status any more: the
    document then ends with ``"error"`` and ``"error_description"`` after the rows sent so far.
    """
    rows = bx_list_all(ent.method("list"), params, client_id=client_id)
    if transform is not None:
        rows = map(transform, rows)
    first = next(rows, None)

    def generate():
        count, parts, size = 0, ['{"result":['], 0
        error: Bitrix24Error | None = None
        if first is not None:
            parts.append(_dumps(first))
            count = 1
        try:
            for row in rows:
                text = "," + _dumps(row)
                parts.append(text)
                size += len(text)
                count += 1
                if size >= _FLUSH_BYTES:
                    yield "".join(parts)
                    parts, size = [], 0
        except Bitrix24Error as exc:
            log.warning("listing all %s for client %s stopped after %d rows: %r", ent.name, client_id, count, exc)
            error = exc
        tail = f'],"total":{count}'
        if error is not None:
            tail += f',"error":{_dumps(error.code)},"error_description":{_dumps(error.description)}'
        parts.append(tail + "}")
        yield "".join(parts)

    return Response(stream_with_context(generate()), mimetype="application/json")


def _batch_items(ent: Entity, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A loaded ``BatchWriteBody``: its size and each item's field names checked."""
    items = body["items"]
    limit = int(current_app.config["BITRIX_BATCH_MAX_ITEMS"])
    if len(items) > limit:
        raise ApiError(400, "TOO_MANY_ITEMS", f"at most {limit} items per request (BITRIX_BATCH_MAX_ITEMS)",
                       field="items")
    clean = []
    for index, item in enumerate(items):
        where = f"items[{index}]"
        record_id, params = item.get("id"), item.get("params") or {}
        check_field_names(ent, item["fields"], f"{where}.fields")
        check_field_names(ent, params, f"{where}.params")  # what cannot be sent: bulk_write says (UnsendableItem)
        clean.append({"id": record_id, "fields": item["fields"], "params": params})
    return clean


def _check_sendable(params: Any, where: str) -> None:
    try:
        check_sendable(params)
    except ENCODE_ERRORS as exc:
        raise ApiError(400, "INVALID_PARAMS", f"{where} cannot be sent to Bitrix24: {exc}", field=where)


def write_many(ent: Entity, client_id: int, body: dict[str, Any]) -> dict[str, Any]:
    items = _batch_items(ent, body)
    try:
        outcomes = bulk_write(ent.prefix, items, client_id=client_id)
    except UnsendableItem as exc:
        raise ApiError(400, "INVALID_PARAMS", str(exc), field=f"items[{exc.index}]")
    except ValueError as exc:
        raise ApiError(400, "INVALID_ITEMS", str(exc), field="items")
    return {
        "result": [o.as_dict() for o in outcomes],
        "created": sum(1 for o in outcomes if o.error is None and o.action == "created" and not o.existing),
        "existing": sum(1 for o in outcomes if o.existing),
        "updated": sum(1 for o in outcomes if o.error is None and o.action == "updated"),
        "failed": sum(1 for o in outcomes if o.error is not None),
    }


def _allowed_methods() -> set[str]:
    return {e.method(a).lower() for e in ENTITIES.values() for a in _CRUD_ACTIONS}


def _command(key: str, value: Any) -> tuple[str, Any]:
    where = f"cmd[{key}]"
    if isinstance(value, str):
        method, _, query = value.partition("?")
        try:
            params = parse_php_form(query)
        except ValueError as exc:
            raise ApiError(400, "INVALID_COMMAND", f"{where}: {exc}", field=where)
    elif isinstance(value, dict) and isinstance(value.get("method"), str) and set(value) <= {"method", "params"}:
        method, params = value["method"], value.get("params", {})
        if not isinstance(params, dict):
            raise ApiError(400, "INVALID_COMMAND", f"{where}.params must be an object", field=where)
    else:
        raise ApiError(400, "INVALID_COMMAND",
                       f'{where} must be "method?query" or {{"method": ..., "params": {{...}}}}', field=where)
    _check_sendable(params, where)
    if method.lower() not in _allowed_methods():
        allowed = "; ".join(f"{e.prefix}.{{{','.join(e.method(a).rsplit('.', 1)[1] for a in _CRUD_ACTIONS)}}}"
                            for e in ENTITIES.values())
        raise ApiError(400, "METHOD_NOT_ALLOWED_IN_BATCH", f"{where}: {method!r} is not allowed here; use {allowed}",
                       field=where)
    prefix = method.lower().rsplit(".", 1)[0]
    entity = next((e for e in ENTITIES.values() if e.prefix == prefix), None)
    if entity is not None:
        check_command_names(entity, params, where)
    return method, params


def raw_batch(client_id: int, body: dict[str, Any]) -> dict[str, Any]:
    cmd, halt = body["cmd"], body["halt"]
    if isinstance(cmd, list):
        cmd = {str(i): c for i, c in enumerate(cmd)}
    limit = int(current_app.config["BITRIX_BATCH_MAX_ITEMS"])
    if not isinstance(cmd, dict) or not cmd or len(cmd) > limit:
        raise ApiError(400, "INVALID_COMMAND", f"'cmd' must be a non-empty object or list of at most {limit} commands",
                       field="cmd")
    commands = {str(key): _command(str(key), value) for key, value in cmd.items()}
    _check_sendable({"cmd": {key: "" for key in commands}}, "cmd")  # keys PHP would misread
    try:
        outcome = bx_batch(commands, client_id=client_id, halt=halt)
    except ValueError as exc:
        raise ApiError(400, "INVALID_COMMAND", str(exc), field="cmd")
    answer: dict[str, dict[str, Any]] = {"result": {}, "result_error": {}, "result_total": {}, "result_next": {}}
    for key, item in outcome.items():
        if item.error is not None:
            answer["result_error"][key] = {"error": item.error.code, "error_description": item.error.description}
        else:
            answer["result"][key] = item.result
        if item.total is not None:
            answer["result_total"][key] = item.total
        if item.next is not None:
            answer["result_next"][key] = item.next
    return {"result": answer}
