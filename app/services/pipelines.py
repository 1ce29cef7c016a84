"""Deal pipelines and their stages, lead statuses and sources; checking a deal's or lead's stage before it
is written; moving a deal to another pipeline.

Bitrix24's side:

- pipelines: ``crm.category.list`` with ``entityTypeId`` 2
  (https://apidocs.bitrix24.com/api-reference/crm/universal/category/crm-category-list.html); the default
  pipeline is id 0;
- stages: ``crm.status.list`` filtered by ``ENTITY_ID`` ``DEAL_STAGE`` (default pipeline), ``DEAL_STAGE_{id}``
  (the others), ``STATUS`` (lead statuses), ``SOURCE`` (sources); rows carry ``SEMANTICS`` null (in progress),
  ``S`` (success) or ``F`` (failure) (https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-list.html);
  the list is not paged;
- a stage of pipeline ``n`` other than 0 is ``C{n}:{CODE}``: ``crm.status.add`` of ``DECISION`` in
  ``DEAL_STAGE_1`` stores ``C1:DECISION`` (https://apidocs.bitrix24.com/api-reference/crm/status/crm-status-add.html);
- ``crm.deal.add`` with an unknown pipeline or stage, and ``crm.deal.update`` with a stage outside the deal's
  pipeline, do not fail: the portal puts the deal in the default pipeline / first stage, or keeps the old
  stage. So the stage is checked here first, and a clear 400 says which stages are valid;
- the pipeline of an existing deal is changed with ``crm.item.update`` (``entityTypeId`` 2, ``categoryId``),
  as the ``STAGE_ID`` entry of https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html says
  (fields: https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-update.html).

Choices: a stage code without a prefix names a stage of the pipeline it is written to (``NEW`` with
``CATEGORY_ID`` 3 is ``C3:NEW``), as ``crm.status.add`` reads codes; a prefixed stage with no ``CATEGORY_ID``
on create puts the deal in the stage's pipeline; a pipeline with no stages is not one a deal can be in.
"""

from __future__ import annotations

import re
from typing import Any

from .bitrix24_service import ServerError, bx_batch, bx_call
from .numbers import is_digits

DEAL_TYPE_ID = 2
LEAD_STATUS_ENTITY = "STATUS"
SOURCE_ENTITY = "SOURCE"
_PREFIX = re.compile(r"^C(\d{1,10}):")
SEMANTICS = {"S": "won", "F": "lost"}  # anything else (null, "P") is in progress


class StageError(ValueError):
    """A stage or pipeline we refuse before writing: ``code``, a message saying what to fix, ``field``."""

    def __init__(self, code: str, description: str, field: str, **extra: Any) -> None:
        super().__init__(description)
        self.code, self.description, self.field, self.extra = code, description, field, extra


def stage_entity(category_id: int) -> str:
    return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"


def stage_prefix(category_id: int) -> str:
    return "" if category_id == 0 else f"C{category_id}:"


