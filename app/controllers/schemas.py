"""The API's models: marshmallow schemas that check what callers send and shape what we answer.

The OpenAPI document at ``/api/bitrix/openapi.json`` is generated from these (flask-smorest and
apispec), so the spec and the checks cannot drift apart. Each field's ``code`` metadata is the
error code a refusal of that field gets (``{"error": code, "error_description": ..., "field": ...}``);
checks that depend on the entity (field-name spelling, which methods a batch may run) are made by
the controllers after these.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load
from marshmallow.validate import Length, OneOf, Range, Regexp

from ..entities import ENTITIES, ITEM_FIELD_NAME, LEGACY_FIELD_NAME
from ..models.status import STATUSES
from ..services.rate_rules import PLANS
from .params import FILTER_OPERATORS, MAX_ID

# What the controllers accept as field names (entities.py), stated in the document as propertyNames.
UPPER_NAMES = {"pattern": LEGACY_FIELD_NAME.pattern}
CAMEL_NAMES = {"pattern": ITEM_FIELD_NAME.pattern}


def _filter_keys(names: dict[str, str]) -> dict[str, str]:
    return {"pattern": f"^({FILTER_OPERATORS})?{names['pattern'].lstrip('^')}"}


def _select_items(names: dict[str, str]) -> dict[str, str]:
    return {"pattern": rf"^(\*|UF_\*|{names['pattern'].strip('^$')})$"}


def _order_by_items(names: dict[str, str]) -> dict[str, str]:
    return {"pattern": f"^[-+]?{names['pattern'].lstrip('^')}"}

FIELDS_HELP = (
    "Bitrix24 fields by their names: UPPER_CASE (NAME, STAGE_ID, UF_CRM_*) for contacts, deals, leads, "
    "companies, activities and tasks (TITLE, RESPONSIBLE_ID, DEADLINE); camelCase (title, stageId, ufCrm*) for "
    "smart-process items. Multi-fields "
    '(PHONE, EMAIL, ...) are lists of {"VALUE": ..., "VALUE_TYPE": ...}. null clears a field.'
)


def _not_empty(value: dict) -> None:
    if not value:
        raise ValidationError("'fields' is empty: give at least one field")


def _field_map(code: str, description: str, names: dict[str, str] = UPPER_NAMES, non_empty: bool = False,
               **kwargs: Any) -> fields.Dict:
    metadata: dict[str, Any] = {"code": code, "description": description, "property_names": names}
    if non_empty:
        metadata["minProperties"] = 1
        kwargs["validate"] = _not_empty
    return fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), metadata=metadata, **kwargs)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# ----------------------------------------------------------------------------------------------
# Requests


class RecordBody(StrictSchema):
    """``{"fields": {...}, "params": {...}}``; a bare object of fields is read as ``fields``."""

    fields = _field_map("INVALID_FIELDS", FIELDS_HELP, required=True, non_empty=True)
    params = _field_map("INVALID_PARAMS", 'Options of the Bitrix24 method, e.g. {"REGISTER_SONET_EVENT": "N"}.')

    @pre_load
    def bare_fields(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and "fields" not in data and "params" not in data:
            return {"fields": data}
        return data


class ItemBody(StrictSchema):
    """A smart-process item: ``{"fields": {...}}`` with camelCase names, or the bare fields."""

    fields = _field_map("INVALID_FIELDS", FIELDS_HELP, CAMEL_NAMES, required=True, non_empty=True)

    @pre_load
    def bare_fields(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and "fields" not in data:
            return {"fields": data}
        return data


class ConfigBody(StrictSchema):
    """A client's Bitrix24 connection. Partial updates merge with what is saved."""

    webhook_base = fields.String(
        metadata={"code": "INVALID_CONFIG", "example": "https://example.bitrix24.com/rest/1/abc123secret/",
                  "description": "Inbound webhook URL: https://HOST/rest/<user_id>/<secret>/, HOST allowed by "
                                 "BITRIX_ALLOWED_HOSTS. Required when nothing is saved yet."},
    )
    outbound_token = fields.String(
        allow_none=True,
        metadata={"code": "INVALID_CONFIG",
                  "description": "The application_token Bitrix24 sends with this portal's events (null clears it)."},
    )
    member_id = fields.String(
        validate=Regexp(r"^[A-Za-z0-9_.-]{1,64}$", error="member_id must be a portal's member_id"),
        metadata={"code": "INVALID_CONFIG", "example": "a223c6b3710f85df22e9377d6c4f7553",
                  "description": "App mode: link the app installation on the portal with this member_id to the "
                                 "client (sent alone; GET /app/installations lists them)."},
    )
    plan = fields.String(validate=OneOf(list(PLANS)),
                         metadata={"code": "INVALID_CONFIG", "description": "Rate-limit preset of the portal's plan."})
    rate_limit = fields.Dict(
        keys=fields.String(), values=fields.Float(),
        metadata={"code": "INVALID_CONFIG", "example": {"burst": 50, "drain": 2},
                  "description": "Bitrix24's leaky bucket for this portal: burst size and drain per second."},
    )
    verify = fields.Boolean(
        truthy={True}, falsy={False},  # JSON true or false, not "yes" or "0"
        metadata={"code": "INVALID_CONFIG",
                  "description": "Default true (BITRIX_VERIFY_CONFIG): a new webhook_base is tried with one "
                                 "`profile` call first and not saved if the portal refuses it. false: save "
                                 "unchecked (setting up while the portal is unreachable)."},
    )


