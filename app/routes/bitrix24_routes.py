"""The Blueprint, its URL rules and each rule's contract (the schemas it reads and answers with).

The OpenAPI document is generated from what is declared here. Ids and entity names use converters
that match any segment (``bx_id``, ``bx_entity``), so a bad id gets our JSON 400 instead of the
routing layer's 404 page: every id is parsed once, for every hook and view, by ``parse_path_ids``;
entity names are checked by the controllers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import Schema

from .. import logs
from ..controllers import app_controller as appc
from ..controllers import bitrix24_controller as c
from ..controllers import items_controller as items
from ..controllers import ops_controller as ops
from ..controllers import relations_controller as rel
from ..controllers import relations_schemas as rs
from ..controllers import schemas as s
from ..controllers import tasks_controller as tasks
from ..controllers import userfield_schemas as us
from ..controllers import userfields_controller as uf
from ..controllers.auth import require_api_auth
from ..controllers.errors import register_error_handlers
from ..controllers.fast_schemas import Fast, dump_write_answer, fast_first, load_batch_write_body
from ..controllers.openapi import ENDPOINT_KEY, ApiBlueprint, operation_id
from ..controllers.params import PATH_IDS, limit_body_size, parse_path_ids, refuse_bad_path_id

bp = ApiBlueprint("bitrix24", __name__, description="Bitrix24 CRM, per client")


# One hook of each kind, calling ours in order: Flask's dispatch costs about as much per hook as our
# small hooks do themselves.
@bp.url_value_preprocessor  # Flask runs these before any before_request function
def _url_values(endpoint: str | None, values: dict[str, Any] | None) -> None:
    logs.begin_request(endpoint, values)  # first: everything after logs with the request id and tenant
    parse_path_ids(endpoint, values)  # then the path's ids are ints for hooks and views (see below)


@bp.before_request
def _before() -> None:
    limit_body_size()
    require_api_auth()
    refuse_bad_path_id()  # a malformed path id: 400, once the caller is known to be allowed


@bp.after_request
def _after(response: Any) -> Any:
    return logs.end_request(c.fix_allow_header(response))


bp.teardown_request(logs.teardown)
register_error_handlers(bp)

CLIENT = "/clients/<bx_id:client_id>"
ITEMS = f"{CLIENT}/items/<bx_id:type_id>"


def route(
    rule: str,
    endpoint: str,
    view: Callable[..., Any],
    method: str,
    answer: type[Schema] | None,
    *,
    status: int = 200,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    fast_body: Fast | None = None,
    fast_answer: Fast | None = None,
    tags: list[str],
    **doc: Any,
) -> None:
    """One URL rule: ``body`` / ``query`` are parsed and checked before the view runs (the view gets
    the loaded data as its first argument); ``answer`` documents and dumps the success body.
    ``fast_body`` / ``fast_answer``: a faster load of ``body`` / dump of ``answer`` for a hot endpoint, tried
    first (``fast_schemas``)."""
    unparsed = set(re.findall(r"<bx_id:(\w+)>", rule)) - set(PATH_IDS)
    if unparsed:  # it would reach the view as text, unchecked
        raise RuntimeError(f"{rule}: add {sorted(unparsed)} to params.PATH_IDS")
    dumped_by = fast_first(answer(), dump=fast_answer) if answer and fast_answer else answer
    wrapped = bp.response(status, dumped_by, **({} if answer else {"content_type": doc.pop("content_type")}))(view)
    # Schema instances, made once here: given a class, webargs builds a new instance (deep-copying every
    # field) on each request. Loading keeps no state on the schema, so one instance serves every thread.
    if body is not None:
        wrapped = bp.arguments(fast_first(body(), load=fast_body), location="json", error_status_code=400)(wrapped)
    if query is not None:
        wrapped = bp.arguments(query(), location="query", error_status_code=400, as_kwargs=False)(wrapped)
    # operationId: the endpoint's name in camelCase; on {entity} rules the document makes one per entity
    # (createContact, listDeals: openapi.per_entity_paths), from the endpoint name kept here.
    per_entity = re.search(r"<bx_\w*entity:", rule) is not None  # bx_entity, bx_upsert_entity, bx_uf_entity
    doc.setdefault(ENDPOINT_KEY if per_entity else "operationId", endpoint if per_entity else operation_id(endpoint))
    wrapped = bp.doc(**doc)(wrapped)
    # merge_slashes=False: werkzeug would answer "//" with an HTML redirect built from the Host header.
    bp.add_url_rule(rule, endpoint, wrapped, methods=[method], tags=tags, merge_slashes=False)


CONFIG, EVENTS, RECORDS, ITEMS_TAG, BULK = ["config"], ["events"], ["records"], ["smart-process items"], ["bulk"]
OPS = ["operations"]
USERFIELDS = ["user fields"]

route("/health", "health", ops.health, "GET", s.Health, tags=OPS, security=[],
      responses={503: {"description": "The database or a configured Redis does not answer",
                       "content": {"application/json": {"schema": s.Health}}}})
route("/metrics", "metrics", ops.metrics, "GET", None, tags=OPS, content_type="text/plain",
      responses={200: {"description": "Prometheus text format",
                       "content": {"text/plain": {"schema": {"type": "string"}}}}})

route(f"{CLIENT}/config", "save_config", c.save_config, "POST", s.ConfigAnswer, body=s.ConfigBody, tags=CONFIG,
      responses={201: {"description": "Saved (first time)"}})
route(f"{CLIENT}/config", "get_config", c.get_config, "GET", s.ConfigAnswer, tags=CONFIG)
route(f"{CLIENT}/config", "delete_config", c.delete_config, "DELETE", s.Flag, tags=CONFIG)
route(f"{CLIENT}/config/debug", "debug_config", c.debug_config, "GET", s.DebugAnswer, query=s.DebugQuery, tags=CONFIG)

_FORM = {"schema": s.EventForm}
_EVENT_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": _FORM,
                                                              "application/json": _FORM}},
               "security": []}
route("/webhook", "receive_event", c.receive_event_view, "POST", s.EventAnswer, tags=EVENTS, **_EVENT_BODY)
route(f"{CLIENT}/webhook", "receive_client_event", c.receive_client_event_view, "POST", s.EventAnswer, tags=EVENTS,
      **_EVENT_BODY)
# App mode: the install handler (public: Bitrix24 proves itself through the OAuth server and the
# application token) and the installations, for ops to find the member_id to link a client to.
APP = ["app mode"]
_INSTALL_BODY = {**_EVENT_BODY, "responses": {200: {"description": "JSON for events; for the install page's "
                                                                   "request, an HTML page calling BX24.installFinish()",
                                                    "content": {"text/html": {"schema": {"type": "string"}}}}}}
route("/app/install", "app_install", appc.install_view, "POST", s.InstallAnswer, tags=APP, **_INSTALL_BODY)
route("/app/installations", "list_installations", appc.list_installations, "GET", s.InstallationList, tags=APP)
route("/app/installations/<member_id>", "get_installation", appc.get_installation, "GET",
      s.InstallationAnswer, tags=APP)
route("/app/installations/<member_id>/resume", "resume_installation",
      appc.resume_installation, "POST", s.InstallationAnswer, tags=APP)
route(f"{CLIENT}/sync", "sync_status", ops.sync_status, "GET", s.SyncStatus, tags=OPS)
route(f"{CLIENT}/events", "list_events", c.list_events, "GET", s.EventPage, query=s.EventsQuery, tags=EVENTS)
route(f"{CLIENT}/events/<bx_id:event_id>/replay", "replay_event", c.replay_event, "POST", s.EventOne, tags=EVENTS,
      responses={202: {"description": "Queued for a worker"}})

route(ITEMS, "list_items", items.list_items, "GET", s.Page, query=s.ItemListQuery, tags=ITEMS_TAG)
route(ITEMS, "create_item", items.create_item, "POST", s.CreatedId, status=201, body=s.ItemBody, tags=ITEMS_TAG)
route(f"{ITEMS}/fields", "item_fields", items.item_fields, "GET", s.Result, tags=ITEMS_TAG)
route(f"{ITEMS}/<bx_id:item_id>", "get_item", items.get_item, "GET", s.Result, tags=ITEMS_TAG)
route(f"{ITEMS}/<bx_id:item_id>", "update_item", items.update_item, "PATCH", s.Result, body=s.ItemBody,
      tags=ITEMS_TAG)
route(f"{ITEMS}/<bx_id:item_id>", "delete_item", items.delete_item, "DELETE", s.Result, tags=ITEMS_TAG)

# Tasks: CRUD, lists and bulk writes are the entity rules below (the tasks row of the entity table); here what
# only tasks have. Before the entity rules, as every static path is.
route(f"{CLIENT}/tasks/<bx_id:record_id>/complete", "complete_task", tasks.complete_task, "POST", s.Result,
      tags=["tasks"])

# User fields of contacts, deals, leads and companies (crm.<entity>.userfield.*), and the portal's types.
# Before the entity rules: /deals/userfields is not record "userfields".
UF = f"{CLIENT}/<bx_uf_entity:entity>/userfields"
_UF_ERRORS = {404: {"description": "USERFIELD_NOT_FOUND: the entity has no user field with this id"}}
route(UF, "list_userfields", uf.list_userfields, "GET", s.Page, query=us.UserFieldListQuery, tags=USERFIELDS)
route(UF, "create_userfield", uf.create_userfield, "POST", s.CreatedId, status=201, body=us.UserFieldBody,
      tags=USERFIELDS, responses={409: {"description": "USERFIELD_EXISTS: the entity has a field of this name "
                                                       "(its id in id); nothing was created",
                                        "content": {"application/json": {"schema": us.UserFieldExists}}}})
route(f"{UF}/<bx_id:uf_id>", "get_userfield", uf.get_userfield, "GET", s.Result, tags=USERFIELDS,
      responses=_UF_ERRORS)
route(f"{UF}/<bx_id:uf_id>", "update_userfield", uf.update_userfield, "PATCH", s.Result, body=us.UserFieldChanges,
      tags=USERFIELDS, responses=_UF_ERRORS)
route(f"{UF}/<bx_id:uf_id>", "delete_userfield", uf.delete_userfield, "DELETE", s.Result, tags=USERFIELDS,
      responses=_UF_ERRORS)
route(f"{CLIENT}/userfield-types", "userfield_types", uf.userfield_types, "GET", s.Result, tags=USERFIELDS)

# Pipelines and stages, product rows, linked contacts (relations_controller). Before the entity rules:
# /deals/pipelines is not record "pipelines".
PIPELINES, ROWS, LINKS = ["pipelines"], ["product rows"], ["links"]
# Each resource's converter documents the entities that have it (openapi.entity_subset).
ROWS_RECORD = f"{CLIENT}/<bx_rows_entity:entity>/<bx_id:record_id>"
CONTACTS_OWNER = f"{CLIENT}/<bx_contacts_entity:entity>/<bx_id:record_id>"
COMPANIES_OWNER = f"{CLIENT}/<bx_companies_entity:entity>/<bx_id:record_id>"
route(f"{CLIENT}/deals/pipelines", "deal_pipelines", rel.deal_pipelines, "GET", s.Result, tags=PIPELINES)
route(f"{CLIENT}/leads/statuses", "lead_statuses", rel.lead_statuses, "GET", s.Result, tags=PIPELINES)
route(f"{CLIENT}/leads/sources", "lead_sources", rel.lead_sources, "GET", s.Result, tags=PIPELINES)
route(f"{CLIENT}/deals/<bx_id:record_id>/pipeline", "move_deal", rel.move_deal, "PUT", rs.MoveAnswer,
      body=rs.MoveBody, tags=PIPELINES)
route(f"{CLIENT}/<bx_rows_entity:entity>/products/get", "rows_of_many", rel.rows_of_many, "POST", rs.ManyRowsAnswer,
      body=rs.ManyRowsBody, tags=ROWS)
route(f"{ROWS_RECORD}/products", "get_rows", rel.get_rows, "GET", rs.RowsAnswer, tags=ROWS)
route(f"{ROWS_RECORD}/products", "put_rows", rel.put_rows, "PUT", rs.RowsAnswer, body=rs.RowsBody, tags=ROWS)
route(f"{ROWS_RECORD}/products", "patch_rows", rel.patch_rows, "PATCH", rs.RowsAnswer, body=rs.RowsPatch, tags=ROWS,
      responses={409: {"description": "ROWS_CHANGED: the rows changed while being merged; nothing written"}})
route(f"{ITEMS}/<bx_id:item_id>/products", "get_item_rows", rel.get_item_rows, "GET", rs.RowsAnswer, tags=ROWS)
route(f"{ITEMS}/<bx_id:item_id>/products", "put_item_rows", rel.put_item_rows, "PUT", rs.RowsAnswer,
      body=rs.RowsBody, tags=ROWS)
route(f"{ITEMS}/<bx_id:item_id>/products", "patch_item_rows", rel.patch_item_rows, "PATCH", rs.RowsAnswer,
      body=rs.RowsPatch, tags=ROWS,
      responses={409: {"description": "ROWS_CHANGED: the rows changed while being merged; nothing written"}})
route(f"{CONTACTS_OWNER}/contacts", "get_contacts", rel.get_contacts, "GET", s.Result, tags=LINKS)
route(f"{CONTACTS_OWNER}/contacts", "put_contacts", rel.put_contacts, "PUT", s.Result, body=rs.ContactLinksBody,
      tags=LINKS)
route(f"{COMPANIES_OWNER}/companies", "get_companies", rel.get_companies, "GET", s.Result, tags=LINKS)
route(f"{COMPANIES_OWNER}/companies", "put_companies", rel.put_companies, "PUT", s.Result, body=rs.CompanyLinksBody,
      tags=LINKS)

route(f"{CLIENT}/batch", "raw_batch", c.raw_batch, "POST", s.BatchAnswer, body=s.RawBatchBody, tags=BULK)
route(f"{CLIENT}/<bx_entity:entity>/batch", "write_many", c.write_many, "POST", s.WriteAnswer,
      body=s.BatchWriteBody, fast_body=load_batch_write_body, fast_answer=dump_write_answer, tags=BULK)
route(f"{CLIENT}/<bx_entity:entity>/fields", "entity_fields", uf.entity_fields, "GET", s.Result,
      query=us.FieldsQuery, tags=RECORDS)
route(f"{CLIENT}/<bx_upsert_entity:entity>/upsert", "upsert_record", c.upsert_record, "PUT", s.UpsertAnswer,
      body=s.RecordBody, tags=RECORDS, responses={201: {"description": "Created (no record matched)"}})
route(f"{CLIENT}/<bx_entity:entity>", "list_records", uf.list_records, "GET", s.Page, query=us.LabelledListQuery,
      tags=RECORDS)
route(f"{CLIENT}/<bx_entity:entity>", "create_record", c.create_record, "POST", s.CreatedId, status=201,
      body=s.RecordBody, tags=RECORDS,
      responses={200: {"description": "A record with this ORIGIN_ID (and ORIGINATOR_ID) already existed: its id, "
                                      "existing: true; nothing was created"}})
route(f"{CLIENT}/<bx_entity:entity>/<bx_id:record_id>", "get_record", uf.get_record, "GET", s.Result,
      query=us.RecordQuery, tags=RECORDS)
route(f"{CLIENT}/<bx_entity:entity>/<bx_id:record_id>", "update_record", c.update_record, "PATCH", s.Result,
      body=s.RecordBody, tags=RECORDS)
route(f"{CLIENT}/<bx_entity:entity>/<bx_id:record_id>", "delete_record", c.delete_record, "DELETE", s.Result,
      tags=RECORDS)

# Anything else under our prefix, in any method, still answers JSON (404, or 405 where another method
# fits); not in the document.
bp.add_any_method_rule("/<bx_any:subpath>", "not_found", c.not_found, merge_slashes=False)
