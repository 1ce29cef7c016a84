"""Field metadata of the legacy CRM entities and activities, as ``crm.*.fields`` describes them, and of
smart-process items as ``crm.item.fields`` does.

Only the fields a typical integration touches are modelled; the shape of each description follows
https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-fields.html. Order matters:
``get``/``list`` emit keys in this order.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

MULTI_FIELDS = ("PHONE", "EMAIL", "WEB", "IM", "LINK")

# Default VALUE_TYPE when an item leaves it out (the portal's source, modules/crm/classes/general/restservice.php;
# the value types: https://apidocs.bitrix24.com/api-reference/crm/data-types.html#crm_multifield).
MULTI_DEFAULT_TYPE = {"PHONE": "WORK", "EMAIL": "WORK", "WEB": "WORK", "IM": "OTHER", "LINK": "WORK"}

# Types whose values are numbers for filtering and sorting.
NUMERIC_TYPES = {"integer", "double", "user", "crm_company", "crm_contact", "crm_lead", "crm_category",
                 "crm_quote", "crm_enum_ownertype", "crm_enum_activitytype", "crm_enum_activitydirection",
                 "crm_enum_activitypriority", "crm_enum_activitystatus", "crm_enum_contenttype"}
# List-valued fields: left out of "*" selects, never sorted on.
COLLECTION_TYPES = {"crm_multifield", "crm_activity_communication"}
# LIKE on these quietly becomes "=" (https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html).
EXACT_ONLY_TYPES = {"crm_status", "crm_company", "crm_contact"}


@dataclass(frozen=True)
class Field:
    """One field as ``crm.*.fields`` describes it.

    A user field (``dynamic``) also carries its labels in the portal language, its ``settings`` (an
    object, as a real portal sends it) and, for an enumeration, its ``items`` as ``(ID, VALUE)``
    pairs; ``crm.*.fields`` then shows ``listLabel``/``formLabel``/``filterLabel``/``settings`` and
    ``items: [{ID, VALUE}]``, with ``title`` = the field's code
    (https://apidocs.bitrix24.com/api-reference/crm/companies/crm-company-fields.html).
    """

    type: str
    title: str
    required: bool = False
    read_only: bool = False
    immutable: bool = False
    multiple: bool = False
    status_type: str | None = None
    dynamic: bool = False
    list_label: str | None = None
    form_label: str | None = None
    filter_label: str | None = None
    settings: object = None
    items: tuple | None = None
    default: object = None  # a new record's value when add leaves the field out (user fields)

    __hash__ = None  # settings is a dict: a Field is compared, never hashed

    def describe(self) -> dict:
        info = {
            "type": self.type,
            "isRequired": self.required,
            "isReadOnly": self.read_only,
            "isImmutable": self.immutable,
            "isMultiple": self.multiple,
            "isDynamic": self.dynamic,
        }
        if self.dynamic and self.items is not None:
            info["items"] = [{"ID": item_id, "VALUE": value} for item_id, value in self.items]
        info["title"] = self.title
        if self.status_type:
            info["statusType"] = self.status_type
        if self.dynamic:
            settings = copy.deepcopy(self.settings) if self.settings is not None else {}
            info.update(listLabel=self.list_label if self.list_label is not None else self.title,
                        formLabel=self.form_label if self.form_label is not None else self.title,
                        filterLabel=self.filter_label if self.filter_label is not None else self.title,
                        settings=settings)
        return info

    @property
    def is_multifield(self) -> bool:
        return self.type == "crm_multifield"

    @property
    def is_collection(self) -> bool:
        return self.type in COLLECTION_TYPES


def _f(type_, title, **kw) -> Field:
    return Field(type_, title, **kw)


_ID = {"ID": _f("integer", "ID", read_only=True)}

_PERSON = {
    "HONORIFIC": _f("crm_status", "Salutation", status_type="HONORIFIC"),
    "NAME": _f("string", "Name"),
    "SECOND_NAME": _f("string", "Second name"),
    "LAST_NAME": _f("string", "Last name"),
}

_UTM = {name: _f("string", name.replace("_", " ").title()) for name in
        ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")}

_OWNERSHIP = {
    "ASSIGNED_BY_ID": _f("user", "Responsible person"),
    "CREATED_BY_ID": _f("user", "Created by", read_only=True),
    "MODIFY_BY_ID": _f("user", "Modified by", read_only=True),
    "DATE_CREATE": _f("datetime", "Created on", read_only=True),
    "DATE_MODIFY": _f("datetime", "Modified on", read_only=True),
}

_ORIGIN = {
    "ORIGINATOR_ID": _f("string", "External source"),
    "ORIGIN_ID": _f("string", "Item ID in data source"),
    "ORIGIN_VERSION": _f("string", "Original version"),
}

_ACTIVITY = {
    "LAST_ACTIVITY_TIME": _f("datetime", "Last activity", read_only=True),
    "LAST_ACTIVITY_BY": _f("user", "Last activity by", read_only=True),
}

_HAS = {
    "HAS_PHONE": _f("char", "Has phone", read_only=True),
    "HAS_EMAIL": _f("char", "Has email", read_only=True),
    "HAS_IMOL": _f("char", "Has Open Channel", read_only=True),
}


def _multi() -> dict:
    return {name: _f("crm_multifield", {"PHONE": "Phone", "EMAIL": "E-mail", "WEB": "Website",
                                         "IM": "Messenger", "LINK": "Link"}[name], multiple=True)
            for name in MULTI_FIELDS}


CONTACT = {
    **_ID, **_PERSON,
    "PHOTO": _f("file", "Photo"),
    "BIRTHDATE": _f("date", "Date of birth"),
    "TYPE_ID": _f("crm_status", "Contact type", status_type="CONTACT_TYPE"),
    "SOURCE_ID": _f("crm_status", "Source", status_type="SOURCE"),
    "SOURCE_DESCRIPTION": _f("string", "Source information"),
    "POST": _f("string", "Position"),
    "ADDRESS": _f("string", "Address"),
    "COMMENTS": _f("string", "Comment"),
    "OPENED": _f("char", "Available to everyone"),
    "EXPORT": _f("char", "Included in export"),
    **_HAS, **_OWNERSHIP,
    "COMPANY_ID": _f("crm_company", "Company"),
    "LEAD_ID": _f("crm_lead", "Lead", read_only=True),
    **_ORIGIN, **_UTM, **_ACTIVITY, **_multi(),
}
for _name in ("NAME", "SECOND_NAME", "LAST_NAME"):
    # crm.contact.fields marks these required although the legacy check needs only one (the portal's source,
    # CCrmContact::CheckFields in modules/crm/classes/general/crm_contact.php).
    CONTACT[_name] = Field("string", CONTACT[_name].title, required=True)

DEAL = {
    **_ID,
    "TITLE": _f("string", "Name"),
    "TYPE_ID": _f("crm_status", "Type", status_type="DEAL_TYPE"),
    "CATEGORY_ID": _f("crm_category", "Pipeline", immutable=True),
    "STAGE_ID": _f("crm_status", "Deal stage", status_type="DEAL_STAGE"),
    "STAGE_SEMANTIC_ID": _f("string", "Stage group", read_only=True),
    "IS_NEW": _f("char", "New deal", read_only=True),
    "IS_RECURRING": _f("char", "Recurring deal"),
    "IS_RETURN_CUSTOMER": _f("char", "Repeat deal", read_only=True),
    "IS_REPEATED_APPROACH": _f("char", "Repeat inquiry", read_only=True),
    "PROBABILITY": _f("integer", "Probability"),
    "CURRENCY_ID": _f("crm_currency", "Currency"),
    "OPPORTUNITY": _f("double", "Amount"),
    "IS_MANUAL_OPPORTUNITY": _f("char", "Manual amount"),
    "TAX_VALUE": _f("double", "Tax rate"),
    "COMPANY_ID": _f("crm_company", "Company"),
    "CONTACT_ID": _f("crm_contact", "Contact"),
    "CONTACT_IDS": _f("crm_contact", "Contacts", multiple=True),  # write-only: crm.py, links.py
    "QUOTE_ID": _f("crm_quote", "Quote", read_only=True),
    "BEGINDATE": _f("date", "Start date"),
    "CLOSEDATE": _f("date", "Estimated close date"),
    "OPENED": _f("char", "Available to everyone"),
    "CLOSED": _f("char", "Closed"),
    "COMMENTS": _f("string", "Comment"),
    **_OWNERSHIP,
    # Who moved the deal to its stage and when (set on add and on each stage change; crm.py), titled as
    # https://apidocs.bitrix24.com/api-reference/crm/deals/crm-deal-fields.html shows them.
    "MOVED_BY_ID": _f("user", "MOVED_BY_ID", read_only=True),
    "MOVED_TIME": _f("datetime", "MOVED_TIME", read_only=True),
    "SOURCE_ID": _f("crm_status", "Source", status_type="SOURCE"),
    "SOURCE_DESCRIPTION": _f("string", "Source information"),
    "LEAD_ID": _f("crm_lead", "Lead", read_only=True),
    "ADDITIONAL_INFO": _f("string", "Additional information"),
    "LOCATION_ID": _f("location", "Location"),
    **_ORIGIN, **_UTM, **_ACTIVITY,
}

LEAD = {
    **_ID,
    "TITLE": _f("string", "Lead name"),
    **_PERSON,
    "BIRTHDATE": _f("date", "Date of birth"),
    "COMPANY_TITLE": _f("string", "Company name"),
    "SOURCE_ID": _f("crm_status", "Source", status_type="SOURCE"),
    "SOURCE_DESCRIPTION": _f("string", "Source information"),
    "STATUS_ID": _f("crm_status", "Status", status_type="STATUS"),
    "STATUS_DESCRIPTION": _f("string", "Status information"),
    "STATUS_SEMANTIC_ID": _f("string", "Status details", read_only=True),
    "POST": _f("string", "Position"),
    "ADDRESS": _f("string", "Address"),
    "ADDRESS_2": _f("string", "Address (Line 2)"),
    "ADDRESS_CITY": _f("string", "City"),
    "ADDRESS_POSTAL_CODE": _f("string", "Postal Code"),
    "ADDRESS_REGION": _f("string", "Region"),
    "ADDRESS_PROVINCE": _f("string", "Province"),
    "ADDRESS_COUNTRY": _f("string", "Country"),
    "ADDRESS_COUNTRY_CODE": _f("string", "Country Code"),
    "ADDRESS_LOC_ADDR_ID": _f("integer", "Location Address ID"),
    "CURRENCY_ID": _f("crm_currency", "Currency"),
    "OPPORTUNITY": _f("double", "Total"),
    "IS_MANUAL_OPPORTUNITY": _f("char", "Manual amount"),
    "OPENED": _f("char", "Available to everyone"),
    "COMMENTS": _f("string", "Comment"),
    **_HAS, **_OWNERSHIP,
    "COMPANY_ID": _f("crm_company", "Company"),
    "CONTACT_ID": _f("crm_contact", "Contact"),
    "CONTACT_IDS": _f("crm_contact", "CONTACT_IDS", multiple=True),  # write-only: crm.py, links.py
    "IS_RETURN_CUSTOMER": _f("char", "Repeat lead", read_only=True),
    "DATE_CLOSED": _f("datetime", "Closed on", read_only=True),
    **_ORIGIN, **_UTM, **_ACTIVITY, **_multi(),
}

COMPANY = {
    **_ID,
    "TITLE": _f("string", "Company name", required=True),
    "COMPANY_TYPE": _f("crm_status", "Company type", status_type="COMPANY_TYPE"),
    "LOGO": _f("file", "Logo"),
    "ADDRESS": _f("string", "Address"),
    "ADDRESS_2": _f("string", "Address (line 2)"),
    "ADDRESS_CITY": _f("string", "City"),
    "ADDRESS_POSTAL_CODE": _f("string", "Postal Code"),
    "ADDRESS_REGION": _f("string", "Region"),
    "ADDRESS_PROVINCE": _f("string", "Province"),
    "ADDRESS_COUNTRY": _f("string", "Country"),
    "ADDRESS_COUNTRY_CODE": _f("string", "Country Code"),
    "ADDRESS_LOC_ADDR_ID": _f("integer", "Location Address ID"),
    "ADDRESS_LEGAL": _f("string", "Legal Address"),
    "REG_ADDRESS": _f("string", "Legal Address"),
    "REG_ADDRESS_2": _f("string", "Legal Address (line 2)"),
    "REG_ADDRESS_CITY": _f("string", "Legal Address City"),
    "REG_ADDRESS_POSTAL_CODE": _f("string", "Legal Address Postal Code"),
    "REG_ADDRESS_REGION": _f("string", "Legal Address Region"),
    "REG_ADDRESS_PROVINCE": _f("string", "Legal Address Province"),
    "REG_ADDRESS_COUNTRY": _f("string", "Legal Address Country"),
    "REG_ADDRESS_COUNTRY_CODE": _f("string", "Legal Address Country Code"),
    "REG_ADDRESS_LOC_ADDR_ID": _f("integer", "Legal Address Location ID"),
    "BANKING_DETAILS": _f("string", "Payment details"),
    "INDUSTRY": _f("crm_status", "Industry", status_type="INDUSTRY"),
    "EMPLOYEES": _f("crm_status", "Employees", status_type="EMPLOYEES"),
    "CURRENCY_ID": _f("crm_currency", "Currency"),
    "REVENUE": _f("double", "Annual revenue"),
    "OPENED": _f("char", "Available to everyone"),
    "COMMENTS": _f("string", "Comment"),
    "IS_MY_COMPANY": _f("char", "My company"),
    **_HAS, **_OWNERSHIP,
    "LEAD_ID": _f("crm_lead", "Lead", read_only=True),
    **_ORIGIN, **_UTM, **_ACTIVITY, **_multi(),
}

# crm.activity.fields
# (https://apidocs.bitrix24.com/api-reference/crm/timeline/activities/activity-base/crm-activity-fields.html):
# the legacy UPPER_CASE API like contacts. TYPE_ID: 1 meeting, 2 call, 3 task, 4 email, 5 action, 6 provider.
ACTIVITY = {
    **_ID,
    "OWNER_ID": _f("integer", "Owner ID", required=True),
    "OWNER_TYPE_ID": _f("crm_enum_ownertype", "Owner type", required=True),
    "TYPE_ID": _f("crm_enum_activitytype", "Type", required=True, immutable=True),
    "PROVIDER_ID": _f("string", "Provider"),
    "PROVIDER_TYPE_ID": _f("string", "Provider type"),
    "ASSOCIATED_ENTITY_ID": _f("integer", "Associated entity"),
    "SUBJECT": _f("string", "Subject", required=True),
    "DESCRIPTION": _f("string", "Description"),
    "DESCRIPTION_TYPE": _f("crm_enum_contenttype", "Description type"),
    "START_TIME": _f("datetime", "Start time"),
    "END_TIME": _f("datetime", "End time"),
    "DEADLINE": _f("datetime", "Deadline"),
    "COMPLETED": _f("char", "Completed"),
    "STATUS": _f("crm_enum_activitystatus", "Status", read_only=True),
    "DIRECTION": _f("crm_enum_activitydirection", "Direction"),
    "PRIORITY": _f("crm_enum_activitypriority", "Priority"),
    "LOCATION": _f("string", "Location"),
    "RESPONSIBLE_ID": _f("user", "Responsible person"),
    "AUTHOR_ID": _f("user", "Created by", read_only=True),
    "EDITOR_ID": _f("user", "Modified by", read_only=True),
    "CREATED": _f("datetime", "Created on", read_only=True),
    "LAST_UPDATED": _f("datetime", "Modified on", read_only=True),
    "ORIGINATOR_ID": _f("string", "Data source ID"),
    "ORIGIN_ID": _f("string", "Item ID in data source"),
    "COMMUNICATIONS": _f("crm_activity_communication", "Communications", multiple=True),
}
ACTIVITY_TYPES = range(1, 7)

ENTITIES = {"contact": CONTACT, "deal": DEAL, "lead": LEAD, "company": COMPANY, "activity": ACTIVITY}

# Names used in findbycomm results and event names.
ENTITY_TYPE_NAMES = {"lead": "LEAD", "deal": "DEAL", "contact": "CONTACT", "company": "COMPANY"}


# What a portal stores as SETTINGS of a new ``string`` user field (type handler defaults), as
# crm.*.fields shows them: https://apidocs.bitrix24.com/api-reference/crm/companies/crm-company-fields.html
STRING_SETTINGS = {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0, "DEFAULT_VALUE": ""}


def user_field(name: str, type_: str = "string", **kw) -> Field:
    """A user field; the ``user_fields=`` option makes ``string`` ones labelled with their own code."""
    if type_ == "string":
        kw.setdefault("settings", dict(STRING_SETTINGS))
    for key in ("list_label", "form_label", "filter_label"):
        kw.setdefault(key, name)
    return Field(type_, name, dynamic=True, **kw)


# ---- smart processes (crm.item.*, camelCase) -------------------------------------------------------
# The standard fields of a smart-process item, in the order crm.item.fields lists them
# (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-fields.html and the SPA part of
# https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html); stageSemanticId is
# kept after stageId, as crm.item.get of the other types returns it.

_ITEM_UTM = {name: _f("string", title) for name, title in (
    ("utmSource", "Ad system"), ("utmMedium", "Traffic type"), ("utmCampaign", "Ad campaign ID"),
    ("utmContent", "Campaign contents"), ("utmTerm", "Search term"))}

SMART_PROCESS = {
    "id": _f("integer", "ID", read_only=True),
    "title": _f("string", "Name"),
    "xmlId": _f("string", "External code"),
    "createdTime": _f("datetime", "Created at", read_only=True),
    "updatedTime": _f("datetime", "Updated at", read_only=True),
    "createdBy": _f("user", "Created by", read_only=True),
    "updatedBy": _f("user", "Updated by", read_only=True),
    "assignedById": _f("user", "Assigned to"),
    "opened": _f("boolean", "Publicly available", required=True),
    "webformId": _f("integer", "Created by CRM form"),
    "begindate": _f("date", "Start date"),
    "closedate": _f("date", "End date"),
    "companyId": _f("crm_company", "Company"),
    "contactId": _f("crm_contact", "Contact"),
    "contactIds": _f("crm_contact", "CONTACT_IDS", multiple=True),
    "observers": _f("user", "Observers", multiple=True),
    "categoryId": _f("crm_category", "Pipeline"),
    "movedTime": _f("datetime", "Moved at", read_only=True),
    "movedBy": _f("user", "Moved by", read_only=True),
    "stageId": _f("crm_status", "Stage"),
    "stageSemanticId": _f("string", "Stage group", read_only=True),
    "previousStageId": _f("crm_status", "Previous stage", read_only=True),
    "sourceId": _f("crm_status", "Source", status_type="SOURCE"),
    "sourceDescription": _f("text", "Additional source info"),
    "currencyId": _f("crm_currency", "Currency"),
    "isManualOpportunity": _f("boolean", "Amount calculation mode"),
    "opportunity": _f("double", "Amount"),
    "taxValue": _f("double", "Tax amount"),
    "mycompanyId": _f("crm_company", "Your company details"),
    "lastActivityBy": _f("user", "Last activity in timeline by", read_only=True),
    "lastActivityTime": _f("datetime", "Last activity", read_only=True),
    **_ITEM_UTM,
}

# Smart invoices (entityTypeId 31): the SPA fields plus the invoice number and a comment
# (https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html#invoice).
SMART_INVOICE = {
    **{k: v for k, v in SMART_PROCESS.items() if not k.startswith("utm")},
    "accountNumber": _f("string", "Invoice number"),
    "comments": _f("text", "Comment"),
}

# Estimates (entityTypeId 7): no pipelines; stages come from QUOTE_STATUS
# (https://apidocs.bitrix24.com/api-reference/crm/universal/object-fields.html#quote).
QUOTE = {
    "id": _f("integer", "ID", read_only=True),
    "title": _f("string", "Name"),
    "createdTime": _f("datetime", "Created at", read_only=True),
    "updatedTime": _f("datetime", "Updated at", read_only=True),
    "createdBy": _f("user", "Created by", read_only=True),
    "updatedBy": _f("user", "Updated by", read_only=True),
    "assignedById": _f("user", "Assigned to"),
    "opened": _f("boolean", "Publicly available", required=True),
    "leadId": _f("crm_lead", "Lead"),
    "dealId": _f("crm_deal", "Deal"),
    "companyId": _f("crm_company", "Company"),
    "contactId": _f("crm_contact", "Contact"),
    "contactIds": _f("crm_contact", "CONTACT_IDS", multiple=True),
    "mycompanyId": _f("crm_company", "Your company details"),
    "quoteNumber": _f("string", "Estimate #"),
    "stageId": _f("crm_status", "Stage", status_type="QUOTE_STATUS"),
    "stageSemanticId": _f("string", "Stage group", read_only=True),
    "closed": _f("boolean", "Closed", read_only=True),
    "currencyId": _f("crm_currency", "Currency"),
    "isManualOpportunity": _f("boolean", "Amount calculation mode"),
    "opportunity": _f("double", "Amount"),
    "taxValue": _f("double", "Tax amount"),
    "comments": _f("text", "Comment"),
    "content": _f("text", "Content"),
    "terms": _f("text", "Terms"),
    "begindate": _f("date", "Start date"),
    "closedate": _f("date", "End date"),
    "actualDate": _f("date", "Valid until"),
    "storageTypeId": _f("integer", "Storage type"),
    "webformId": _f("integer", "Created by CRM form"),
    "lastActivityBy": _f("user", "Last activity in timeline by", read_only=True),
    "lastActivityTime": _f("datetime", "Last activity", read_only=True),
    **_ITEM_UTM,
}

# Extra keys crm.item.fields shows for some fields (the crm-item-fields page's example).
ITEM_FIELD_EXTRAS = {
    "companyId": {"settings": {"parentEntityTypeId": 4}},
    "contactId": {"isDeprecated": True},
    "mycompanyId": {"settings": {"isMyCompany": True, "parentEntityTypeId": 4, "isEmbeddedEditorEnabled": True}},
}

# Item field types whose values are ints in crm.item answers.
ITEM_INT_TYPES = {"integer", "user", "crm_company", "crm_contact", "crm_category", "crm_lead", "crm_deal",
                  "crm_quote", "crm_entity"}


def upper_name(camel: str) -> str:
    """``assignedById`` -> ``ASSIGNED_BY_ID``, ``ufCrm128_Budget`` -> ``UF_CRM_128_BUDGET``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "_", camel).upper()


def smart_process_fields(entity_type_id: int, user_fields=(), category_id: int | None = None,
                         base: dict | None = None, stage_status: str | None = None) -> dict[str, Field]:
    """The fields of one item type: ``base`` (SMART_PROCESS by default) with the stage's status type
    (``DYNAMIC_{type}_STAGE_{category}``) and the type's user fields."""
    defs = dict(SMART_PROCESS if base is None else base)
    if stage_status is None:
        stage_status = f"DYNAMIC_{entity_type_id}_STAGE_{1 if category_id is None else category_id}"
    for name in ("stageId", "previousStageId"):
        if name in defs:
            old = defs[name]
            defs[name] = Field(old.type, old.title, read_only=old.read_only, status_type=stage_status)
    for uf in user_fields:
        defs[uf] = user_field(uf)
    return defs


def describe_item_field(name: str, field: Field) -> dict:
    info = field.describe()
    extra = ITEM_FIELD_EXTRAS.get(name, {})
    if "isDeprecated" in extra:
        info = {**{k: v for k, v in info.items() if k != "title"}, "isDeprecated": True, "title": info["title"]}
    if "settings" in extra:
        info["settings"] = extra["settings"]
    return {**info, "upperName": upper_name(name)}
