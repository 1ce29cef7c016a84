"""OpenAPI for our blueprint: flask-smorest, kept to our own routes.

- ``ApiBlueprint`` parses request bodies and queries with the schemas in ``schemas.py`` and turns a
  refusal into our own 400 (``{"error", "error_description", "field"}``), not webargs' 422.
- ``Api`` generates the document from those schemas and serves ``openapi.json`` and Swagger UI
  beside our routes; it registers no error handlers on the host app (flask-smorest's own would
  replace the host's error pages).
- Path converters ``bx_id`` / ``bx_entity`` match any segment, so a bad id still reaches our
  blueprint and gets ``INVALID_ID`` (from ``params.parse_path_ids``) instead of a routing 404, and
  are documented as what they accept.
- The document gives every entity its own paths and operationIds (``createContact``, ``listDeals``,
  ``updateTask``): one URL rule serves ``/clients/{client_id}/{entity}`` for all entities, but a
  generated client and a person in Swagger UI read ``/clients/{client_id}/contacts`` best
  (``per_entity_paths``). Every other operation's id is its endpoint name in camelCase.
- Swagger UI's scripts come from an installed package (``flask-swagger-ui``, the ``docs`` extra), served
  beside the page, so the page works on a machine without internet; ``BITRIX_OPENAPI_SWAGGER_UI_URL``
  points it elsewhere (a CDN, a self-hosted copy).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from typing import Any

import flask
import flask_smorest
from flask import Flask
from marshmallow import Schema
from marshmallow import fields as ma_fields
from webargs.flaskparser import FlaskParser
from werkzeug.routing import BaseConverter, Rule

from .._version import __version__
from ..entities import ENTITIES
from ..services.userfields import USERFIELD_ENTITIES
from .errors import ApiError
from .params import MAX_ID, grouped_list_query, json_object
from .schemas import Error


class BxParser(FlaskParser):
    """webargs parser: our JSON rules (no Content-Type needed, clear errors) and our error format."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION: dict = {}  # the schemas' own rule (RAISE): unknown keys are refused

    def load_json(self, req, schema):  # noqa: ARG002 - webargs' signature
        return json_object()

    def load_querystring(self, req, schema):
        if getattr(schema, "BRACKET_KEYS", False):
            # filter[>=OPPORTUNITY]=1 and order[ID]=DESC, grouped into {"filter": {...}, "order": {...}}
            return grouped_list_query(req.query_string)
        return super().load_querystring(req, schema)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):  # noqa: ARG002
        location, messages = next(iter(error.messages.items()), ("json", {}))
        path, text = _first_error(messages)
        path = _clean_path(schema, path)
        where = _dotted(schema, path, location == "query") or location
        if "Unknown field" in text:
            code = "INVALID_BODY" if location == "json" else "UNKNOWN_PARAMETER"
            if len(path) > 1:
                code = _code_for(schema, path[:-1]) or code
            kind = "key" if location == "json" else "query parameter"
            raise ApiError(400, code, f"unknown {kind} {where!r}", field=where)
        raise ApiError(400, _code_for(schema, path) or "INVALID_BODY", f"{where}: {text}", field=where)


def _walk(schema: Schema, path: list[Any]):
    """Yield (part, field or None) along ``path``; list indexes and mapping keys give None."""
    current: Any = schema
    for part in path:
        field = current.fields.get(part) if isinstance(current, Schema) and isinstance(part, str) else None
        yield part, field
        if field is not None:
            inner = field.inner if isinstance(field, ma_fields.List) else field
            current = inner.schema if isinstance(inner, ma_fields.Nested) else None
        elif not isinstance(part, int):
            current = None


def _clean_path(schema: Schema, path: list[Any]) -> list[Any]:
    """Drop marshmallow's "key" / "value" level under the key of a mapping field."""
    out: list[Any] = []
    for part in path:
        steps = list(_walk(schema, out))
        if part in ("key", "value") and len(steps) >= 2 and isinstance(steps[-2][1], ma_fields.Dict):
            continue
        out.append(part)
    return out


