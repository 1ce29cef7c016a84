"""Reading and checking what callers send: ids, JSON bodies, list queries.

Everything refused here is a 400 that names the offending part, before anything reaches Bitrix24.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from flask import g, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge

from ..entities import ENTITIES, Entity
from ..runtime import runtime
from .errors import ApiError

_POSITIVE_ID = re.compile(r"^[1-9][0-9]{0,9}$")
MAX_ID = 2**31 - 1  # Bitrix24 ids and our client_id columns are 32-bit integers
# Filter operators go in front of the field name, longest first; see
# https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html and (for !%, !=%, !%=)
# https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html
FILTER_OPERATORS = "!=%|!%=|!=|!@|!%|>=|<=|=%|%=|=|!|>|<|@|%"
_FILTER_KEY = re.compile(rf"^(?P<op>{FILTER_OPERATORS})?(?P<field>.*)$", re.DOTALL)
_BRACKET_KEY = re.compile(r"^(?P<name>filter|order)\[(?P<key>[^\[\]]+)\](?P<append>\[\])?$", re.IGNORECASE)


def positive_id(value: str, name: str) -> int:
    # fullmatch: with match, "$" also matches before a final line break ("5\n", sent as 5%0A)
    if not isinstance(value, str) or not _POSITIVE_ID.fullmatch(value):
        raise ApiError(400, "INVALID_ID", f"{name} must be a positive integer, got {value!r}", field=name)
    number = int(value)
    if number > MAX_ID:
        raise ApiError(400, "INVALID_ID", f"{name} is too large (at most {MAX_ID})", field=name)
    return number


def created_location(endpoint: str, id_name: str, new_id: Any, **values: Any) -> dict[str, str]:
    """The ``Location`` header of a create's answer: only when the portal's new id is a positive integer.
    An odd id (None, "abc", "1/../x?y=1") is still answered as the portal gave it, without a Location: the
    record was most likely made, so the create is not turned into an error a caller would retry."""
    if isinstance(new_id, bool) or not isinstance(new_id, int) or not 0 < new_id <= MAX_ID:
        return {}
    return {"Location": url_for(runtime().endpoint(endpoint), **values, **{id_name: new_id})}


# Every id a URL rule takes (``<bx_id:...>``), in the order they appear in the rules, with the name
# its error gives: the record's and the item's are "id", the smart process's "entity_type_id".
PATH_IDS = {"client_id": "client_id", "type_id": "entity_type_id", "item_id": "id", "record_id": "id",
            "event_id": "event_id", "uf_id": "uf_id"}


_BAD_PATH_ID = "_flask_bitrix24_bad_path_id"  # in flask.g, which the host app shares


def parse_path_ids(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """``url_value_preprocessor`` of the blueprint: every id in the path, checked by ``positive_id``
    and handed on as an int. A malformed one is refused (400 INVALID_ID) by ``refuse_bad_path_id``
    right after the API's authentication, so a caller without credentials still gets its 401 first;
    the ``authorize`` hook, which needs the client id, refuses a malformed one before it runs
    (``bad_client_id``). Either way no hook or view ever sees an id that is not a positive int."""
    if not values:
        return
    for arg, name in PATH_IDS.items():
        if arg in values:
            try:
                values[arg] = positive_id(values[arg], name)
            except ApiError as exc:
                values[arg] = None
                if not hasattr(g, _BAD_PATH_ID):
                    setattr(g, _BAD_PATH_ID, exc)


def bad_path_id() -> ApiError | None:
    """The refusal of this request's first malformed path id, if it has one."""
    return getattr(g, _BAD_PATH_ID, None)


def refuse_bad_path_id() -> None:
    """``before_request`` of the blueprint, right after authentication: 400 INVALID_ID for a
    malformed path id (see ``parse_path_ids``)."""
    exc = bad_path_id()
    if exc is not None:
        raise exc


def entity_or_404(name: str) -> Entity:
    entity = ENTITIES.get(name)
    if entity is None:
        known = ", ".join(ENTITIES)
        raise ApiError(404, "UNKNOWN_ENTITY", f"unknown entity {name!r}: use one of {known}")
    return entity


def json_object() -> dict[str, Any]:
    """The request body as a JSON object; ``Content-Type: application/json`` is required.

    Requiring it is what keeps a host that authenticates by cookie safe from cross-site form posts:
    a browser sends a cross-site ``application/json`` body only after a CORS preflight the host
    controls, while a plain form post (or curl -d without the header) is refused with 415.
    """
    if not request.is_json:
        raise ApiError(
            415, "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as JSON with 'Content-Type: application/json' (got {request.mimetype or 'none'!r})",
        )
    data = read_body()
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