class BatchItem(StrictSchema):
    id = fields.Integer(
        strict=True, validate=Range(min=1, max=MAX_ID),
        metadata={"code": "INVALID_ID", "description": "Update this record; without id a record is created."},
    )
    fields = _field_map("INVALID_ITEMS", FIELDS_HELP, required=True, non_empty=True)
    params = _field_map("INVALID_PARAMS", "Options of the Bitrix24 method.")


class BatchWriteBody(StrictSchema):
    items = fields.List(
        fields.Nested(BatchItem), required=True, validate=Length(min=1, error="'items' is empty"),
        metadata={"code": "INVALID_ITEMS",
                  "description": "Records to create (no id) or update (with id); at most BITRIX_BATCH_MAX_ITEMS."},
    )


# Each entity's own method names (tasks.task.getFields for "fields"), from the entity table.
_BATCH_METHOD = "({})".format("|".join(re.escape(e.method(a)) for e in ENTITIES.values()
                                       for a in ("add", "get", "update", "delete", "list", "fields")))
_COMMAND = {"oneOf": [
    {"type": "string", "pattern": rf"^{_BATCH_METHOD}(\?.*)?$"},
    {"type": "object", "required": ["method"], "additionalProperties": False,
     "properties": {"method": {"type": "string", "pattern": rf"^{_BATCH_METHOD}$"}, "params": {"type": "object"}}},
]}


class RawBatchBody(StrictSchema):
    cmd = fields.Raw(
        required=True,
        metadata={"code": "INVALID_COMMAND",
                  "oneOf": [{"type": "object", "minProperties": 1, "additionalProperties": _COMMAND},
                            {"type": "array", "minItems": 1, "items": _COMMAND}],
                  "description": 'Commands by key (or a list): "crm.deal.get?id=1" or '
                                 '{"method": ..., "params": {...}}; results of earlier commands can be '
                                 "referenced as $result[key].",
                  "example": {"deal": "crm.deal.get?id=1", "contacts": {"method": "crm.contact.list",
                                                                         "params": {"filter": {"ID": 1}}}}},
    )
    halt = fields.Boolean(
        truthy={True}, falsy={False}, load_default=False,
        metadata={"code": "INVALID_BODY", "description": "Stop at the first failing command."},
    )


