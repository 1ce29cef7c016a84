"""The contacts of a deal, a lead or a company, and the companies of a contact: read and replace, in order.

Bitrix24's side (each ``items.get`` answers ``[{"CONTACT_ID": 55, "SORT": 100, "ROLE_ID": 0, "IS_PRIMARY": "Y"}]``
with int values; ``items.set`` replaces the whole set, contacts not listed are unlinked; ``items.delete`` unlinks
them all):

- deals: ``crm.deal.contact.items.{get,set,delete}``
  (https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-get.html,
  https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-set.html,
  https://apidocs.bitrix24.com/api-reference/crm/deals/contacts/crm-deal-contact-items-delete.html);
- leads: ``crm.lead.contact.items.*``
  (https://apidocs.bitrix24.com/api-reference/crm/leads/management-communication/crm-lead-contact-items-set.html);
- companies: ``crm.company.contact.items.*``
  (https://apidocs.bitrix24.com/api-reference/crm/companies/contacts/crm-company-contact-items-set.html);
- a contact's companies: ``crm.contact.company.items.*`` with ``COMPANY_ID`` rows
  (https://apidocs.bitrix24.com/api-reference/crm/contacts/company/crm-contact-company-items-set.html).

``items.set`` makes the first ``IS_PRIMARY: "Y"`` primary (the first item when none says so) and numbers
``SORT`` ``(i+1)*10`` when none is given. We send ``SORT`` ourselves in the order the caller listed, refuse a
list with two primaries (the portal would silently pick one), and answer the links as they are after the write.
A company's contacts are the same links as the contacts' companies (one ``IS_PRIMARY`` per link, the contact's
primary company): there several contacts may say ``"Y"``.
An empty list unlinks everything through ``items.delete``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .bitrix24_service import bx_call


@dataclass(frozen=True)
class LinkKind:
    prefix: str  # crm.deal.contact
    key: str  # CONTACT_ID, or COMPANY_ID for a contact's companies
    plural: str  # the body's list: "contacts" or "companies"
    # One primary among the owner's links. Not for a company's contacts: IS_PRIMARY there says whether the
    # company is the contact's primary company, so several contacts can say "Y".
    single_primary: bool = True


KINDS = {
    "deals": LinkKind("crm.deal.contact", "CONTACT_ID", "contacts"),
    "leads": LinkKind("crm.lead.contact", "CONTACT_ID", "contacts"),
    "companies": LinkKind("crm.company.contact", "CONTACT_ID", "contacts", single_primary=False),
    "contacts": LinkKind("crm.contact.company", "COMPANY_ID", "companies"),
}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def ordered(rows: Any) -> list[dict[str, Any]]:
    """The links in their order (SORT, then as listed), primary first among equals."""
    rows = rows if isinstance(rows, list) else list(rows.values()) if isinstance(rows, dict) else []
    rows = [r for r in rows if isinstance(r, dict)]
    return sorted(rows, key=lambda r: _int(r.get("SORT")))


def get_links(kind: LinkKind, owner_id: int, *, client_id: int) -> list[dict[str, Any]]:
    return ordered(bx_call(f"{kind.prefix}.items.get", {"id": owner_id}, client_id=client_id).get("result"))


def set_links(kind: LinkKind, owner_id: int, items: list[dict[str, Any]], *, client_id: int) -> list[dict[str, Any]]:
    """Replace the links with ``items`` (already checked: ids, at most one primary), in their order."""
    if not items:
        bx_call(f"{kind.prefix}.items.delete", {"id": owner_id}, client_id=client_id)
        return get_links(kind, owner_id, client_id=client_id)
    sent = []
    for i, item in enumerate(items):
        row = {kind.key: item[kind.key], "SORT": item.get("SORT", (i + 1) * 10)}
        if "IS_PRIMARY" in item:
            row["IS_PRIMARY"] = item["IS_PRIMARY"]
        sent.append(row)
    bx_call(f"{kind.prefix}.items.set", {"id": owner_id, "items": sent}, client_id=client_id)
    return get_links(kind, owner_id, client_id=client_id)