def _dotted(schema: Schema, path: list[Any], query: bool) -> str:
    """["items", 0, "fields", "NAME"] -> "items[0].fields.NAME"; in a query string the way it is
    written there: ["order", "ID"] -> "order[ID]"."""
    out = ""
    for part, field in _walk(schema, path):
        if isinstance(part, int) or (query and field is None and out):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _first_error(messages: Any) -> tuple[list[Any], str]:
    """marshmallow's nested messages -> (path to the first bad part, its message)."""
    path: list[Any] = []
    while isinstance(messages, dict) and messages:
        # An unknown key first: it is usually the cause (a misspelt "fields" is also a missing one).
        key = next((k for k, v in messages.items() if v == ["Unknown field."]), next(iter(messages)))
        if key != "_schema":
            path.append(key)
        messages = messages[key]
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, (dict, list)):
            sub_path, text = _first_error(first)
            return path + sub_path, text
        return path, str(first)
    return path, str(messages)


def _code_for(schema: Schema, path: list[Any]) -> str | None:
    """The ``code`` metadata of the deepest schema field on ``path`` that has one."""
    code = None
    for _, field in _walk(schema, path):
        if field is not None:
            code = field.metadata.get("code", code)
    return code


class ApiBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = BxParser()

    def add_any_method_rule(self, rule: str, endpoint: str, view_func, **options) -> None:
        """A route left out of the document that takes every method, PROPFIND or BREW too (the JSON
        404/405 catch-all). Flask always gives a rule a method list, so this one is a plain werkzeug
        ``Rule`` with ``methods=None``, added when the blueprint is registered, under its prefix and
        with the endpoint name Flask would give it (so the blueprint's own hooks run for it)."""

        def add(state: flask.blueprints.BlueprintSetupState) -> None:
            path = rule
            if state.url_prefix is not None:
                path = "/".join((state.url_prefix.rstrip("/"), rule.lstrip("/")))
            full_endpoint = f"{state.name_prefix}.{state.name}.{endpoint}".lstrip(".")
            state.app.url_map.add(Rule(path, endpoint=full_endpoint, methods=None, subdomain=state.subdomain,
                                       defaults=dict(state.url_defaults) or None, **options))
            state.app.view_functions[full_endpoint] = view_func

        self.record(add)


