"""Request schemas of the user-field and label endpoints (``userfields_controller``).

The keys inside ``fields`` are checked by ``services.userfields`` (what the portal allows), so a
refusal names the key and says what to send instead.
"""

from __future__ import annotations

from marshmallow import fields
from marshmallow.validate import Regexp

from .schemas import Error, ListQuery, StrictSchema, _not_empty

FLAG = {"truthy": {"1", "true"}, "falsy": {"0", "false"}}

USERFIELD_HELP = (
    'A user field by Bitrix24\'s keys: FIELD_NAME ("NPS" is stored as UF_CRM_NPS; A-Z, 0-9, _; at most 50 '
    "characters with the prefix), USER_TYPE_ID (string, integer, double, boolean, date, datetime, enumeration, "
    "money, url, address, file, employee, crm_status, crm, iblock_section, iblock_element, or an app's type), "
    "MULTIPLE, MANDATORY, SHOW_FILTER, SHOW_IN_LIST, EDIT_IN_LIST, IS_SEARCHABLE (true/false or Y/N), "
    "LABEL, EDIT_FORM_LABEL, LIST_COLUMN_LABEL, LIST_FILTER_LABEL, ERROR_MESSAGE, HELP_MESSAGE (a text or "
    '{"en": ..., "de": ...}), SORT, XML_ID, SETTINGS (per type, e.g. {"ENTITY_TYPE": "SOURCE"} for crm_status, '
    '{"DEAL": "Y", "CONTACT": "Y"} for crm), LIST (enumeration items [{"VALUE", "SORT", "DEF", "XML_ID"}]; on '
    'update with "ID" to change one, "DEL": "Y" to delete it).'
)


def _userfield_body(required_keys: list[str]) -> type[StrictSchema]:
    class Body(StrictSchema):
        fields = fields.Dict(
            keys=fields.String(), values=fields.Raw(allow_none=True), required=True, validate=_not_empty,
            metadata={"code": "INVALID_FIELDS", "description": USERFIELD_HELP, "minProperties": 1,
                      "required": required_keys,
                      "example": {"FIELD_NAME": "NPS", "USER_TYPE_ID": "integer", "EDIT_FORM_LABEL": "NPS score"}},
        )

    return Body


UserFieldBody = type("UserFieldBody", (_userfield_body(["FIELD_NAME", "USER_TYPE_ID"]),), {})
UserFieldChanges = type("UserFieldChanges", (_userfield_body([]),), {})


class UserFieldListQuery(StrictSchema):
    lang = fields.String(
        validate=Regexp(r"^[a-z]{2}$", error="lang is a two-letter language code like en"),
        metadata={"code": "INVALID_LANG", "description": "Labels as texts in this language (en, de, ...); without "
                                                         "it the list has no labels (get one field for all)."},
    )
    name = fields.String(
        validate=Regexp(r"^[A-Za-z0-9_]{1,50}$", error="name is a field code like NPS or UF_CRM_NPS"),
        metadata={"code": "INVALID_FIELD_NAME", "description": "Only the field with this code (NPS or UF_CRM_NPS)."},
    )


class FieldsQuery(StrictSchema):
    fresh = fields.Boolean(**FLAG, metadata={"code": "INVALID_FRESH",
                                             "description": "1: read the portal again instead of the cache."})


_LABELS = fields.Boolean(**FLAG, metadata={
    "code": "INVALID_LABELS",
    "description": 'With 1 each row gains "labels": {FIELD: label} for its status and enumeration fields '
                   '(a list of labels for a multiple field, null for a value the portal does not list).'})
LabelledListQuery = type("LabelledListQuery", (ListQuery,), {"labels": _LABELS})


class RecordQuery(StrictSchema):
    labels = _LABELS


class UserFieldExists(Error):
    """409 USERFIELD_EXISTS: the entity already has a field of this name."""

    id = fields.Raw(metadata={"type": "integer", "description": "The existing field's id."})
    field_name = fields.String(metadata={"description": "The existing field's name, UF_CRM_..."})
