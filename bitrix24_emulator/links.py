"""Deal and lead contacts, and the contact <-> company links: ``crm.deal.contact.*``, ``crm.lead.contact.*``,
``crm.contact.company.*`` and ``crm.company.contact.*``; plus ``CONTACT_IDS``/``CONTACT_ID`` on deals and leads and
``COMPANY_IDS``/``COMPANY_ID`` on contacts (``crm.py`` calls :meth:`State.after_write` and :meth:`State.forget`).

Sources:
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-add.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-delete.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-fields.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-get.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-set.html,
https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-delete.html,
https://apidocs.bitrix24.com/api-reference/crm/leads/management-communication/crm-lead-contact-add.html (and the
other pages there), https://apidocs.bitrix24.com/api-reference/crm/contacts/company/crm-contact-company-add.html
(and the other pages there), https://apidocs.bitrix24.com/api-reference/crm/companies/contacts/crm-company-contact-add.html
(and the other pages there), https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-update.html (CONTACT_IDS
"is completely replaced"), https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-list.html (CONTACT_IDS is
not returned), https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-add.html (COMPANY_ID is "the main
company", COMPANY_IDS the linked ones); a real portal's crm.company.contact.items.get answer recorded in
leshchenko1979/fast_bitrix24 (tests/real_responses/crm_company_contact_items_get.py: int ids, two rows both "Y").

Facts from the docs: rows are ``{"CONTACT_ID": 55, "SORT": 10, "ROLE_ID": 0, "IS_PRIMARY": "Y"}`` with real ints;
``add`` answers ``false`` when the contact is already linked (and then changes nothing, SORT and IS_PRIMARY
included) and makes the new link primary when there is none; ``items.set`` replaces the set, the first ``Y`` wins,
with no ``Y`` the first item is primary, ``SORT`` defaults to ``(i + 1) * 10``; ``delete`` answers ``false`` when the
contact was not linked; ``items.delete`` removes every link; errors have an empty code and HTTP 400.

Choices where the docs are silent (say so if a real portal differs):

- ``IS_PRIMARY: "Y"`` on ``add`` makes the new link primary and demotes the old one.
- Removing the primary link promotes the first remaining one in SORT order.
- A missing ``SORT`` on ``add`` is the largest SORT so far plus 10.
- Contacts and companies named in links are not checked for existence (only the owner is: "Not found.").
- One link set between contacts and companies, seen from both sides: a row's SORT and IS_PRIMARY belong to the
  contact (its main company), so the company view may show several "Y" rows (as the recorded real answer does).
  Writes through ``crm.company.contact.*`` set the row's SORT and make the company the contact's main one when
  ``IS_PRIMARY`` is "Y" (or when the contact had none).
- The deprecated ``CONTACT_ID`` of a deal or lead is always its primary contact and ``COMPANY_ID`` of a contact its
  main company. Sent alone, ``CONTACT_ID``/``COMPANY_ID`` links that record and makes it primary; sent empty on
  update, it unlinks the primary one (the next becomes primary). ``CONTACT_IDS``/``COMPANY_IDS`` replace the set.
- The legacy error texts of the deal pages are used for all four families (the pages differ only in a final dot).
"""

from __future__ import annotations

import sys

from .errors import crm_error
from .phpform import array_items, array_values, is_array, php_int, php_string

OWNERS = {"deal": "contact", "lead": "contact", "contact": "company"}  # owner entity -> linked entity
ENTITY_BY_TYPE_ID = {1: "lead", 2: "deal", 3: "contact", 4: "company"}
FAMILY = {"crm.deal.contact": "deal", "crm.lead.contact": "lead", "crm.contact.company": "contact",
          "crm.company.contact": "company"}
ACTIONS = ("add", "delete", "fields", "items.get", "items.set", "items.delete")
METHODS = frozenset(f"{prefix}.{action}" for prefix in FAMILY for action in ACTIONS)
# The deprecated single field on the owner that mirrors its primary link, and the write-only list field.
SINGLE_FIELD = {"deal": "CONTACT_ID", "lead": "CONTACT_ID", "contact": "COMPANY_ID"}
LIST_FIELD = {"deal": "CONTACT_IDS", "lead": "CONTACT_IDS", "contact": "COMPANY_IDS"}