def _list_query(names: dict[str, str]) -> type[StrictSchema]:
    class ListQuery(StrictSchema):
        """What a list request's query string may hold (grouped from ``filter[...]`` / ``order[...]``)."""

        BRACKET_KEYS = True  # read by the parser: group filter[...] / order[...] before loading

        filter = fields.Dict(
            keys=fields.String(), values=fields.Raw(),
            metadata={"code": "INVALID_FILTER", "property_names": _filter_keys(names),
                      "description": "filter[FIELD]=value, with an operator in front of the field when needed "
                                     "(filter[>OPPORTUNITY]=1000, filter[%TITLE]=acme, filter[@ID][]=1)."},
        )
        order = fields.Dict(
            keys=fields.String(), values=fields.String(validate=OneOf(["ASC", "DESC"])),
            metadata={"code": "INVALID_ORDER", "description": "order[FIELD]=ASC|DESC", "property_names": names},
        )
        select = fields.List(
            fields.String(metadata=_select_items(names)),
            metadata={"code": "INVALID_SELECT",
                      "description": "Fields to return (select=ID&select=NAME, select[]=ID, or comma-separated)."},
        )
        ORDER_BY = fields.List(
            fields.String(metadata=_order_by_items(names)),
            metadata={"code": "INVALID_ORDER", "description": "FIELD (ascending) or -FIELD (descending)."},
        )
        start = fields.Integer(
            validate=Range(min=-1, max=MAX_ID),
            metadata={"code": "INVALID_START", "description": "Offset of the page (the previous answer's next); "
                                                              "-1 skips counting."},
        )
        all = fields.Boolean(
            truthy={"1", "true"}, falsy={"0", "false"},
            metadata={"code": "INVALID_ALL", "description": "1: every matching row, streamed as one JSON document."},
        )

    return ListQuery


ListQuery = _list_query(UPPER_NAMES)
ItemListQuery = type("ItemListQuery", (_list_query(CAMEL_NAMES),), {})


class DebugQuery(StrictSchema):
    check = fields.String(
        validate=OneOf(["0", "1", "true", "false", "yes", "no"]),
        metadata={"code": "INVALID_CHECK", "description": "1: also call the portal's profile method and report."},
    )


class EventsQuery(StrictSchema):
    status = fields.String(validate=OneOf(STATUSES), metadata={"code": "INVALID_STATUS"})
    event = fields.String(
        validate=Regexp(r"^[A-Za-z0-9_]{1,128}$", error="event must be an event name like ONCRMDEALUPDATE"),
        metadata={"code": "INVALID_EVENT"},
    )
    start = fields.Integer(validate=Range(min=0, max=10**9), load_default=0, metadata={"code": "INVALID_START"})
    limit = fields.Integer(validate=Range(min=1, max=500), load_default=50, metadata={"code": "INVALID_LIMIT"})


class EventForm(Schema):
    """What Bitrix24 posts to the event receiver (form-encoded, PHP-style keys)."""

    event = fields.String(required=True, validate=Regexp(r"^[A-Za-z0-9_]{1,128}$"),
                          metadata={"example": "ONCRMDEALUPDATE"})
    event_handler_id = fields.String()
    data = fields.Dict(metadata={"description": "data[FIELDS][ID]=42 and the like."})
    ts = fields.String(metadata={"description": "Unix time of the event."})
    auth = fields.Dict(metadata={"description": "auth[domain], auth[member_id], auth[application_token]: the "
                                                "token is checked against the client's outbound_token."})


# ----------------------------------------------------------------------------------------------
# Answers
#
# What comes from the portal is passed on as it came (legacy CRM answers flip between strings and
# numbers, lists and objects): those fields are documented with their usual type but dumped
# untouched, so an odd answer is never turned into something else or into a 500.


def _as_sent(json_type: str, required: bool = False, **metadata: Any) -> fields.Raw:
    return fields.Raw(required=required, metadata={"type": json_type, **metadata})


class Error(Schema):
    error = fields.String(required=True, metadata={"example": "INVALID_ID"})
    error_description = fields.String(required=True)
    field = fields.String(metadata={"description": "The part of the request to fix."})
    method = fields.String(metadata={"description": "The Bitrix24 method that failed."})
    bitrix24_status = fields.Integer(metadata={"description": "The HTTP status Bitrix24 answered with."})
    bitrix24_error = fields.String(metadata={"description": "Bitrix24's own error code."})
    valid_stages = fields.List(fields.String(), metadata={"description": "INVALID_STAGE: the stages the pipeline has."})