# The seed README's examples, and their like for the other entities: Swagger UI's "Try it out" starts
# from these, and a generated client's docs show them.
EXAMPLES: dict[str, dict[str, Any]] = {
    "contacts": {"create": {"fields": {"NAME": "Ada", "LAST_NAME": "Lovelace",
                                       "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}],
                                       "EMAIL": [{"VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]}},
                 "update": {"fields": {"POST": "Analyst"}}},
    "deals": {"create": {"fields": {"TITLE": "Analytical Engine", "OPPORTUNITY": 5000, "CURRENCY_ID": "USD"}},
              "update": {"fields": {"STAGE_ID": "WON"}}},
    "leads": {"create": {"fields": {"TITLE": "Website enquiry", "NAME": "Ada", "LAST_NAME": "Lovelace",
                                    "EMAIL": [{"VALUE": "ada@example.com", "VALUE_TYPE": "WORK"}]}},
              "update": {"fields": {"STATUS_ID": "IN_PROCESS"}}},
    "companies": {"create": {"fields": {"TITLE": "Analytical Engines Ltd",
                                        "PHONE": [{"VALUE": "+15557654321", "VALUE_TYPE": "WORK"}]}},
                  "update": {"fields": {"INDUSTRY": "IT"}}},
    "tasks": {"create": {"fields": {"TITLE": "Call Ada back", "RESPONSIBLE_ID": 1}},
              "update": {"fields": {"PRIORITY": 2}}},
}
ENDPOINT_KEY = "x-bx-endpoint"  # set by routes.route() on operations of {entity} paths; replaced here


def operation_id(endpoint: str) -> str:
    """``list_events`` -> ``listEvents``."""
    head, *rest = endpoint.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _title(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_\s]+", text))


def entity_operation_id(endpoint: str, entity) -> str:
    """``list_records`` -> ``listContacts``, ``create_record`` -> ``createContact``, ``entity_fields`` ->
    ``getContactFields``; a name without record/records/entity/many gets the entity after its verb
    (``list_userfields`` -> ``listContactUserfields``)."""
    singular, plural = _title(entity.label), _title(entity.name)
    words = {"record": singular, "entity": singular, "records": plural, "many": plural}
    parts = endpoint.split("_")
    if parts[0] in words:
        parts.insert(0, "get")  # entity_fields: a noun alone reads as a getter
    elif not any(part in words for part in parts):
        parts.insert(1, "entity")
    out = [words.get(part, part.capitalize()) for part in parts]
    return out[0][0].lower() + out[0][1:] + "".join(out[1:])


def _about(text: str, entity) -> str:
    """A generic summary made specific: "Create a record" -> "Create a contact"."""
    text = re.sub(r"\brecords\b", entity.name, text)
    return re.sub(r"\brecord\b", entity.label, text)


def per_entity_paths(spec: dict[str, Any]) -> dict[str, Any]:
    """Expand each ``{entity}`` path into one path per entity its parameter allows, with the
    parameter gone, the operation's own id, tag and summary, and request examples where we have them."""
    paths: dict[str, Any] = {}
    for path, item in spec.get("paths", {}).items():
        if "{entity}" not in path:
            paths[path] = item
            continue
        params = item.get("parameters", [])
        entity_param = next((p for p in params if p.get("in") == "path" and p.get("name") == "entity"), None)
        names = (entity_param or {}).get("schema", {}).get("enum") or list(ENTITIES)
        for name in names:
            entity = ENTITIES.get(name)
            if entity is None:
                continue
            expanded: dict[str, Any] = {}
            for key, value in item.items():
                if key == "parameters":
                    kept = [p for p in value if p is not entity_param]
                    if kept:
                        expanded[key] = kept
                    continue
                op = copy.deepcopy(value)
                endpoint = op.pop(ENDPOINT_KEY, None) or f"{key}_record"
                op["operationId"] = entity_operation_id(endpoint, entity)
                op["tags"] = [entity.name]
                for text_key in ("summary", "description"):
                    if text_key in op:
                        op[text_key] = _about(op[text_key], entity)
                action = {"create_record": "create", "update_record": "update"}.get(endpoint)
                example = EXAMPLES.get(name, {}).get(action) if action else None
                content = op.get("requestBody", {}).get("content", {}).get("application/json")
                if example is not None and content is not None:
                    content["example"] = example
                expanded[key] = op
            paths[path.replace("{entity}", name)] = expanded
    spec["paths"] = paths
    return spec


class Api(flask_smorest.Api):
    ERROR_SCHEMA = Error

    def _register_error_handlers(self) -> None:
        """None: our blueprint has its own handlers and the host app keeps its own."""

    def document(self) -> dict[str, Any]:
        """The OpenAPI document as served: one path per entity and operation, summaries in Markdown."""
        spec = per_entity_paths(self.spec.to_dict())
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                if isinstance(op, dict):
                    for key in ("summary", "description"):
                        if isinstance(op.get(key), str):
                            op[key] = op[key].replace("``", "`")  # our docstrings' literals, as Markdown
        return spec

    def _openapi_json(self):
        return flask.current_app.response_class(flask.json.dumps(self.document(), indent=2, sort_keys=False),
                                                mimetype="application/json")

    def _register_swagger_ui_rule(self, blueprint: flask.Blueprint) -> None:
        """Swagger UI at ``docs``, its scripts under ``docs/assets/`` from the installed flask-swagger-ui
        package unless BITRIX_OPENAPI_SWAGGER_UI_URL names another place. Without either, the page
        answers 501 and says what to install (as /metrics does without prometheus_client)."""
        page = self.config.get("OPENAPI_SWAGGER_UI_PATH")
        if page is None:
            return
        self._swagger_ui_url = self.config.get("OPENAPI_SWAGGER_UI_URL") or None
        if SWAGGER_UI_DIST:
            blueprint.add_url_rule(f"/{page.strip('/')}/assets/<path:filename>", endpoint="swagger_ui_assets",
                                   view_func=_swagger_ui_asset)
        blueprint.add_url_rule(f"/{page.strip('/')}", endpoint="openapi_swagger_ui", view_func=self._swagger_ui_page)

    def _swagger_ui_page(self):
        scripts = self._swagger_ui_url
        if not scripts and SWAGGER_UI_DIST:
            # url_for, so an app mounted under a path prefix (SCRIPT_NAME) still finds them
            name = f"{self._make_doc_blueprint_name()}.swagger_ui_assets"
            scripts = flask.url_for(name, filename="swagger-ui.css").removesuffix("swagger-ui.css")
        if not scripts:
            return flask.jsonify(error="DOCS_UI_MISSING",
                                 error_description="Swagger UI's files are not installed: pip install "
                                                   "'flask-bitrix24[docs]', or set BITRIX_OPENAPI_SWAGGER_UI_URL "
                                                   "to where they are served"), 501
        return flask.render_template(
            "swagger_ui.html", title=self.spec.title, swagger_ui_url=scripts,
            spec_url=flask.url_for(f"{self._make_doc_blueprint_name()}.openapi_json"),
            swagger_ui_config=self.config.get("OPENAPI_SWAGGER_UI_CONFIG", {}))


def _swagger_ui_dist() -> str | None:
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or not spec.origin:
        return None
    dist = os.path.join(os.path.dirname(spec.origin), "dist")
    return dist if os.path.isfile(os.path.join(dist, "swagger-ui-bundle.js")) else None


SWAGGER_UI_DIST = _swagger_ui_dist()  # found without importing the package (it imports nothing we need)


def _swagger_ui_asset(filename: str):
    return flask.send_from_directory(SWAGGER_UI_DIST, filename, max_age=86400)


def _segment_except(*words: str) -> str:
    # One path segment other than these words (they name sub-resources: /contacts/fields is not
    # record "fields", and PATCH there is a 405, not a bad id).
    return rf"(?!(?:{'|'.join(words)})(?![^/]))[^/]+"


# part_isolating: these match one segment. werkzeug takes a converter whose regex has a "/" in it (ours
# do, in [^/]) for one that may span segments, and then matches each such rule as one regex over the
# rest of the path, rule after rule (26 tries for GET /clients/1/contacts/1); said to match one segment,
# the rules share werkzeug's per-segment state machine, and a URL is matched in a few steps.


class IdConverter(BaseConverter):
    """Any path segment; ``params.parse_path_ids`` checks it (400 INVALID_ID). Documented as a positive id."""

    regex = _segment_except("fields", "batch", "upsert", "config", "webhook", "events", "items", "replay", "sync",
                            "userfields", "pipelines", "statuses", "sources")
    part_isolating = True


class EntityConverter(BaseConverter):
    """Any path segment; the controller checks it (404 UNKNOWN_ENTITY). Documented as the entity names."""

    regex = _segment_except("batch", "config", "webhook", "events", "items", "userfield-types", "sync")
    part_isolating = True


def _entity_subsets() -> dict[str, Any]:
    """The entities each entity converter documents (the controller checks the name either way: 404
    UNKNOWN_ENTITY): one document path per entity that really has the resource."""
    from ..services.contact_links import KINDS
    from .relations_controller import ROW_ENTITIES

    return {
        "bx_entity": list(ENTITIES),
        "bx_upsert_entity": [e.name for e in ENTITIES.values() if e.upsert],
        "bx_uf_entity": list(USERFIELD_ENTITIES),
        "bx_rows_entity": list(ROW_ENTITIES),
        "bx_contacts_entity": [e for e, kind in KINDS.items() if kind.plural == "contacts"],
        "bx_companies_entity": [e for e, kind in KINDS.items() if kind.plural == "companies"],
    }


def entity_subset(converter_name: str) -> list[str]:
    """The entity names the converter ``converter_name`` (``bx_rows_entity``, ...) is documented with."""
    return _entity_subsets()[converter_name]


def _subset_converter(name: str) -> type[BaseConverter]:
    # Same matching as bx_entity (any segment); only the document's enum differs.
    return type(f"{name.title().replace('_', '')}Converter", (EntityConverter,), {"__doc__": f"{name}: documented "
                "as the entities that have the resource; the controller checks the name."})


SUBSET_CONVERTERS = {name: _subset_converter(name) for name in
                     ("bx_upsert_entity", "bx_uf_entity", "bx_rows_entity", "bx_contacts_entity",
                      "bx_companies_entity")}
UpsertEntityConverter = SUBSET_CONVERTERS["bx_upsert_entity"]
UserFieldEntityConverter = SUBSET_CONVERTERS["bx_uf_entity"]


class AnyPathConverter(BaseConverter):
    """Anything, empty and "//" included: the JSON catch-all under our prefix."""

    regex = ".*"
    part_isolating = False


CONVERTERS = {"bx_id": IdConverter, "bx_entity": EntityConverter, **SUBSET_CONVERTERS, "bx_any": AnyPathConverter}


def _property_names(_converter, field, **_: Any) -> dict[str, Any]:
    # OpenAPI 3.1 (JSON Schema): which keys an object field takes, from the field's metadata.
    names = field.metadata.get("property_names")
    return {"propertyNames": names} if names else {}


def _deep_object(_converter, field, **_: Any) -> dict[str, Any]:
    # filter[FIELD]=value is OpenAPI's deepObject style.
    if isinstance(field, ma_fields.Dict):
        return {"style": "deepObject", "explode": True}
    return {}


def init_api(app: Flask, blueprint: ApiBlueprint, url_prefix: str, name: str = "bitrix24") -> Api:
    """Register ``blueprint`` on ``app`` (as ``name``) through flask-smorest, with its document and
    Swagger UI under ``url_prefix``."""
    for converter_name, converter in CONVERTERS.items():
        app.url_map.converters.setdefault(converter_name, converter)
    config = {
        "BITRIX_OPENAPI_URL_PREFIX": url_prefix,
        "BITRIX_OPENAPI_JSON_PATH": "openapi.json",
        "BITRIX_OPENAPI_SWAGGER_UI_PATH": "docs",
    }
    for key, value in config.items():
        app.config.setdefault(key, value)
    had_openapi_cli = "openapi" in app.cli.commands
    api = Api(
        app,
        config_prefix="BITRIX",
        spec_kwargs={
            "title": "Bitrix24 CRM integration",
            "version": __version__,
            "openapi_version": "3.1.0",
            "info": {"description": "Per-client Bitrix24 CRM: records, lists, bulk writes, events. Errors are "
                                    '{"error": CODE, "error_description": text, "field": part to fix}.'},
            "security": [{"bearerAuth": []}],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "BITRIX_API_KEY"}
    )
    api.ma_plugin.converter.add_parameter_attribute_function(_deep_object)
    api.ma_plugin.converter.add_attribute_function(_property_names)
    api.register_converter(IdConverter, lambda _: {"type": "integer", "minimum": 1, "maximum": MAX_ID})
    api.register_converter(EntityConverter, lambda _: {"type": "string", "enum": entity_subset("bx_entity")})
    for converter_name, converter in SUBSET_CONVERTERS.items():
        api.register_converter(converter, lambda _, n=converter_name: {"type": "string", "enum": entity_subset(n)})
    api.register_blueprint(blueprint, url_prefix=url_prefix, name=name)
    if not had_openapi_cli:  # flask-smorest adds `flask openapi ...` to the app: not ours to add to a host
        app.cli.commands.pop("openapi", None)
    return api


__all__ = ["Api", "ApiBlueprint", "init_api"]