def _field(type_: str, title: str, required: bool = False) -> dict:
    return {"type": type_, "isRequired": required, "isReadOnly": False, "isImmutable": False, "isMultiple": False,
            "isDynamic": False, "title": title}


def describe(linked_key: str) -> dict:
    """crm.deal.contact.fields and friends (the deal page's answer, with the linked id's name)."""
    title = "Contact" if linked_key == "CONTACT_ID" else "Company"
    return {"SORT": _field("integer", "Sorting"), "IS_PRIMARY": _field("char", "Primary"),
            linked_key: _field("integer", title, required=True)}


def _entity(owner_type) -> str:
    if isinstance(owner_type, int) or (isinstance(owner_type, str) and owner_type.isdigit()):
        return ENTITY_BY_TYPE_ID.get(int(owner_type), "")
    return str(owner_type).lower()


def _ids(value) -> list[int]:
    """An id list as sent (array, or one scalar): positive ints, first occurrence kept."""
    out: list[int] = []
    for item in array_values(value) if is_array(value) else [value]:
        number = 0 if is_array(item) else php_int(item)
        if number > 0 and number not in out:
            out.append(number)
    return out


class State:
    """Bindings of each owner, kept in the order they were made: ``{(owner entity, owner id): [row, ...]}``,
    a row being ``{"ID": linked id, "SORT": int, "ROLE_ID": 0, "IS_PRIMARY": "Y"|"N"}``. Contact <-> company
    links are stored once, under the contact."""

    def __init__(self, portal):
        self.portal = portal
        self.bindings: dict[tuple[str, int], list[dict]] = {}

    # ---- the API other families use -----------------------------------------------------------------

    def contact_ids(self, owner_type, owner_id: int) -> list[int]:
        """Contact ids of a deal or lead (``"deal"``/``2``, ``"lead"``/``1``) in SORT order, primary or not."""
        return [row["ID"] for row in self._sorted(_entity(owner_type), int(owner_id))]

    def set_contact_ids(self, owner_type, owner_id: int, contact_ids) -> None:
        """Replace the contacts of a deal or lead, as ``CONTACT_IDS`` does: the first is primary, SORT 10, 20..."""
        entity = _entity(owner_type)
        self._replace(entity, int(owner_id), [{"ID": i} for i in _ids(contact_ids)])
        self._refresh(entity, int(owner_id))

    def company_ids(self, contact_id: int) -> list[int]:
        return [row["ID"] for row in self._sorted("contact", int(contact_id))]

    def after_write(self, entity: str, entity_id: int, fields_param, creating: bool) -> None:
        """Apply ``CONTACT_IDS``/``CONTACT_ID`` (deal, lead) or ``COMPANY_IDS``/``COMPANY_ID`` (contact) from an
        add or update's ``fields``."""
        if entity not in OWNERS:
            return
        fields = dict(array_items(fields_param))
        list_value = fields.get(LIST_FIELD[entity])
        single = SINGLE_FIELD[entity]
        if is_array(list_value):
            self._replace(entity, entity_id, [{"ID": i} for i in _ids(list_value)])
        elif single in fields and not is_array(fields[single]):
            wanted = php_int(fields[single])
            rows = self.bindings.setdefault((entity, entity_id), [])
            if wanted > 0:
                row = next((r for r in rows if r["ID"] == wanted), None)
                if row is None:
                    row = {"ID": wanted, "SORT": self._next_sort(rows), "ROLE_ID": 0, "IS_PRIMARY": "N"}
                    rows.append(row)
                self._make_primary(rows, row)
            elif not creating:
                primary = next((r for r in rows if r["IS_PRIMARY"] == "Y"), None)
                if primary is not None:
                    self._remove(entity, entity_id, primary["ID"])
        self._refresh(entity, entity_id)

    def forget(self, entity: str, entity_id: int) -> None:
        """A deleted record takes its links with it (owners keep their other links; primaries are promoted)."""
        self.bindings.pop((entity, entity_id), None)
        linked_from = [owner for owner, linked in OWNERS.items() if linked == entity]
        for (owner, owner_id), rows in list(self.bindings.items()):
            if owner in linked_from and any(r["ID"] == entity_id for r in rows):
                self._remove(owner, owner_id, entity_id)
                self._refresh(owner, owner_id)

    # ---- link rules ------------------------------------------------------------------------------------

    def _sorted(self, entity: str, owner_id: int) -> list[dict]:
        return sorted(self.bindings.get((entity, owner_id), []), key=lambda r: r["SORT"])

    @staticmethod
    def _next_sort(rows: list[dict]) -> int:
        return max((r["SORT"] for r in rows), default=0) + 10

    @staticmethod
    def _make_primary(rows: list[dict], chosen: dict) -> None:
        for row in rows:
            row["IS_PRIMARY"] = "Y" if row is chosen else "N"

    def _replace(self, entity: str, owner_id: int, items: list[dict]) -> None:
        """items.set: SORT defaults to (i + 1) * 10; the first "Y" wins; with none the first is primary."""
        rows: list[dict] = []
        for i, item in enumerate(items):
            if any(r["ID"] == item["ID"] for r in rows):
                continue
            sort = item.get("SORT")
            rows.append({"ID": item["ID"], "SORT": (i + 1) * 10 if sort is None else sort, "ROLE_ID": 0,
                         "IS_PRIMARY": "Y" if item.get("IS_PRIMARY") == "Y" else "N"})
        primary = next((r for r in rows if r["IS_PRIMARY"] == "Y"), rows[0] if rows else None)
        self._make_primary(rows, primary)
        if rows:
            self.bindings[(entity, owner_id)] = rows
        else:
            self.bindings.pop((entity, owner_id), None)

    def _remove(self, entity: str, owner_id: int, linked_id: int) -> bool:
        rows = self.bindings.get((entity, owner_id), [])
        row = next((r for r in rows if r["ID"] == linked_id), None)
        if row is None:
            return False
        rows.remove(row)
        if row["IS_PRIMARY"] == "Y" and rows:
            self._make_primary(rows, sorted(rows, key=lambda r: r["SORT"])[0])
        if not rows:
            self.bindings.pop((entity, owner_id), None)
        return True

    def _refresh(self, entity: str, owner_id: int) -> None:
        """Keep the owner's deprecated single field equal to its primary link."""
        record = self.portal.store.records.get(entity, {}).get(owner_id)
        if record is None:
            return
        primary = next((r for r in self.bindings.get((entity, owner_id), []) if r["IS_PRIMARY"] == "Y"), None)
        record[SINGLE_FIELD[entity]] = None if primary is None else str(primary["ID"])

    # ---- methods ---------------------------------------------------------------------------------------

    def owner(self, entity: str, params: dict, quoted: bool) -> int:
        raw = params.get("id", params.get("ID"))
        owner_id = 0 if raw is None or is_array(raw) else php_int(raw)
        if owner_id <= 0:
            name = "'ownerEntityID'" if quoted else "ownerEntityID"
            raise crm_error(f"The parameter {name} is invalid or not defined.")
        if owner_id not in self.portal.store.records.get(entity, {}):
            raise crm_error("Not found.")
        return owner_id


