"""The Blueprint and its URL rules. Views live in the controllers.

Ids are taken as strings and checked in the controller so a bad id gets our JSON 400 instead of
the routing layer's 404 page; ``<entity>`` is checked against the entity table the same way.
"""

from flask import Blueprint

from ..controllers import bitrix24_controller as c
from ..controllers import items_controller as items
from ..controllers.auth import require_api_auth
from ..controllers.errors import register_error_handlers
from ..controllers.params import limit_body_size

bp = Blueprint("bitrix24", __name__)
bp.before_request(limit_body_size)
bp.before_request(require_api_auth)
register_error_handlers(bp)

CLIENT = "/clients/<client_id>"

bp.add_url_rule(f"{CLIENT}/config", "save_config", c.save_config, methods=["POST"])
bp.add_url_rule(f"{CLIENT}/config", "get_config", c.get_config, methods=["GET"])
bp.add_url_rule(f"{CLIENT}/config", "delete_config", c.delete_config, methods=["DELETE"])
bp.add_url_rule(f"{CLIENT}/config/debug", "debug_config", c.debug_config, methods=["GET"])

bp.add_url_rule("/webhook", "receive_event", c.receive_event_view, methods=["POST"])
bp.add_url_rule(f"{CLIENT}/webhook", "receive_client_event", c.receive_client_event_view, methods=["POST"])

bp.add_url_rule(f"{CLIENT}/events", "list_events", c.list_events, methods=["GET"])
bp.add_url_rule(f"{CLIENT}/events/<event_id>/replay", "replay_event", c.replay_event, methods=["POST"])
ITEMS = f"{CLIENT}/items/<type_id>"
bp.add_url_rule(ITEMS, "list_items", items.list_items, methods=["GET"])
bp.add_url_rule(ITEMS, "create_item", items.create_item, methods=["POST"])
bp.add_url_rule(f"{ITEMS}/fields", "item_fields", items.item_fields, methods=["GET"])
bp.add_url_rule(f"{ITEMS}/<item_id>", "get_item", items.get_item, methods=["GET"])
bp.add_url_rule(f"{ITEMS}/<item_id>", "update_item", items.update_item, methods=["PATCH"])
bp.add_url_rule(f"{ITEMS}/<item_id>", "delete_item", items.delete_item, methods=["DELETE"])

bp.add_url_rule(f"{CLIENT}/batch", "raw_batch", c.raw_batch, methods=["POST"])
bp.add_url_rule(f"{CLIENT}/<entity>/batch", "write_many", c.write_many, methods=["POST"])
bp.add_url_rule(f"{CLIENT}/<entity>/fields", "entity_fields", c.entity_fields, methods=["GET"])
bp.add_url_rule(f"{CLIENT}/<entity>/upsert", "upsert_record", c.upsert_record, methods=["PUT"])
bp.add_url_rule(f"{CLIENT}/<entity>", "list_records", c.list_records, methods=["GET"])
bp.add_url_rule(f"{CLIENT}/<entity>", "create_record", c.create_record, methods=["POST"])
bp.add_url_rule(f"{CLIENT}/<entity>/<record_id>", "get_record", c.get_record, methods=["GET"])
bp.add_url_rule(f"{CLIENT}/<entity>/<record_id>", "update_record", c.update_record, methods=["PATCH"])
bp.add_url_rule(f"{CLIENT}/<entity>/<record_id>", "delete_record", c.delete_record, methods=["DELETE"])

# Anything else under our prefix still answers JSON (404, or 405 where another method fits).
ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]
bp.add_url_rule("/", "not_found", c.not_found, methods=ANY)
bp.add_url_rule("/<path:subpath>", "not_found", c.not_found, methods=ANY)
