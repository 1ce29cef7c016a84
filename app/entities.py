"""The one entity table: every CRM entity our API exposes, written once.

Routes, controllers, the event receiver, the docs and the tests all read this table; adding an
entity is adding a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Legacy crm.* field names are UPPER_CASE, user fields UF_CRM_*
# (https://apidocs.bitrix24.com/api-reference/crm/contacts/userfield/crm-contact-userfield-add.html);
# crm.item.* names are camelCase, user fields ufCrm128_*
# (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html).
LEGACY_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
ITEM_FIELD_NAME = re.compile(r"^[a-z][A-Za-z0-9_]*$")
# https://apidocs.bitrix24.com/api-reference/crm/data-types.html#object_type
FIRST_SMART_PROCESS_TYPE = 128  # smart-process entityTypeIds start here


@dataclass(frozen=True)
class Entity:
    name: str  # URL segment: "contacts"
    prefix: str  # Bitrix24 method prefix: "crm.contact"
    type_name: str  # entityTypeName: "CONTACT"
    type_id: int  # entityTypeId, see https://apidocs.bitrix24.com/api-reference/crm/data-types.html#object_type
    label: str  # singular, for messages: "contact"
    upsert: bool = False  # crm.duplicate.findbycomm can find it by e-mail or phone
    camel: bool = False  # crm.item.*: camelCase fields, results wrapped in "item" / "items"

    def method(self, action: str) -> str:
        return f"{self.prefix}.{action}"

    @property
    def event_prefix(self) -> str:
        return f"ONCRM{self.type_name}"

    @property
    def events(self) -> tuple[str, str, str]:
        return (f"{self.event_prefix}ADD", f"{self.event_prefix}UPDATE", f"{self.event_prefix}DELETE")

    def valid_field_name(self, name: str) -> bool:
        # fullmatch: "$" alone would let "NAME\n" through
        return bool((ITEM_FIELD_NAME if self.camel else LEGACY_FIELD_NAME).fullmatch(name))


def smart_process(type_id: int) -> Entity:
    """The entity for one smart process (``crm.item.*`` with ``entityTypeId``)."""
    return Entity("items", "crm.item", f"DYNAMIC_{type_id}", type_id, "item", camel=True)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity("contacts", "crm.contact", "CONTACT", 3, "contact", upsert=True),
        Entity("deals", "crm.deal", "DEAL", 2, "deal"),
        Entity("leads", "crm.lead", "LEAD", 1, "lead", upsert=True),
        Entity("companies", "crm.company", "COMPANY", 4, "company", upsert=True),
        Entity("activities", "crm.activity", "ACTIVITY", 6, "activity"),
    )
}


def entity_for_event(event_name: str) -> Entity | None:
    """``ONCRMDEALUPDATE`` -> the deals entity (None for events about anything else)."""
    upper = event_name.upper()
    for entity in ENTITIES.values():
        if upper.startswith(entity.event_prefix) and upper[len(entity.event_prefix) :] in (
            "ADD",
            "UPDATE",
            "DELETE",
            "MOVETOCATEGORY",
        ):
            return entity
    return None
