"""Reading and checking what callers send: ids, JSON bodies, list queries.

Everything refused here is a 400 that names the offending part, before anything reaches Bitrix24.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from flask import request
from werkzeug.datastructures import MultiDict

from ..entities import ENTITIES, Entity
from .errors import ApiError

_POSITIVE_ID = re.compile(r"^[1-9][0-9]{0,9}$")
MAX_ID = 2**31 - 1  # Bitrix24 ids and our client_id columns are 32-bit integers
# Filter operators go in front of the field name (bitrix24-api.md §6), longest first.
_FILTER_KEY = re.compile(r"^(?P<op>!=%|!%=|!=|!@|!%|>=|<=|=%|%=|=|!|>|<|@|%)?(?P<field>.*)$")
_BRACKET_KEY = re.compile(r"^(?P<name>filter|order)\[(?P<key>[^\[\]]+)\](?P<append>\[\])?$", re.IGNORECASE)


def positive_id(value: str, name: str) -> int:
    if not isinstance(value, str) or not _POSITIVE_ID.match(value):
        raise ApiError(400, "INVALID_ID", f"{name} must be a positive integer, got {value!r}", field=name)
    number = int(value)
    if number > MAX_ID:
        raise ApiError(400, "INVALID_ID", f"{name} is too large (at most {MAX_ID})", field=name)
    return number


def entity_or_404(name: str) -> Entity:
    entity = ENTITIES.get(name)
    if entity is None:
        known = ", ".join(ENTITIES)
        raise ApiError(404, "UNKNOWN_ENTITY", f"unknown entity {name!r}: use one of {known}")
    return entity


def json_object() -> dict[str, Any]:
    """The request body as a JSON object (the Content-Type is not required: curl -d sends a form type)."""
    data = request.get_data(cache=True)
    if not data.strip():
        raise ApiError(400, "INVALID_BODY", "the request body is empty: send a JSON object")
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:
        raise ApiError(400, "INVALID_JSON", "the request body nests too deeply")
    if body is None:
        raise ApiError(400, "INVALID_JSON", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_BODY", f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def check_field_names(entity: Entity, mapping: dict[str, Any], where: str) -> None:
    for key in mapping:
        if not isinstance(key, str) or not entity.valid_field_name(key):
            raise ApiError(
                400,
                "INVALID_FIELD_NAME",
                f"{where} key {key!r} is not a Bitrix24 field name (UPPER_CASE like NAME, or UF_CRM_*)",
                field=f"{where}.{key}",
            )


def fields_and_params(entity: Entity) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"fields": {...}, "params": {...}}`` or a bare object of fields (``{"STAGE_ID": "WON"}``)."""
    body = json_object()
    if "fields" in body or "params" in body:
        extra = sorted(set(body) - {"fields", "params"})
        if extra:
            raise ApiError(
                400,
                "INVALID_BODY",
                f"unexpected key {extra[0]!r} beside 'fields': put every field inside 'fields'",
                field=extra[0],
            )
        fields, params = body.get("fields"), body.get("params", {})
        if not isinstance(fields, dict):
            raise ApiError(400, "INVALID_FIELDS", "'fields' must be an object of Bitrix24 fields", field="fields")
        if not isinstance(params, dict):
            raise ApiError(
                400,
                "INVALID_PARAMS",
                '\'params\' must be an object (e.g. {"REGISTER_SONET_EVENT": "N"})',
                field="params",
            )
    else:
        fields, params = body, {}
    if not fields:
        raise ApiError(400, "INVALID_FIELDS", "'fields' is empty: give at least one field", field="fields")
    check_field_names(entity, fields, "fields")
    check_field_names(entity, params, "params")
    return fields, params


