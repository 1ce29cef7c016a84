"""Smart-process items: ``crm.item.*`` with ``entityTypeId``, camelCase fields.

Same shapes as the other entities on our side (``{"result": ...}``, 201 + Location on create,
``total``/``next`` on lists, ``all=1`` streaming); Bitrix24's ``{"item": ...}`` / ``{"items": ...}``
wrappers are taken off here. Bitrix24's side:
https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html,
https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html and, for the type ids,
https://apidocs.bitrix24.com/api-reference/crm/data-types.html#object_type
"""

from __future__ import annotations

from typing import Any

from ..entities import smart_process
from ..services import records
from ..services.bitrix24_service import bx_call
from ..services.numbers import as_id
from . import bulk_controller
from .params import created_location, fields_and_params, list_params


def _item(envelope: dict[str, Any], ent) -> Any:
    return records.unwrap(ent, envelope.get("result"))  # {"item": {...}} -> {...}


def create_item(body: dict[str, Any], client_id: int, type_id: int):
    """Create a smart-process item (camelCase fields): 201, the new id, its Location."""
    ent = smart_process(type_id)
    fields, _ = fields_and_params(ent, body)
    item = _item(bx_call("crm.item.add", {"entityTypeId": ent.type_id, "fields": fields}, client_id=client_id), ent)
    new_id = as_id(item.get("id") if isinstance(item, dict) else item)
    return {"result": new_id}, 201, created_location("get_item", "item_id", new_id, client_id=client_id,
                                                     type_id=ent.type_id)


def get_item(client_id: int, type_id: int, item_id: int):
    """One smart-process item."""
    ent = smart_process(type_id)
    params = {"entityTypeId": ent.type_id, "id": item_id}
    return {"result": _item(bx_call("crm.item.get", params, client_id=client_id), ent)}


def update_item(body: dict[str, Any], client_id: int, type_id: int, item_id: int):
    """Change the given fields of a smart-process item."""
    ent = smart_process(type_id)
    fields, _ = fields_and_params(ent, body)
    params = {"entityTypeId": ent.type_id, "id": item_id, "fields": fields}
    return {"result": _item(bx_call("crm.item.update", params, client_id=client_id), ent)}


def delete_item(client_id: int, type_id: int, item_id: int):
    """Delete a smart-process item."""
    ent = smart_process(type_id)
    bx_call("crm.item.delete", {"entityTypeId": ent.type_id, "id": item_id}, client_id=client_id)
    # Bitrix24 answers []: https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-delete.html
    return {"result": True}


def list_items(query: dict[str, Any], client_id: int, type_id: int):
    """One page of smart-process items, or with all=1 every matching one, streamed."""
    ent = smart_process(type_id)
    params = {"entityTypeId": ent.type_id, **list_params(ent, query)}
    if query.get("all"):
        return bulk_controller.stream_all(ent, params, client_id)
    envelope = bx_call("crm.item.list", params, client_id=client_id)
    result = envelope.get("result")
    body: dict[str, Any] = {"result": result.get("items", []) if isinstance(result, dict) else []}
    for key in ("total", "next"):
        if key in envelope:
            body[key] = envelope[key]
    return body


def item_fields(client_id: int, type_id: int):
    """The smart process's field metadata (crm.item.fields)."""
    ent = smart_process(type_id)
    result = bx_call("crm.item.fields", {"entityTypeId": ent.type_id}, client_id=client_id)["result"]
    return {"result": result.get("fields", result) if isinstance(result, dict) else result}