def _row_out(linked_key: str, row: dict) -> dict:
    return {linked_key: row["ID"], "SORT": row["SORT"], "ROLE_ID": row["ROLE_ID"], "IS_PRIMARY": row["IS_PRIMARY"]}


def _item(value, linked_key: str) -> dict | None:
    """One binding as sent: ``{CONTACT_ID, SORT, IS_PRIMARY}``; None when the id is missing or not positive."""
    if not isinstance(value, dict):
        return None
    linked = value.get(linked_key)
    linked_id = 0 if linked is None or is_array(linked) else php_int(linked)
    if linked_id <= 0:
        return None
    item = {"ID": linked_id}
    if value.get("SORT") is not None and not is_array(value["SORT"]):
        item["SORT"] = php_int(value["SORT"])
    if value.get("IS_PRIMARY") is not None and not is_array(value["IS_PRIMARY"]):
        item["IS_PRIMARY"] = "Y" if (php_string(value["IS_PRIMARY"]) or "").upper() == "Y" else "N"
    return item


def call(method: str, params: dict, portal, context) -> object:
    prefix = next(p for p in FAMILY if method.startswith(p + "."))
    action = method[len(prefix) + 1:]
    entity = FAMILY[prefix]
    linked_key = "COMPANY_ID" if entity == "contact" else "CONTACT_ID"
    if action == "fields":
        return describe(linked_key)
    state: State = portal.state(sys.modules[__name__])
    owner_id = state.owner(entity, params, quoted=action in ("add", "delete"))
    if entity == "company":
        return _company_view(state, action, owner_id, params)
    if action == "items.get":
        return [_row_out(linked_key, r) for r in state._sorted(entity, owner_id)]
    if action == "items.delete":
        state.bindings.pop((entity, owner_id), None)
        state._refresh(entity, owner_id)
        return True
    if action == "items.set":
        items = params.get("items", params.get("ITEMS"))
        if not is_array(items):
            raise crm_error("The parameter items must be array.")
        parsed = [i for i in (_item(v, linked_key) for v in array_values(items)) if i is not None]
        state._replace(entity, owner_id, parsed)
        state._refresh(entity, owner_id)
        return True
    fields = params.get("fields", params.get("FIELDS"))
    if not is_array(fields):
        raise crm_error("The parameter 'fields' must be array." if action == "add" else
                        "The parameter 'item' must be array.")
    item = _item(dict(array_items(fields)), linked_key)
    if item is None:
        raise crm_error("The parameter 'fields' is not valid.")
    if action == "delete":
        removed = state._remove(entity, owner_id, item["ID"])
        state._refresh(entity, owner_id)
        return removed
    rows = state.bindings.setdefault((entity, owner_id), [])
    if any(r["ID"] == item["ID"] for r in rows):
        return False
    row = {"ID": item["ID"], "SORT": item.get("SORT", State._next_sort(rows)), "ROLE_ID": 0, "IS_PRIMARY": "N"}
    rows.append(row)
    if item.get("IS_PRIMARY") == "Y" or not any(r["IS_PRIMARY"] == "Y" for r in rows):
        State._make_primary(rows, row)
    state._refresh(entity, owner_id)
    return True