def query_args(raw: bytes | str) -> MultiDict:
    """Parse a query string, forgiving an unencoded ``=`` inside a bracketed key.

    ``filter[>=OPPORTUNITY]=1000`` is how people write it; a plain parser splits at the first ``=``
    and reads the key ``filter[>``. Here a key that opens a bracket and does not close it is
    extended up to its closing bracket (encoded keys like ``filter[%3E%3DOPPORTUNITY]`` work too).
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    out: MultiDict = MultiDict()
    for pair in raw.split("&"):
        if not pair:
            continue
        pieces = pair.split("=")
        key, used = unquote_plus(pieces[0]), 1
        # Clients encode the brackets or not, so look at decoded text; a raw "=" inside an open
        # bracket belongs to the key when the closing "]" comes later.
        while (
            used < len(pieces) - 1
            and "[" in key
            and "]" not in key[key.rfind("[") :]
            and "]" in unquote_plus("=".join(pieces[used:]))
        ):
            key += "=" + unquote_plus(pieces[used])
            used += 1
        value = unquote_plus("=".join(pieces[used:]))
        out.add(key, value)
    return out


LIST_QUERY_KEYS = ("filter[...]", "select", "select[]", "order[...]", "ORDER_BY", "start", "all")


def list_params(entity: Entity, args: MultiDict) -> dict[str, Any]:
    """Query string -> ``crm.*.list`` params: filter, select, order, start."""
    params: dict[str, Any] = {}
    filters: dict[str, Any] = {}
    order: dict[str, str] = {}
    select: list[str] = []
    for key in args.keys():
        values = args.getlist(key)
        bracket = _BRACKET_KEY.match(key)
        if bracket:
            kind, inner = bracket["name"].lower(), bracket["key"]
            if kind == "filter":
                match = _FILTER_KEY.match(inner)
                if not entity.valid_field_name(match["field"]):
                    raise ApiError(
                        400,
                        "INVALID_FILTER",
                        f"filter key {inner!r} is not [OPERATOR]FIELD with an UPPER_CASE Bitrix24 field "
                        "(Bitrix24 silently ignores unknown filter keys and returns every row)",
                        field=key,
                    )
                many = bracket["append"] or match["op"] in ("@", "!@") or len(values) > 1
                filters[inner] = list(values) if many else values[0]
            else:
                if not entity.valid_field_name(inner) or len(values) != 1 or values[0].upper() not in ("ASC", "DESC"):
                    raise ApiError(400, "INVALID_ORDER", f"{key} must be ASC or DESC on an UPPER_CASE field", field=key)
                order[inner] = values[0].upper()
        elif key in ("select", "select[]"):
            for value in values:
                for name in value.split(","):
                    name = name.strip()
                    if name not in ("*", "UF_*") and not entity.valid_field_name(name):
                        raise ApiError(
                            400, "INVALID_SELECT", f"select {name!r} is not a Bitrix24 field name", field="select"
                        )
                    select.append(name)
        elif key.upper() == "ORDER_BY":
            for value in values:
                direction = "DESC" if value.startswith("-") else "ASC"
                name = value.lstrip("-+")
                if not entity.valid_field_name(name):
                    raise ApiError(400, "INVALID_ORDER", f"ORDER_BY {value!r} must be FIELD or -FIELD", field=key)
                order[name] = direction
        elif key == "start":
            value = values[-1]
            if not re.fullmatch(r"-1|0|[1-9][0-9]{0,9}", value):
                raise ApiError(
                    400, "INVALID_START", f"start must be a non-negative integer, got {value!r}", field="start"
                )
            params["start"] = int(value)
        else:
            raise ApiError(
                400,
                "UNKNOWN_PARAMETER",
                f"unknown query parameter {key!r}: use {', '.join(LIST_QUERY_KEYS)}",
                field=key,
            )
    if filters:
        params["filter"] = filters
    if select:
        params["select"] = select
    if order:
        params["order"] = order
    return params


def limit_body_size() -> None:
    """``before_request``: our endpoints read at most BITRIX_MAX_BODY_BYTES (413 past that),
    without touching the host app's own MAX_CONTENT_LENGTH."""
    from flask import current_app

    from .auth import PUBLIC_ENDPOINTS

    key = "BITRIX_EVENT_MAX_BYTES" if request.endpoint in PUBLIC_ENDPOINTS else "BITRIX_MAX_BODY_BYTES"
    request.max_content_length = int(current_app.config[key])


def stream_all_flag(args: MultiDict) -> bool:
    """Pop ``all`` from the list query: True for every matching row (streamed)."""
    every = args.poplist("all")
    if every and (len(every) > 1 or every[0] not in ("0", "1", "true", "false")):
        raise ApiError(400, "INVALID_ALL", "all must be 1 (every matching row, streamed) or 0", field="all")
    return bool(every) and every[0] in ("1", "true")


def no_start_with_all(params: dict[str, Any]) -> None:
    if "start" in params:
        raise ApiError(400, "INVALID_START", "start cannot be combined with all=1", field="start")