def _sort_key(row: dict[str, Any]) -> tuple[int, int]:
    def number(value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    return number(row.get("SORT")), number(row.get("ID"))


def status_view(row: dict[str, Any], with_semantics: bool = True) -> dict[str, Any]:
    """One ``crm.status.list`` row as we answer it: id, name, sort (an int), color, semantics."""
    view: dict[str, Any] = {"id": row.get("STATUS_ID"), "name": row.get("NAME"), "sort": _sort_key(row)[0]}
    if with_semantics:
        view["color"] = row.get("COLOR")
        semantics = row.get("SEMANTICS")
        view["semantics"] = SEMANTICS.get(semantics, "process") if isinstance(semantics, str) else "process"
    return view


def _status_params(entity_id: str) -> dict[str, Any]:
    return {"filter": {"ENTITY_ID": entity_id}, "order": {"SORT": "ASC"}}


def _rows(result: Any) -> list[dict[str, Any]]:
    rows = result if isinstance(result, list) else list(result.values()) if isinstance(result, dict) else []
    return sorted((r for r in rows if isinstance(r, dict)), key=_sort_key)


def status_rows(entity_id: str, *, client_id: int) -> list[dict[str, Any]]:
    """The rows of one ``crm.status.list`` dictionary, in kanban (SORT) order."""
    return _rows(bx_call("crm.status.list", _status_params(entity_id), client_id=client_id).get("result"))


def _portal_category(value: Any, method: str) -> int:
    """A pipeline id as the portal answered it (``0``, ``"3"``; null for the default pipeline); anything else
    (``"abc"``, ``"1.0"``, ``1.5``, ``true``, a list) is an answer we cannot act on: 502 PORTAL_ERROR."""
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if is_digits(value):
        return int(value)
    raise ServerError(f"{method} answered the pipeline id {value!r}, not a whole number of 0 or more", method=method)


def deal_pipelines(*, client_id: int) -> list[dict[str, Any]]:
    """Every deal pipeline with its stages in order: one ``crm.category.list``, then the stages of all
    pipelines in ``batch`` requests (one for up to 50 pipelines)."""
    result = bx_call("crm.category.list", {"entityTypeId": DEAL_TYPE_ID}, client_id=client_id).get("result")
    listed = result.get("categories", []) if isinstance(result, dict) else []
    categories = [(_portal_category(c.get("id"), "crm.category.list"), c) for c in listed if isinstance(c, dict)]
    commands = {str(category_id): ("crm.status.list", _status_params(stage_entity(category_id)))
                for category_id, _ in categories}
    answers = bx_batch(commands, client_id=client_id) if commands else {}
    pipelines = []
    for category_id, category in categories:
        item = answers[str(category_id)]
        if item.error is not None:
            raise item.error
        pipelines.append({
            "id": category_id,
            "name": category.get("name"),
            "sort": category.get("sort"),
            "is_default": category.get("isDefault") == "Y",
            "entity_id": stage_entity(category_id),
            "stage_prefix": stage_prefix(category_id),
            "stages": [status_view(row) for row in _rows(item.result)],
        })
    return pipelines


# ----------------------------------------------------------------------------------------------
# Checking a stage before a deal or lead is written


def _category_value(value: Any, field: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or is_digits(value)):
        raise StageError("INVALID_CATEGORY", f"{field} must be a pipeline id (0 is the default pipeline), "
                                             f"got {value!r}", field)
    return int(value)


def _stage_value(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StageError("INVALID_STAGE", f"{field} must be a stage id such as NEW or C3:NEW, got {value!r}", field)
    return value.strip()


def _prefix_category(stage: str) -> int | None:
    match = _PREFIX.match(stage)
    return int(match.group(1)) if match else None


def _in_pipeline(stage: str, category_id: int, field: str, move_hint: str | None) -> str:
    """``stage`` as a stage id of pipeline ``category_id``: a bare code gets the pipeline's prefix; a stage
    of another pipeline is refused."""
    named = _prefix_category(stage)
    if named is None:
        return stage_prefix(category_id) + stage
    if named != category_id:
        hint = f"; {move_hint}" if move_hint else ""
        raise StageError("STAGE_IN_OTHER_PIPELINE", f"{field} {stage!r} is a stage of pipeline {named}, not of "
                                                    f"pipeline {category_id}{hint}", field)
    return stage


def _check_stage(stage: str, rows: list[dict[str, Any]], field: str, where: str) -> None:
    valid = [r.get("STATUS_ID") for r in rows]
    if stage not in valid:
        raise StageError("INVALID_STAGE", f"{field} {stage!r} is not a stage of {where}: use one of "
                                          f"{', '.join(map(str, valid))}", field, valid_stages=valid)


def _pipeline_rows(category_id: int, field: str, *, client_id: int) -> list[dict[str, Any]]:
    rows = status_rows(stage_entity(category_id), client_id=client_id)
    if not rows:
        raise StageError("INVALID_CATEGORY", f"deal pipeline {category_id} does not exist (GET "
                                             ".../deals/pipelines lists them)", field)
    return rows


def prepare_deal_create(fields: dict[str, Any], *, client_id: int) -> dict[str, Any]:
    """The fields of a new deal with ``CATEGORY_ID``/``STAGE_ID`` checked against the pipeline's stages
    (one ``crm.status.list``) and the stage written in full (``C3:NEW``). Without either field: as given."""
    if "STAGE_ID" not in fields and "CATEGORY_ID" not in fields:
        return fields
    out = dict(fields)
    stage = _stage_value(fields["STAGE_ID"], "fields.STAGE_ID") if "STAGE_ID" in fields else None
    if "CATEGORY_ID" in fields:
        category = _category_value(fields["CATEGORY_ID"], "fields.CATEGORY_ID")
    else:
        category = (_prefix_category(stage) if stage else None) or 0
    rows = _pipeline_rows(category, "fields.CATEGORY_ID", client_id=client_id)
    if category or "CATEGORY_ID" in fields:
        out["CATEGORY_ID"] = category
    if stage is not None:
        stage = _in_pipeline(stage, category, "fields.STAGE_ID", None)
        _check_stage(stage, rows, "fields.STAGE_ID", f"pipeline {category}")
        out["STAGE_ID"] = stage
    return out


def prepare_deal_update(deal_id: int, fields: dict[str, Any], *, client_id: int,
                        move_hint: str) -> dict[str, Any]:
    """The changes of a deal with ``STAGE_ID`` checked against the deal's own pipeline (``crm.deal.get``,
    then its stages). ``crm.deal.update`` cannot change the pipeline, so a ``CATEGORY_ID`` other than the
    deal's, or a stage of another pipeline, is refused with ``move_hint`` (where to move it instead)."""
    if "STAGE_ID" not in fields and "CATEGORY_ID" not in fields:
        return fields
    out = dict(fields)
    wanted = _category_value(fields["CATEGORY_ID"], "fields.CATEGORY_ID") if "CATEGORY_ID" in fields else None
    stage = _stage_value(fields["STAGE_ID"], "fields.STAGE_ID") if "STAGE_ID" in fields else None
    deal = bx_call("crm.deal.get", {"id": deal_id}, client_id=client_id).get("result")
    current = _portal_category(deal.get("CATEGORY_ID"), "crm.deal.get") if isinstance(deal, dict) else 0
    if wanted is not None and wanted != current:
        raise StageError("PIPELINE_CHANGE_REFUSED", f"deal {deal_id} is in pipeline {current}: crm.deal.update "
                                                    f"cannot move it to pipeline {wanted} (the portal would ignore "
                                                    f"it); {move_hint}", "fields.CATEGORY_ID")
    out.pop("CATEGORY_ID", None)  # the deal's own: nothing to change
    if stage is not None:
        stage = _in_pipeline(stage, current, "fields.STAGE_ID", move_hint)
        rows = status_rows(stage_entity(current), client_id=client_id)
        _check_stage(stage, rows, "fields.STAGE_ID", f"deal {deal_id}'s pipeline {current}")
        out["STAGE_ID"] = stage
    return out


def prepare_lead(fields: dict[str, Any], *, client_id: int) -> dict[str, Any]:
    """A lead's ``STATUS_ID`` checked against the lead statuses (the portal would put an unknown one on a new
    lead's first status, or ignore it on update)."""
    if "STATUS_ID" not in fields:
        return fields
    status = _stage_value(fields["STATUS_ID"], "fields.STATUS_ID")
    _check_stage(status, status_rows(LEAD_STATUS_ENTITY, client_id=client_id), "fields.STATUS_ID", "the lead statuses")
    return {**fields, "STATUS_ID": status}


# ----------------------------------------------------------------------------------------------
# Moving a deal to another pipeline


class MoveIgnored(Exception):
    """The portal answered the move without making it."""


def move_deal(deal_id: int, category: Any, stage: Any, *, client_id: int) -> dict[str, Any]:
    """Put deal ``deal_id`` in pipeline ``category`` at ``stage`` (default: the pipeline's first stage) with
    ``crm.item.update``; the answer's ``categoryId``/``stageId`` are checked, so a move the portal did not
    make is never reported as done (``MoveIgnored``)."""
    category_id = _category_value(category, "CATEGORY_ID")
    rows = _pipeline_rows(category_id, "CATEGORY_ID", client_id=client_id)
    if stage is None:
        stage_id = str(rows[0].get("STATUS_ID"))
    else:
        stage_id = _in_pipeline(_stage_value(stage, "STAGE_ID"), category_id, "STAGE_ID", None)
        _check_stage(stage_id, rows, "STAGE_ID", f"pipeline {category_id}")
    params = {"entityTypeId": DEAL_TYPE_ID, "id": deal_id, "fields": {"categoryId": category_id, "stageId": stage_id}}
    result = bx_call("crm.item.update", params, client_id=client_id).get("result")
    item = result.get("item", result) if isinstance(result, dict) else {}
    item = item if isinstance(item, dict) else {}
    got_category, got_stage = item.get("categoryId"), item.get("stageId")
    if str(got_category) != str(category_id) or got_stage != stage_id:
        raise MoveIgnored(f"the portal answered crm.item.update for deal {deal_id} with pipeline {got_category!r} "
                          f"and stage {got_stage!r}, not pipeline {category_id} and stage {stage_id!r}")
    return {"ID": deal_id, "CATEGORY_ID": category_id, "STAGE_ID": stage_id}
