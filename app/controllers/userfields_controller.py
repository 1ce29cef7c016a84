"""User fields of contacts, deals, leads and companies, and labels on fields and records.

``/clients/<id>/<entity>/userfields[/<uf_id>]`` over ``crm.{entity}.userfield.*``, and
``/clients/<id>/userfield-types`` over ``crm.userfield.types``; the checks and the portal's side are
in ``services.userfields`` (which cites the docs pages). ``GET .../<entity>/fields`` and
``labels=1`` on list and get use ``services.field_labels``.
"""

from __future__ import annotations

from typing import Any

from ..services import field_labels
from ..services import userfields as service
from ..services.numbers import as_id
from . import bitrix24_controller as records_view
from . import bulk_controller
from .errors import ApiError
from .params import created_location, entity_or_404, list_params


def _entity(name: str):
    ent = service.userfield_entity(name)
    if ent is None:
        entity_or_404(name)  # 404 UNKNOWN_ENTITY for a name we do not know at all
        raise ApiError(404, "UNKNOWN_ENTITY", f"{name} have no user fields here: use one of "
                                              f"{', '.join(service.USERFIELD_ENTITIES)}")
    return ent


def _invalid(exc: service.UserFieldInvalid) -> ApiError:
    return ApiError(400, exc.code, exc.description, field=exc.field)


def _not_found(exc: service.UserFieldNotFound) -> ApiError:
    return ApiError(404, "USERFIELD_NOT_FOUND", str(exc), field="uf_id")


def list_userfields(query: dict[str, Any], client_id: int, entity: str):
    """Every user field of the entity (not paged: Bitrix24 answers them all), ``total`` their count."""
    ent = _entity(entity)
    name = query.get("name")
    return service.list_fields(ent, client_id, lang=query.get("lang"),
                               name=service.normalize_name(name) if name else None)


def create_userfield(body: dict[str, Any], client_id: int, entity: str):
    """Create a user field: 201, its id as result, its Location; 409 USERFIELD_EXISTS if the name is taken."""
    ent = _entity(entity)
    try:
        new_id = service.create_field(ent, body["fields"], client_id)
    except service.UserFieldInvalid as exc:
        raise _invalid(exc) from None
    except service.UserFieldExists as exc:
        raise ApiError(409, "USERFIELD_EXISTS",
                       f"{ent.name} already have the user field {exc.name} (id {exc.id}); nothing was created: "
                       "change it with PATCH, or delete it first", field="fields.FIELD_NAME", id=exc.id,
                       field_name=exc.name) from None
    return {"result": new_id}, 201, created_location("get_userfield", "uf_id", as_id(new_id), client_id=client_id,
                                                     entity=ent.name)


def get_userfield(client_id: int, entity: str, uf_id: int):
    """One user field, labels as ``{language: text}`` maps, an enumeration's ``LIST`` items."""
    ent = _entity(entity)
    try:
        return {"result": service.get_field(ent, uf_id, client_id)}
    except service.UserFieldNotFound as exc:
        raise _not_found(exc) from None


def update_userfield(body: dict[str, Any], client_id: int, entity: str, uf_id: int):
    """Change labels, flags, SORT, SETTINGS or LIST items (not the name, type or MULTIPLE)."""
    ent = _entity(entity)
    try:
        return {"result": service.update_field(ent, uf_id, body["fields"], client_id)}
    except service.UserFieldInvalid as exc:
        raise _invalid(exc) from None
    except service.UserFieldNotFound as exc:
        raise _not_found(exc) from None


def delete_userfield(client_id: int, entity: str, uf_id: int):
    """Delete a user field (and every record's value of it)."""
    ent = _entity(entity)
    try:
        return {"result": service.delete_field(ent, uf_id, client_id)}
    except service.UserFieldNotFound as exc:
        raise _not_found(exc) from None


def userfield_types(client_id: int):
    """The portal's user-field types: ``[{"ID": "string", "title": "String"}, ...]``."""
    return {"result": service.field_types(client_id)}


# ----------------------------------------------------------------------------------------------
# Labels


def entity_fields(query: dict[str, Any], client_id: int, entity: str):
    """The entity's fields (crm.*.fields), each with its human ``label`` and, for status and
    enumeration fields, its ``values`` with labels; ``fresh=1`` reads the portal again."""
    ent = entity_or_404(entity)
    return {"result": field_labels.catalog(ent, client_id, fresh=bool(query.get("fresh"))).described()}


def get_record(query: dict[str, Any], client_id: int, entity: str, record_id: int):
    """One record, as Bitrix24 has it; with ``labels=1`` plus ``labels: {FIELD: label}``."""
    body = records_view.get_record(client_id, entity, record_id)
    if query.get("labels"):
        body["result"] = field_labels.catalog(entity_or_404(entity), client_id).label_row(body["result"])
    return body


def list_records(query: dict[str, Any], client_id: int, entity: str):
    """One page of records, or with all=1 every row, streamed; with ``labels=1`` each row gains
    ``labels: {FIELD: label}`` (the labels are read before the first row)."""
    query = dict(query)
    if not query.pop("labels", False):
        return records_view.list_records(query, client_id, entity)
    ent = entity_or_404(entity)
    if query.get("all"):
        params = list_params(ent, query)
        catalog = field_labels.catalog(ent, client_id)
        return bulk_controller.stream_all(ent, params, client_id, transform=catalog.label_row)
    body = records_view.list_records(query, client_id, entity)
    catalog = field_labels.catalog(ent, client_id)
    if isinstance(body.get("result"), list):  # an odd answer is passed on as it came
        body["result"] = [catalog.label_row(row) for row in body["result"]]
    return body
