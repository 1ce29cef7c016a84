"""HTTP <-> service for what hangs off a record: deal pipelines and stages, lead statuses and sources, product
rows, and the contacts of deals, leads and companies (the companies of contacts).

The Bitrix24 methods are called by the services (``pipelines``, ``productrows``, ``contact_links``), whose
docstrings cite the pages they follow. Answers: ``{"result": ...}`` as elsewhere; a PUT of product rows also
says how many rows it ``replaced`` (Bitrix24's ``set`` deletes every row it is not given).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for

from ..entities import ENTITIES
from ..runtime import runtime
from ..services import contact_links, pipelines, productrows
from .errors import ApiError
from .params import check_field_names, entity_or_404

ROW_ENTITIES = ("deals", "leads")


def stage_error(exc: pipelines.StageError) -> ApiError:
    return ApiError(400, exc.code, exc.description, field=exc.field, **exc.extra)


def move_hint(client_id: int, deal_id: int) -> str:
    """Where a deal is moved to another pipeline (said by the refusals of PATCH .../deals/<id>)."""
    path = url_for(runtime().endpoint("move_deal"), client_id=client_id, record_id=deal_id)
    return f'move it with PUT {path} {{"CATEGORY_ID": ..., "STAGE_ID": ...}}'


def checked_fields(entity_name: str, fields: dict[str, Any], client_id: int, record_id: int | None = None
                   ) -> dict[str, Any]:
    """A deal's ``CATEGORY_ID``/``STAGE_ID`` or a lead's ``STATUS_ID``, checked against the portal's pipelines
    before a create (``record_id`` None) or an update; other entities and other fields pass as they are."""
    try:
        if entity_name == "deals" and record_id is None:
            return pipelines.prepare_deal_create(fields, client_id=client_id)
        if entity_name == "deals":
            return pipelines.prepare_deal_update(record_id, fields, client_id=client_id,
                                                 move_hint=move_hint(client_id, record_id))
        if entity_name == "leads":
            return pipelines.prepare_lead(fields, client_id=client_id)
    except pipelines.StageError as exc:
        raise stage_error(exc) from None
    return fields


# ----------------------------------------------------------------------------------------------
# Pipelines, stages, statuses, sources


def deal_pipelines(client_id: int):
    """Every deal pipeline with its stages in order, each stage with its semantics (process, won, lost)."""
    return {"result": pipelines.deal_pipelines(client_id=client_id)}


def lead_statuses(client_id: int):
    """The lead statuses in order, each with its semantics (process, won = converted, lost = junk)."""
    rows = pipelines.status_rows(pipelines.LEAD_STATUS_ENTITY, client_id=client_id)
    return {"result": [pipelines.status_view(row) for row in rows]}


def lead_sources(client_id: int):
    """The sources (SOURCE_ID values) of leads, deals and contacts."""
    rows = pipelines.status_rows(pipelines.SOURCE_ENTITY, client_id=client_id)
    return {"result": [pipelines.status_view(row, with_semantics=False) for row in rows]}


def move_deal(body: dict[str, Any], client_id: int, record_id: int):
    """Put a deal in another pipeline (and stage) with crm.item.update; checked against the answer."""
    try:
        moved = pipelines.move_deal(record_id, body["CATEGORY_ID"], body.get("STAGE_ID"), client_id=client_id)
    except pipelines.StageError as exc:
        raise stage_error(exc) from None
    except pipelines.MoveIgnored as exc:
        raise ApiError(502, "MOVE_NOT_APPLIED", str(exc), method="crm.item.update") from None
    return {"result": moved}


# ----------------------------------------------------------------------------------------------
# Product rows


def _row_entity(entity: str) -> None:
    entity_or_404(entity)
    if entity not in ROW_ENTITIES:
        raise ApiError(404, "UNKNOWN_ENTITY", f"product rows belong to {', '.join(ROW_ENTITIES)} and smart-process "
                                              f"items, not {entity}")


def _check_rows(owner: productrows.Owner, rows: list[dict[str, Any]], where: str, need_id: bool = False,
                may_have_id: bool = False) -> None:
    """Each row's keys are input fields of a row (a typo would be dropped by the portal: a row without its name,
    or an update that changes nothing), and it sets at least one besides the row id."""
    accepted = owner.input_fields
    for i, row in enumerate(rows):
        check_field_names(owner.entity, row, f"{where}[{i}]")
        unknown = [key for key in row if key not in accepted]
        if unknown:
            raise ApiError(400, "INVALID_ROWS", f"{where}[{i}] has {', '.join(map(repr, unknown))}: not an input "
                                                f"field of a product row; the accepted fields are "
                                                f"{', '.join(accepted)} ({owner.input_docs})",
                           field=f"{where}[{i}].{unknown[0]}", accepted=list(accepted))
        if not any(key != owner.id_key for key in row):
            given = "changes nothing" if need_id else "is empty"
            raise ApiError(400, "INVALID_ROWS", f"{where}[{i}] {given}: give the row's fields (of "
                                                f"{', '.join(f for f in accepted if f != owner.id_key)})",
                           field=f"{where}[{i}]")
        if need_id:
            value = row.get(owner.id_key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ApiError(400, "INVALID_ROWS", f"{where}[{i}] needs its row id as {owner.id_key} (a positive "
                                                    "integer)", field=f"{where}[{i}].{owner.id_key}")
        elif owner.id_key in row and not may_have_id:
            raise ApiError(400, "INVALID_ROWS", f"{where}[{i}] has {owner.id_key}: rows to add have none (to change a "
                                                "row use PATCH with update)", field=f"{where}[{i}].{owner.id_key}")


def _get(owner: productrows.Owner, client_id: int):
    return {"result": productrows.get_rows(owner, client_id=client_id)}


def _put(owner: productrows.Owner, body: dict[str, Any], client_id: int):
    rows = body["rows"]
    _check_rows(owner, rows, "rows", may_have_id=True)
    result, replaced = productrows.replace(owner, rows, client_id=client_id)
    return {"result": result, "replaced": replaced}


def _patch(owner: productrows.Owner, body: dict[str, Any], client_id: int):
    _check_rows(owner, body["add"], "add")
    _check_rows(owner, body["update"], "update", need_id=True)
    updated = [row[owner.id_key] for row in body["update"]]
    twice = sorted({i for i in updated if updated.count(i) > 1})
    if twice:
        raise ApiError(400, "INVALID_ROWS", f"update names row {', '.join(map(str, twice))} more than once: give "
                                            "each row's changes in one entry", field="update")
    both = sorted(set(updated) & set(body["remove"]))
    if both:
        raise ApiError(400, "INVALID_ROWS", f"row {', '.join(map(str, both))} is both in update and in remove: "
                                            "keep it in one of them", field="remove")
    try:
        result, counts = productrows.merge(owner, add=body["add"], update=body["update"], remove=body["remove"],
                                           client_id=client_id)
    except productrows.RowNotFound as exc:
        raise ApiError(400, "ROW_NOT_FOUND", str(exc), field="update" if body["update"] else "remove") from None
    except productrows.RowsChanged as exc:
        raise ApiError(409, "ROWS_CHANGED", str(exc)) from None
    return {"result": result, **counts}


def get_rows(client_id: int, entity: str, record_id: int):
    """The product rows of a deal or lead (crm.*.productrows.get)."""
    _row_entity(entity)
    return _get(productrows.legacy_owner(entity, record_id), client_id)


def put_rows(body: dict[str, Any], client_id: int, entity: str, record_id: int):
    """Replace every product row of a deal or lead; the answer has the rows now and how many were replaced."""
    _row_entity(entity)
    return _put(productrows.legacy_owner(entity, record_id), body, client_id)


def patch_rows(body: dict[str, Any], client_id: int, entity: str, record_id: int):
    """Add, change and remove rows by id, keeping the others (read, merge, check, set)."""
    _row_entity(entity)
    return _patch(productrows.legacy_owner(entity, record_id), body, client_id)


def _item_owner(client_id: int, type_id: int, item_id: int) -> productrows.Owner:
    try:
        return productrows.item_owner(type_id, item_id)
    except productrows.NoProductRows as exc:
        deals = url_for(runtime().endpoint("get_rows"), client_id=client_id, entity="deals", record_id=item_id)
        raise ApiError(400, "NO_PRODUCT_ROWS", f"{exc} (a deal's or lead's rows are also at {deals} and "
                                               f"{deals.replace('/deals/', '/leads/', 1)})",
                       field="entity_type_id") from None


def get_item_rows(client_id: int, type_id: int, item_id: int):
    """The product rows of a CRM item (crm.item.productrow.list): a smart process's, or a lead's (type 1), deal's
    (2), quote's (7) or invoice's (31)."""
    return _get(_item_owner(client_id, type_id, item_id), client_id)


def put_item_rows(body: dict[str, Any], client_id: int, type_id: int, item_id: int):
    """Replace every product row of a CRM item (crm.item.productrow.set)."""
    return _put(_item_owner(client_id, type_id, item_id), body, client_id)


def patch_item_rows(body: dict[str, Any], client_id: int, type_id: int, item_id: int):
    """Add, change and remove rows of a CRM item by id, keeping the others."""
    return _patch(_item_owner(client_id, type_id, item_id), body, client_id)


def rows_of_many(body: dict[str, Any], client_id: int, entity: str):
    """The rows of many deals (or leads), 50 reads to a batch request: by id, with errors by id."""
    _row_entity(entity)
    ids = list(dict.fromkeys(body["ids"]))
    limit = int(current_app.config["BITRIX_BATCH_MAX_ITEMS"])
    if len(ids) > limit:
        raise ApiError(400, "TOO_MANY_ITEMS", f"at most {limit} ids per request (BITRIX_BATCH_MAX_ITEMS)",
                       field="ids")
    results, errors = productrows.rows_of_many(entity, ids, client_id=client_id)
    answer: dict[str, Any] = {"result": results}
    if errors:
        answer["errors"] = errors
    return answer


# ----------------------------------------------------------------------------------------------
# Contacts of deals, leads and companies; companies of contacts


def _kind(entity: str, plural: str) -> contact_links.LinkKind:
    entity_or_404(entity)
    kind = contact_links.KINDS.get(entity)
    if kind is None or kind.plural != plural:
        owners = ", ".join(e for e, k in contact_links.KINDS.items() if k.plural == plural)
        raise ApiError(404, "UNKNOWN_ENTITY", f"{plural} are linked to {owners}, not to {ENTITIES[entity].name}")
    return kind


def get_links(client_id: int, entity: str, record_id: int, plural: str):
    """The linked contacts (companies) in order, the primary one marked IS_PRIMARY "Y"."""
    return {"result": contact_links.get_links(_kind(entity, plural), record_id, client_id=client_id)}


def put_links(body: dict[str, Any], client_id: int, entity: str, record_id: int, plural: str):
    """Replace the linked contacts (companies) with the list given, in its order."""
    kind = _kind(entity, plural)
    items = body[plural]
    if kind.single_primary and sum(1 for item in items if item.get("IS_PRIMARY") == "Y") > 1:
        raise ApiError(400, "INVALID_LINKS", f'at most one of the {plural} can have "IS_PRIMARY": "Y" (the portal '
                                             "would silently keep the first)", field=plural)
    return {"result": contact_links.set_links(kind, record_id, items, client_id=client_id)}


def get_contacts(client_id: int, entity: str, record_id: int):
    return get_links(client_id, entity, record_id, "contacts")


def put_contacts(body: dict[str, Any], client_id: int, entity: str, record_id: int):
    return put_links(body, client_id, entity, record_id, "contacts")


def get_companies(client_id: int, entity: str, record_id: int):
    return get_links(client_id, entity, record_id, "companies")


def put_companies(body: dict[str, Any], client_id: int, entity: str, record_id: int):
    return put_links(body, client_id, entity, record_id, "companies")
