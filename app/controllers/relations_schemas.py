"""Schemas of the pipelines, product-row and contact-link endpoints (see ``relations_controller``).

Each field's ``code`` metadata is the error code a refusal of that field gets, as in ``schemas``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range

from .params import MAX_ID
from .schemas import StrictSchema

ROW_HELP = ("A product row by its field names: UPPER_CASE for deals and leads (PRODUCT_NAME, PRICE, QUANTITY, "
            "PRODUCT_ID, DISCOUNT_TYPE_ID, DISCOUNT_RATE, TAX_RATE, TAX_INCLUDED, MEASURE_CODE, SORT), camelCase "
            "for smart-process items (productName, price, quantity, ...).")


def _rows(description: str, **kwargs: Any) -> fields.List:
    return fields.List(fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True)),
                       metadata={"code": "INVALID_ROWS", "description": description}, **kwargs)


class RowsBody(StrictSchema):
    """PUT: the complete list of rows. Every row not in it is deleted (Bitrix24's ``set`` replaces)."""

    rows = _rows(ROW_HELP + " Required: to delete every row send an explicit empty list, {\"rows\": []}.",
                 required=True, allow_none=False)


class RowsPatch(StrictSchema):
    """PATCH: change some rows, keep the others."""

    add = _rows("Rows to add.", load_default=list)
    update = _rows("Rows to change, each with its id (ID for deals and leads, id for items) and the fields to "
                   "change.", load_default=list)
    remove = fields.List(fields.Integer(strict=True, validate=Range(min=1, max=MAX_ID)), load_default=list,
                         metadata={"code": "INVALID_ROWS", "description": "Ids of the rows to delete."})

    @validates_schema
    def something(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.get("add") or data.get("update") or data.get("remove")):
            raise ValidationError("give at least one of add, update, remove (PUT replaces every row)", "add")


class ManyRowsBody(StrictSchema):
    ids = fields.List(
        fields.Integer(strict=True, validate=Range(min=1, max=MAX_ID)), required=True,
        validate=Length(min=1, error="'ids' is empty"),
        metadata={"code": "INVALID_IDS", "description": "Record ids (at most BITRIX_BATCH_MAX_ITEMS); their rows "
                                                        "are read 50 to a batch request."},
    )


def _link(key: str) -> type[StrictSchema]:
    return type(f"{key.title().replace('_', '')}Link", (StrictSchema,), {
        key: fields.Integer(required=True, validate=Range(min=1, max=MAX_ID), metadata={"code": "INVALID_LINKS"}),
        "IS_PRIMARY": fields.String(validate=OneOf(["Y", "N"]), metadata={
            "code": "INVALID_LINKS",
            "description": "Y: the primary one (one at most, but for a company's contacts); none: the first"}),
        "SORT": fields.Integer(strict=True, validate=Range(min=0, max=MAX_ID), metadata={
            "code": "INVALID_LINKS", "description": "Default: the list's order, 10, 20, 30..."}),
    })


def _links_body(plural: str, key: str) -> type[StrictSchema]:
    link = _link(key)
    attrs = {plural: fields.List(fields.Nested(link), required=True, metadata={
        "code": "INVALID_LINKS",
        "description": f"Every linked record, in order ({key}, IS_PRIMARY, SORT); the ones not listed are "
                       f"unlinked. An empty list unlinks them all."})}

    def no_repeats(self, data: dict[str, Any], **_: Any) -> None:
        items = data.get(plural) or []
        ids = [item[key] for item in items]
        if len(set(ids)) != len(ids):
            raise ValidationError(f"a {key} is listed twice", plural)

    attrs["no_repeats"] = validates_schema(no_repeats)
    return type(f"{plural.title()}Body", (StrictSchema,), attrs)


ContactLinksBody = _links_body("contacts", "CONTACT_ID")
CompanyLinksBody = _links_body("companies", "COMPANY_ID")


class MoveBody(StrictSchema):
    CATEGORY_ID = fields.Integer(required=True, strict=True, validate=Range(min=0, max=MAX_ID), metadata={
        "code": "INVALID_CATEGORY", "description": "The pipeline to move the deal to (0 is the default one)."})
    STAGE_ID = fields.String(validate=Length(min=1, max=100), metadata={
        "code": "INVALID_STAGE", "description": "Its stage (NEW or C3:NEW); default: the pipeline's first stage."})


# ----------------------------------------------------------------------------------------------
# Answers


class RowsAnswer(StrictSchema):
    result = fields.Raw(required=True, metadata={"type": "array", "items": {}, "description": "The rows now."})
    replaced = fields.Integer(metadata={"description": "PUT: how many rows the record had before; all of them "
                                                       "were replaced (rows not sent are deleted)."})
    added = fields.Integer()
    updated = fields.Integer()
    removed = fields.Integer()


class ManyRowsAnswer(StrictSchema):
    result = fields.Dict(required=True, metadata={"description": "Rows by record id."})
    errors = fields.Dict(metadata={"description": "By record id: {error, error_description} (e.g. not found)."})


class MoveAnswer(StrictSchema):
    result = fields.Dict(required=True)