def fields_and_params(entity: Entity, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A loaded ``RecordBody`` -> (fields, params), with the entity's field-name spelling checked."""
    fields, params = body["fields"], body.get("params") or {}
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


def grouped_list_query(raw: bytes | str) -> dict[str, Any]:
    """A list request's query string, grouped for the ``ListQuery`` schema.

    ``filter[KEY]`` / ``order[KEY]`` become the ``filter`` / ``order`` objects (a filter given more
    than once, with ``[]`` or with the ``@`` / ``!@`` operators becomes a list); ``select`` and
    ``select[]`` (repeated or comma-separated) become one list; ``ORDER_BY`` in any case a list.
    Anything else is passed on as it came, for the schema to refuse or read.
    """
    args = query_args(raw)
    out: dict[str, Any] = {}
    for key in args.keys():
        values = args.getlist(key)
        bracket = _BRACKET_KEY.match(key)
        if bracket and bracket["name"].lower() == "filter":
            inner = bracket["key"]
            op = _FILTER_KEY.match(inner)["op"]
            many = bracket["append"] or op in ("@", "!@") or len(values) > 1
            out.setdefault("filter", {})[inner] = list(values) if many else values[0]
        elif bracket:
            if len(values) != 1:
                raise ApiError(400, "INVALID_ORDER", f"{key} is given {len(values)} times", field=key)
            out.setdefault("order", {})[bracket["key"]] = values[0].upper()
        elif key in ("select", "select[]"):
            out.setdefault("select", []).extend(n.strip() for v in values for n in v.split(","))
        elif key.upper() == "ORDER_BY":
            out.setdefault("ORDER_BY", []).extend(values)
        else:
            out[key] = values[-1] if key == "start" else (values[0] if len(values) == 1 else values)
    return out


def check_filter_keys(entity: Entity, filters: Any, where: str) -> None:
    """Each key is [OPERATOR]FIELD with a field name of the entity's spelling: Bitrix24 silently
    ignores an unknown filter key and returns every row."""
    for inner in filters if isinstance(filters, dict) else ():
        if not isinstance(inner, str) or not entity.valid_field_name(_FILTER_KEY.match(inner)["field"]):
            raise ApiError(
                400,
                "INVALID_FILTER",
                f"{where} key {inner!r} is not [OPERATOR]FIELD with a Bitrix24 field name "
                "(Bitrix24 silently ignores unknown filter keys and returns every row)",
                field=f"{where}[{inner}]",
            )


def check_command_names(entity: Entity, params: dict[str, Any], where: str) -> None:
    """A raw batch command's field names, checked as the record and list endpoints check theirs."""
    check_filter_keys(entity, params.get("filter"), f"{where}.filter")
    for key in ("fields",):
        if isinstance(params.get(key), dict):
            check_field_names(entity, params[key], f"{where}.{key}")
    order = params.get("order")
    for name in order if isinstance(order, dict) else ():
        if not isinstance(name, str) or not entity.valid_field_name(name):
            raise ApiError(400, "INVALID_ORDER", f"{where}.order[{name}] must name a Bitrix24 field",
                           field=f"{where}.order")
    select = params.get("select")
    for name in (select.values() if isinstance(select, dict) else select) if isinstance(select, (dict, list)) else ():
        if not isinstance(name, str) or (name not in ("*", "UF_*") and not entity.valid_field_name(name)):
            raise ApiError(400, "INVALID_SELECT", f"{where}.select {name!r} is not a Bitrix24 field name",
                           field=f"{where}.select")


def list_params(entity: Entity, query: dict[str, Any]) -> dict[str, Any]:
    """A loaded ``ListQuery`` -> ``crm.*.list`` params, with the entity's field names checked."""
    params: dict[str, Any] = {}
    filters: dict[str, Any] = query.get("filter") or {}
    order: dict[str, str] = {}
    check_filter_keys(entity, filters, "filter")
    for name, direction in (query.get("order") or {}).items():
        if not entity.valid_field_name(name):
            raise ApiError(400, "INVALID_ORDER", f"order[{name}] must name a Bitrix24 field", field=f"order[{name}]")
        order[name] = direction
    for value in query.get("ORDER_BY") or []:
        name = value.lstrip("-+")
        if not entity.valid_field_name(name):
            raise ApiError(400, "INVALID_ORDER", f"ORDER_BY {value!r} must be FIELD or -FIELD", field="ORDER_BY")
        order[name] = "DESC" if value.startswith("-") else "ASC"
    select = query.get("select") or []
    for name in select:
        if name not in ("*", "UF_*") and not entity.valid_field_name(name):
            raise ApiError(400, "INVALID_SELECT", f"select {name!r} is not a Bitrix24 field name", field="select")
    if "start" in query:
        if query.get("all"):
            raise ApiError(400, "INVALID_START", "start cannot be combined with all=1", field="start")
        params["start"] = query["start"]
    if filters:
        params["filter"] = filters
    if select:
        params["select"] = select
    if order:
        params["order"] = order
    return params


def read_body() -> bytes:
    """The request body, 413 when it is larger than our limit. A body sent without Content-Length
    (chunked) is cut without an error by werkzeug's ``LimitedStream``, so ``limit_body_size`` lets
    such a body run one byte past the limit: that byte means there was more, which must not be read
    as a truncated (so "invalid") body."""
    data = request.get_data(cache=True)
    limit = _body_limit()
    if request.content_length is None and len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _body_limit() -> int:
    from flask import current_app

    from .auth import PUBLIC_ENDPOINTS, endpoint_name

    key = "BITRIX_EVENT_MAX_BYTES" if endpoint_name() in PUBLIC_ENDPOINTS else "BITRIX_MAX_BODY_BYTES"
    return int(current_app.config[key])


def limit_body_size() -> None:
    """``before_request``: our endpoints read at most BITRIX_MAX_BODY_BYTES (413 past that),
    without touching the host app's own MAX_CONTENT_LENGTH."""
    limit = _body_limit()
    # A body without Content-Length may run one byte over, so that read_body can tell "exactly the
    # limit" from "more than it".
    request.max_content_length = limit if request.content_length is not None else limit + 1