class Result(Schema):
    result = fields.Raw(required=True, metadata={"description": "What Bitrix24 answered, as it answered it."})


class CreatedId(Schema):
    result = _as_sent("integer", required=True, description="The new record's id (see Location).")
    existing = fields.Boolean(metadata={"description": "true: a record with this ORIGIN_ID already existed "
                                                       "(200), nothing was created"})


class Flag(Schema):
    result = fields.Boolean(required=True)


class Page(Schema):
    result = _as_sent("array", required=True, items={})
    total = _as_sent("integer")
    next = _as_sent("integer", description="start of the next page; absent on the last page.")
    error = fields.String(metadata={"description": "With all=1: the listing stopped early (rows so far are kept)."})
    error_description = fields.String()


class InstallationView(Schema):
    """An installation of the app on a portal (app mode); never a token."""

    member_id = fields.String()
    client_id = fields.Integer(allow_none=True)
    domain = fields.String(allow_none=True)
    client_endpoint = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "active, uninstalled or needs_attention"})
    problem = fields.String(allow_none=True, metadata={"description": "invalid_grant, PAYMENT_REQUIRED, ..."})
    problem_detail = fields.String(allow_none=True)
    scope = fields.String(allow_none=True)
    events_verified = fields.Boolean(metadata={"description": "whether ONAPPINSTALL gave the application token "
                                                              "the app's events are checked with"})
    installed_at = fields.String(allow_none=True)
    refreshed_at = fields.String(allow_none=True)
    access_expires_at = fields.String(allow_none=True)


class InstallationAnswer(Schema):
    result = fields.Nested(InstallationView, required=True)


class InstallationList(Schema):
    result = fields.List(fields.Nested(InstallationView), required=True)


class InstallOutcomeView(Schema):
    action = fields.String(metadata={"description": "installed, reinstalled, duplicate, token_saved, uninstalled, "
                                                    "resumed or paid"})
    member_id = fields.String()
    client_id = fields.Integer(allow_none=True)
    status = fields.String(allow_none=True)
    event_id = fields.Integer()
    duplicate = fields.Boolean()


class InstallAnswer(Schema):
    result = fields.Nested(InstallOutcomeView, required=True)


class ConfigView(Schema):
    client_id = fields.Integer(allow_none=True)
    source = fields.String(metadata={"description": "database, environment, app (a linked app installation) or none"})
    member_id = fields.String(allow_none=True, metadata={"description": "app mode: the linked installation's portal"})
    app = fields.Nested(InstallationView, allow_none=True,
                        metadata={"description": "app mode: the linked installation"})
    portal_domain = fields.String(allow_none=True)
    webhook_base = fields.String(allow_none=True, metadata={"description": "masked"})
    outbound_token = fields.String(allow_none=True, metadata={"description": "masked"})
    rate_limit = fields.Dict(allow_none=True)
    updated_at = fields.String(allow_none=True)


class DebugView(ConfigView):
    outbound_token_source = fields.String()
    crm = fields.Dict(allow_none=True)
    allowed_hosts = fields.List(fields.String())
    env_fallback = fields.Boolean(metadata={"description": "whether a client without a saved config uses "
                                                           "BITRIX_WEBHOOK_BASE (BITRIX_ENV_FALLBACK)"})
    store = fields.String(metadata={"description": "the config store class (EncryptedStore, ModelStore, ...)"})
    environment = fields.Dict()
    check = fields.Dict(metadata={"description": "With ?check=1: the outcome of a live profile call."})
    suspended = fields.Dict(metadata={"description": "The circuit breaker on this webhook's credentials: "
                                                     "closed, or open (calls refused without reaching the "
                                                     "portal) after repeated PORTAL_AUTH_FAILED"})


