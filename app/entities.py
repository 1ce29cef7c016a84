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
    # entityTypeId (0: not a CRM object), see https://apidocs.bitrix24.com/api-reference/crm/data-types.html#object_type
    type_id: int
    label: str  # singular, for messages: "contact"
    upsert: bool = False  # crm.duplicate.findbycomm can find it by e-mail or phone
    camel: bool = False  # crm.item.*: camelCase fields, results wrapped in "item" / "items"
    # What differs on other method families (tasks.task.*, crm.item.*); the defaults are legacy crm.*'s.
    id_param: str = "id"  # the record's id in get/update/delete: tasks.task.* take "taskId"
    wrapper: str | None = None  # one record comes back as {"result": {wrapper: {...}}}: "task", "item"
    list_wrapper: str | None = None  # list rows come back as {"result": {list_wrapper: [...]}}: "tasks", "items"
    camel_output: bool = False  # answers' keys are camelCase ("id") though the names sent are UPPER_CASE
    scope: str = "crm"  # the webhook permission the methods need
    event_base: str | None = None  # event names' stem when not ONCRM<type_name>: "ONTASK"
    event_fields: tuple[str, ...] = ("FIELDS",)  # where an event's data holds the record's ID, first found wins
    origin_ids: bool = True  # ORIGIN_ID/ORIGINATOR_ID mark a create, so a rerun finds it instead of making two
    actions: tuple[tuple[str, str], ...] = ()  # our action name -> the method's, where they differ

    def method(self, action: str) -> str:
        return f"{self.prefix}.{dict(self.actions).get(action, action)}"

    @property
    def row_id(self) -> str:
        """The id's key in the records the portal answers with."""
        return "id" if self.camel or self.camel_output else "ID"

    @property
    def id_field(self) -> str:
        """The id's name in a filter or an order."""
        return "id" if self.camel else "ID"

    @property
    def event_prefix(self) -> str:
        return self.event_base or f"ONCRM{self.type_name}"

    @property
    def events(self) -> tuple[str, str, str]:
        return (f"{self.event_prefix}ADD", f"{self.event_prefix}UPDATE", f"{self.event_prefix}DELETE")

    def valid_field_name(self, name: str) -> bool:
        # fullmatch: "$" alone would let "NAME\n" through
        return bool((ITEM_FIELD_NAME if self.camel else LEGACY_FIELD_NAME).fullmatch(name))


def smart_process(type_id: int) -> Entity:
    """The entity for one smart process (``crm.item.*`` with ``entityTypeId``)."""
    return Entity("items", "crm.item", f"DYNAMIC_{type_id}", type_id, "item", camel=True, wrapper="item",
                  list_wrapper="items", origin_ids=False)


# Tasks (tasks.task.*, scope task): UPPER_CASE names in fields, filter, select and order, answers with
# camelCase keys wrapped in "task" / "tasks", the id as "taskId", events ONTASKADD/UPDATE/DELETE whose
# data holds FIELDS_AFTER / FIELDS_BEFORE: https://apidocs.bitrix24.com/api-reference/tasks/index.html,
# https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-add.html,
# https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-list.html,
# https://apidocs.bitrix24.com/api-reference/tasks/events-tasks/on-task-add.html
TASKS = Entity("tasks", "tasks.task", "TASK", 0, "task", id_param="taskId", wrapper="task", list_wrapper="tasks",
               camel_output=True, scope="task", event_base="ONTASK", event_fields=("FIELDS_AFTER", "FIELDS_BEFORE"),
               origin_ids=False, actions=(("fields", "getFields"),))


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity("contacts", "crm.contact", "CONTACT", 3, "contact", upsert=True),
        Entity("deals", "crm.deal", "DEAL", 2, "deal"),
        Entity("leads", "crm.lead", "LEAD", 1, "lead", upsert=True),
        Entity("companies", "crm.company", "COMPANY", 4, "company", upsert=True),
        Entity("activities", "crm.activity", "ACTIVITY", 6, "activity"),
        TASKS,
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


def entity_for_method(method: str) -> Entity | None:
    """``tasks.task.list`` -> the tasks entity, ``crm.item.list`` -> a smart process (None when unknown):
    how that method family wraps, names and keys its records."""
    prefix = method.rsplit(".", 1)[0].lower()
    if prefix == "crm.item":
        return smart_process(FIRST_SMART_PROCESS_TYPE)
    return next((e for e in ENTITIES.values() if e.prefix == prefix), None)


def event_record_id(entity: Entity | None, data: dict) -> object:
    """The record's ID in an event's data (None when absent): ``FIELDS.ID`` for CRM events; for task events
    ``FIELDS_AFTER.ID``, or ``FIELDS_BEFORE.ID`` on a delete (the other one is the string "undefined")."""
    for key in entity.event_fields if entity else ("FIELDS",):
        fields = data.get(key)
        if isinstance(fields, dict) and fields.get("ID") is not None:
            return fields["ID"]
    return None