def _company_view(state: State, action: str, company_id: int, params: dict) -> object:
    """crm.company.contact.*: the contact -> company links seen from the company."""
    def linked_contacts() -> list[tuple[int, dict]]:
        found = [(owner_id, row) for (owner, owner_id), rows in state.bindings.items() if owner == "contact"
                 for row in rows if row["ID"] == company_id]
        return sorted(found, key=lambda pair: (pair[1]["SORT"], pair[0]))

    def unlink(contact_id: int) -> bool:
        removed = state._remove("contact", contact_id, company_id)
        state._refresh("contact", contact_id)
        return removed

    def link(item: dict) -> bool:
        rows = state.bindings.setdefault(("contact", item["ID"]), [])
        row = next((r for r in rows if r["ID"] == company_id), None)
        created = row is None
        if created:
            row = {"ID": company_id, "SORT": State._next_sort(rows), "ROLE_ID": 0, "IS_PRIMARY": "N"}
            rows.append(row)
        if "SORT" in item:
            row["SORT"] = item["SORT"]
        if item.get("IS_PRIMARY") == "Y" or not any(r["IS_PRIMARY"] == "Y" for r in rows):
            State._make_primary(rows, row)
        state._refresh("contact", item["ID"])
        return created

    if action == "items.get":
        return [_row_out("CONTACT_ID", row) | {"CONTACT_ID": contact_id} for contact_id, row in linked_contacts()]
    if action == "items.delete":
        for contact_id, _ in linked_contacts():
            unlink(contact_id)
        return True
    if action == "items.set":
        items = params.get("items", params.get("ITEMS"))
        if not is_array(items):
            raise crm_error("The parameter items must be array.")
        parsed = [i for i in (_item(v, "CONTACT_ID") for v in array_values(items)) if i is not None]
        for i, item in enumerate(parsed):
            item.setdefault("SORT", (i + 1) * 10)
        wanted = {i["ID"] for i in parsed}
        for contact_id, _ in linked_contacts():
            if contact_id not in wanted:
                unlink(contact_id)
        for item in parsed:
            link(item)
        return True
    fields = params.get("fields", params.get("FIELDS"))
    if not is_array(fields):
        raise crm_error("The parameter 'fields' must be array." if action == "add" else
                        "The parameter 'item' must be array.")
    item = _item(dict(array_items(fields)), "CONTACT_ID")
    if item is None:
        raise crm_error("The parameter 'fields' is not valid.")
    if action == "delete":
        return unlink(item["ID"])
    if any(contact_id == item["ID"] for contact_id, _ in linked_contacts()):
        return False
    return link(item)