class ConfigAnswer(Schema):
    result = fields.Nested(ConfigView, required=True)


class DebugAnswer(Schema):
    result = fields.Nested(DebugView, required=True)


class UpsertOutcome(Schema):
    id = _as_sent("integer")
    action = fields.String(metadata={"description": "created or updated"})
    matched_by = fields.String(allow_none=True)
    duplicates = fields.List(fields.Integer())


class UpsertAnswer(Schema):
    result = fields.Nested(UpsertOutcome, required=True)


class WriteOutcome(Schema):
    index = fields.Integer()
    action = fields.String()
    ok = fields.Boolean()
    id = _as_sent("integer", nullable=True)
    error = fields.String()
    error_description = fields.String()
    existing = fields.Boolean(metadata={"description": "true: a record already had this item's ORIGIN_ID (an "
                                                       "earlier run made it); its id, nothing created"})


class WriteAnswer(Schema):
    result = fields.List(fields.Nested(WriteOutcome), required=True)
    created = fields.Integer()
    existing = fields.Integer(metadata={"description": "creates found already made (by their ORIGIN_ID)"})
    updated = fields.Integer()
    failed = fields.Integer()


class BatchResult(Schema):
    result = fields.Dict()
    result_error = fields.Dict()
    result_total = fields.Dict()
    result_next = fields.Dict()


class BatchAnswer(Schema):
    result = fields.Nested(BatchResult, required=True)


class EventReceipt(Schema):
    event_id = fields.Integer()
    duplicate = fields.Boolean()


class EventAnswer(Schema):
    result = fields.Nested(EventReceipt, required=True)


class EventView(Schema):
    id = fields.Integer()
    client_id = fields.Integer(allow_none=True)
    portal_domain = fields.String(allow_none=True)
    event = fields.String()
    entity_type = fields.String(allow_none=True)
    entity_id = fields.String(allow_none=True)
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    received_at = fields.String(allow_none=True)
    next_attempt_at = fields.String(allow_none=True)
    processed_at = fields.String(allow_none=True)
    payload = fields.Dict()


class EventPage(Schema):
    result = fields.List(fields.Nested(EventView), required=True)
    total = fields.Integer()
    next = fields.Integer()


class EventOne(Schema):
    result = fields.Nested(EventView, required=True)


class Probe(Schema):
    ok = fields.Boolean()
    ms = fields.Float()
    error = fields.String()
    backend = fields.String()
    configured = fields.Boolean()


class MirrorView(Schema):
    entity = fields.String(required=True)
    enabled = fields.Boolean(metadata={"description": "this tenant's mirror of the entity is on"})
    phase = fields.String(allow_none=True, metadata={"description": "copy (the first full copy), then incremental"})
    running = fields.Boolean(metadata={"description": "a run holds it now"})
    rows = fields.Integer(metadata={"description": "records in the mirror, deleted ones not counted"})
    deleted_rows = fields.Integer(metadata={"description": "records the mirror keeps marked deleted"})
    checkpoint = fields.String(allow_none=True, metadata={"description": "the last ID the first copy stored"})
    cursor = fields.String(allow_none=True, metadata={"description": "the newest DATE_MODIFY seen"})
    lag_seconds = fields.Float(allow_none=True, metadata={"description": "seconds since the last run finished"})
    last_success_at = fields.String(allow_none=True)
    copied_at = fields.String(allow_none=True)
    ids_checked_at = fields.String(allow_none=True)
    errors = fields.Integer(metadata={"description": "failed runs so far"})
    last_error = fields.String(allow_none=True)


class SyncStatus(Schema):
    client_id = fields.Integer(required=True)
    mirror = fields.List(fields.Nested(MirrorView), required=True)
    hint = fields.String(metadata={"description": "what to set when nothing is mirrored"})


class Health(Schema):
    status = fields.String(required=True, metadata={"description": "ok, or fail (then the status is 503)"})
    database = fields.Nested(Probe)
    redis = fields.Nested(Probe)
    limiter = fields.Dict()
    event_queue = fields.Dict()
