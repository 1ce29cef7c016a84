"""One record of any entity in the entity table, through its own method family, answered in one shape.

The families differ on the wire: legacy ``crm.contact.*`` take ``id`` and answer the record itself;
``tasks.task.*`` take ``taskId`` and wrap what they answer in ``{"task": ...}`` / ``{"tasks": [...]}``
(https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-add.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-get.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-list.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-delete.html). Each function here reads what
differs from the entity's row (``id_param``, ``wrapper``, ``list_wrapper``, ``row_id``) and hands back
the record, the rows or the new id without the wrapper, so callers see one shape for every entity.
"""

from __future__ import annotations

from typing import Any

from ..entities import Entity
from .bitrix24_service import bx_call
from .errors import NotFound
from .numbers import as_id


def unwrap(entity: Entity, result: Any) -> Any:
    """``{"task": {...}}`` -> ``{...}``; results of families without a wrapper pass as they came."""
    if entity.wrapper and isinstance(result, dict) and entity.wrapper in result:
        return result[entity.wrapper]
    return result


def rows(entity: Entity, result: Any) -> Any:
    """A list page's rows: ``{"tasks": [...]}`` -> ``[...]``; anything else as the portal said it
    (an odd answer is passed on, not reshaped into an empty page)."""
    if entity.list_wrapper and isinstance(result, dict) and entity.list_wrapper in result:
        return result[entity.list_wrapper]
    return result


def created_id(entity: Entity, result: Any) -> Any:
    """The new record's id from what ``<prefix>.add`` answered (an id, or the wrapped record)."""
    record = unwrap(entity, result)
    if isinstance(record, dict):
        return as_id(record.get(entity.row_id))
    # crm.*.add answers an int, tasks.task.add the task with "id" as a string: callers get an int.
    return as_id(record)


def add(entity: Entity, fields: dict[str, Any], params: dict[str, Any] | None = None, *,
        client_id: int | None) -> Any:
    """Create a record; its new id."""
    payload: dict[str, Any] = {"fields": fields, **({"params": params} if params else {})}
    return created_id(entity, bx_call(entity.method("add"), payload, client_id=client_id)["result"])


def get(entity: Entity, record_id: int, *, client_id: int | None) -> Any:
    """One record. ``tasks.task.get`` answers ``"result": []`` for a task that does not exist: NotFound."""
    method = entity.method("get")
    record = unwrap(entity, bx_call(method, {entity.id_param: record_id}, client_id=client_id)["result"])
    if entity.wrapper and not record:
        raise NotFound(f"{entity.label} {record_id} was not found", method=method)
    return record


def update(entity: Entity, record_id: int, fields: dict[str, Any], params: dict[str, Any] | None = None, *,
           client_id: int | None) -> Any:
    """Change the given fields: ``true`` (crm.*) or the changed record (tasks.task.*)."""
    payload: dict[str, Any] = {entity.id_param: record_id, "fields": fields}
    if params:
        payload["params"] = params
    return unwrap(entity, bx_call(entity.method("update"), payload, client_id=client_id)["result"])


def delete(entity: Entity, record_id: int, *, client_id: int | None) -> Any:
    """Delete a record: ``true``."""
    return unwrap(entity, bx_call(entity.method("delete"), {entity.id_param: record_id}, client_id=client_id)["result"])


def act(entity: Entity, record_id: int, action: str, *, client_id: int | None) -> Any:
    """Run a method that takes only the id (``tasks.task.complete``): the record as it is after."""
    return unwrap(entity, bx_call(entity.method(action), {entity.id_param: record_id}, client_id=client_id)["result"])


def page(entity: Entity, params: dict[str, Any], *, client_id: int | None) -> dict[str, Any]:
    """One list page: ``{"result": rows}`` plus ``total`` / ``next`` when the portal gave them."""
    envelope = bx_call(entity.method("list"), params, client_id=client_id)
    body: dict[str, Any] = {"result": rows(entity, envelope.get("result", []))}
    for key in ("total", "next"):
        if key in envelope:
            body[key] = envelope[key]
    return body


def fields(entity: Entity, *, client_id: int | None) -> Any:
    """The entity's field descriptions (``tasks.task.getFields`` wraps them in ``{"fields": ...}``)."""
    result = bx_call(entity.method("fields"), client_id=client_id)["result"]
    if entity.wrapper and isinstance(result, dict) and isinstance(result.get("fields"), dict):
        return result["fields"]
    return result
