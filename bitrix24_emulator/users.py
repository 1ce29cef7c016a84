"""Portal users: ``user.get``, ``user.search`` and ``user.fields`` over a small fixed staff
(``user.current`` in system.py reads the same records).

Sources: https://apidocs.bitrix24.com/api-reference/user/user-get.html,
https://apidocs.bitrix24.com/api-reference/user/user-fields.html,
https://apidocs.bitrix24.com/api-reference/user/user-search.html,
https://apidocs.bitrix24.com/api-reference/user/user-current.html,
https://apidocs.bitrix24.com/api-reference/user/user-scope.html (what user_basic and user_brief show),
https://apidocs.bitrix24.com/api-reference/user/index.html.

Facts followed: ``user.get`` sorts by ``ID`` ascending unless ``sort``/``order`` say otherwise, takes
``FILTER`` with the prefixes ``>= > <= < @ !@ % !% =% %= = != !``, plus ``NAME_SEARCH``, ``USER_TYPE``
(employee, extranet, email) and ``ACTIVE`` (true: no dismissed users), array values as IN; ``select``
with ``*`` and ``UF_*`` (unknown names skipped silently); pages of 50 with ``start``, ``total`` and
``next`` (``start=-1``: no total); values are strings except ``ACTIVE`` (bool) and ``UF_DEPARTMENT``
(a list of ints); ``TIMESTAMP_X``/``LAST_ACTIVITY_DATE`` come as ``{}`` as in the docs' example. With
only ``user_basic`` or ``user_brief`` a user shows the fields those scopes list. ``user.fields`` is a
map FIELD -> label in the portal language.

Choices: the staff is the webhook's user (``portal.user_id``, the administrator "Demo
Administrator") and four others (two employees, one dismissed employee, one extranet user) with the
next free ids; ``NAME_SEARCH`` (and ``user.search``'s ``FIND``) matches when every word starts one of
NAME, LAST_NAME, SECOND_NAME, EMAIL or WORK_POSITION, case-insensitively; ``user.search`` otherwise
answers like ``user.get``; unknown filter keys are ignored.
"""

from __future__ import annotations

import copy
import re

from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .registry import Outcome

METHODS = frozenset({"user.get", "user.search", "user.fields"})
PAGE_SIZE = 50
REGISTERED = 1704067200.0  # 2024-01-01T00:00:00Z, when the demo staff joined

BASIC_FIELDS = ("ID", "XML_ID", "ACTIVE", "NAME", "LAST_NAME", "SECOND_NAME", "TITLE", "EMAIL", "PERSONAL_PHONE",
                "WORK_PHONE", "WORK_POSITION", "WORK_COMPANY", "IS_ONLINE", "TIME_ZONE", "TIMESTAMP_X",
                "DATE_REGISTER", "LAST_ACTIVITY_DATE", "PERSONAL_PROFESSION", "PERSONAL_GENDER",
                "PERSONAL_BIRTHDAY", "PERSONAL_PHOTO", "PERSONAL_FAX", "PERSONAL_MOBILE", "PERSONAL_PAGER",
                "PERSONAL_STREET", "PERSONAL_MAILBOX", "PERSONAL_CITY", "PERSONAL_STATE", "PERSONAL_ZIP",
                "PERSONAL_COUNTRY", "PERSONAL_NOTES", "WORK_DEPARTMENT", "WORK_WWW", "WORK_FAX", "WORK_PAGER",
                "WORK_STREET", "WORK_MAILBOX", "WORK_CITY", "WORK_STATE", "WORK_ZIP", "WORK_COUNTRY",
                "WORK_PROFILE", "WORK_LOGO", "WORK_NOTES", "UF_DEPARTMENT", "UF_DISTRICT", "UF_SKYPE",
                "UF_SKYPE_LINK", "UF_ZOOM", "UF_TWITTER", "UF_FACEBOOK", "UF_LINKEDIN", "UF_XING",
                "UF_WEB_SITES", "UF_PHONE_INNER")
BRIEF_FIELDS = ("ID", "XML_ID", "ACTIVE", "NAME", "LAST_NAME", "SECOND_NAME", "TITLE", "IS_ONLINE", "TIME_ZONE",
                "PERSONAL_PHOTO", "TIMESTAMP_X", "DATE_REGISTER", "PERSONAL_PROFESSION", "PERSONAL_GENDER",
                "PERSONAL_BIRTHDAY", "PERSONAL_CITY", "PERSONAL_STATE", "PERSONAL_COUNTRY", "WORK_POSITION",
                "WORK_CITY", "WORK_STATE", "WORK_COUNTRY", "LAST_ACTIVITY_DATE", "UF_EMPLOYMENT_DATE",
                "UF_TIMEMAN", "UF_SKILLS", "UF_INTERESTS", "UF_DEPARTMENT", "UF_PHONE_INNER")

# user.fields in the portal language (English), in the order a portal lists them.
FIELD_LABELS = {
    "ID": "ID", "XML_ID": "External ID", "ACTIVE": "Active", "NAME": "First name", "LAST_NAME": "Last name",
    "SECOND_NAME": "Second name", "TITLE": "Salutation", "EMAIL": "E-Mail", "LAST_LOGIN": "Last login",
    "DATE_REGISTER": "Registered on", "TIME_ZONE": "TIME_ZONE", "IS_ONLINE": "IS_ONLINE",
    "TIME_ZONE_OFFSET": "TIME_ZONE_OFFSET", "TIMESTAMP_X": "TIMESTAMP_X", "LAST_ACTIVITY_DATE": "LAST_ACTIVITY_DATE",
    "PERSONAL_GENDER": "Gender", "PERSONAL_PROFESSION": "Profession", "PERSONAL_WWW": "Personal website",
    "PERSONAL_BIRTHDAY": "Date of birth", "PERSONAL_PHOTO": "Photo", "PERSONAL_ICQ": "ICQ",
    "PERSONAL_PHONE": "Personal phone", "PERSONAL_FAX": "Fax", "PERSONAL_MOBILE": "Personal mobile",
    "PERSONAL_PAGER": "Pager", "PERSONAL_STREET": "Street", "PERSONAL_CITY": "City", "PERSONAL_STATE": "Region",
    "PERSONAL_ZIP": "Zip", "PERSONAL_COUNTRY": "Country", "PERSONAL_MAILBOX": "Mailbox",
    "PERSONAL_NOTES": "Notes", "WORK_PHONE": "Company phone", "WORK_COMPANY": "Company",
    "WORK_POSITION": "Position", "WORK_DEPARTMENT": "Department", "WORK_WWW": "Company website",
    "WORK_FAX": "WORK_FAX", "WORK_PAGER": "WORK_PAGER", "WORK_STREET": "WORK_STREET",
    "WORK_MAILBOX": "WORK_MAILBOX", "WORK_CITY": "Work city", "WORK_STATE": "WORK_STATE", "WORK_ZIP": "WORK_ZIP",
    "WORK_COUNTRY": "WORK_COUNTRY", "WORK_PROFILE": "WORK_PROFILE", "WORK_LOGO": "WORK_LOGO",
    "WORK_NOTES": "WORK_NOTES", "UF_SKYPE_LINK": "Skype chat link", "UF_ZOOM": "Zoom",
    "UF_EMPLOYMENT_DATE": "Employment date", "UF_TIMEMAN": "Time tracking", "UF_DEPARTMENT": "Departments",
    "UF_INTERESTS": "Interests", "UF_SKILLS": "Skills", "UF_WEB_SITES": "Other websites", "UF_XING": "Xing",
    "UF_LINKEDIN": "LinkedIn", "UF_FACEBOOK": "Facebook", "UF_TWITTER": "Twitter", "UF_SKYPE": "Skype",
    "UF_DISTRICT": "District", "UF_PHONE_INNER": "Extension number", "USER_TYPE": "USER_TYPE",
}
_SEARCHED = ("NAME", "LAST_NAME", "SECOND_NAME", "EMAIL", "WORK_POSITION")
# (first name, last name, e-mail, position, active, user type, departments, online)
_STAFF = (("Demo", "Administrator", "admin@example.com", "Administrator", True, "employee", [1], "Y"),
          ("Anna", "Smirnova", "anna@example.com", "Sales manager", True, "employee", [1], "Y"),
          ("Boris", "Kuznetsov", "boris@example.com", "Account manager", True, "employee", [2], "N"),
          ("Carl", "Former", "carl@example.com", "Sales manager", False, "employee", [2], "N"),
          ("Eva", "Partner", "eva@partner.example", "Consultant", True, "extranet", [], "N"))


def _person(user_id: int, spec: tuple, clock) -> dict:
    name, last, email, position, active, user_type, departments, online = spec
    return {
        "ID": str(user_id), "XML_ID": "", "ACTIVE": active, "NAME": name, "LAST_NAME": last, "SECOND_NAME": "",
        "TITLE": "", "EMAIL": email, "LAST_LOGIN": clock.iso(), "DATE_REGISTER": clock.iso(REGISTERED),
        "TIME_ZONE": "", "IS_ONLINE": online, "TIMESTAMP_X": {}, "LAST_ACTIVITY_DATE": {},
        "PERSONAL_GENDER": "", "PERSONAL_PROFESSION": "", "PERSONAL_WWW": "", "PERSONAL_BIRTHDAY": "",
        "PERSONAL_PHOTO": "", "PERSONAL_PHONE": "", "PERSONAL_MOBILE": "", "PERSONAL_CITY": "", "PERSONAL_STATE": "",
        "PERSONAL_COUNTRY": "", "WORK_PHONE": "", "WORK_COMPANY": "", "WORK_POSITION": position, "WORK_CITY": "",
        "WORK_STATE": "", "WORK_COUNTRY": "", "UF_EMPLOYMENT_DATE": "", "UF_DEPARTMENT": list(departments),
        "UF_PHONE_INNER": "", "UF_SKILLS": "", "UF_INTERESTS": "", "UF_TIMEMAN": "", "USER_TYPE": user_type,
    }


def staff(portal) -> list[dict]:
    """The portal's users: the webhook's user first, then the others with the next free ids."""
    out, next_id = [], 1
    for index, spec in enumerate(_STAFF):
        if index == 0:
            user_id = int(portal.user_id)
        else:
            while next_id == int(portal.user_id):
                next_id += 1
            user_id, next_id = next_id, next_id + 1
        out.append(_person(user_id, spec, portal.clock))
    return sorted(out, key=lambda u: int(u["ID"]))


def visible(user: dict, scopes) -> dict:
    """What the webhook's user scopes show of a user."""
    if "user" in scopes:
        return copy.deepcopy(user)
    allowed = BASIC_FIELDS if "user_basic" in scopes else BRIEF_FIELDS
    return {k: copy.deepcopy(v) for k, v in user.items() if k in allowed}


def current(portal) -> dict:
    """user.current: the webhook's own user."""
    me = next(u for u in staff(portal) if u["ID"] == str(portal.user_id))
    return visible(me, portal.scopes)


# ---- filtering ----------------------------------------------------------------------------------

_OPS = ("!@", "!%", "!=", ">=", "<=", "=%", "%=", "@", ">", "<", "%", "=", "!")


def _key(value):
    if isinstance(value, bool):
        return "Y" if value else "N"
    text = php_string(value) or ""
    return text.casefold()


def _matches(op: str, stored, wanted) -> bool:
    values = stored if isinstance(stored, list) else [stored]
    candidates = array_values(wanted) if is_array(wanted) else [wanted]
    if op in ("", "=", "@"):
        return any(_key(v) == _key(c) for v in values for c in candidates)
    if op in ("!", "!=", "!@"):
        return not _matches("=", stored, wanted)
    if op in ("%", "!%"):
        found = any(_key(c) in _key(v) for v in values for c in candidates)
        return found if op == "%" else not found
    if op in ("=%", "%="):
        def like(pattern):
            return re.compile("".join(".*" if ch == "%" else re.escape(ch) for ch in _key(pattern)), re.DOTALL)
        return any(like(c).fullmatch(_key(v)) for v in values for c in candidates)
    numeric = all(isinstance(v, (int, float)) or (php_string(v) or "").lstrip("-").isdigit() for v in values)
    for v in values:
        for c in candidates:
            left, right = (php_float(v), php_float(c)) if numeric else (_key(v), _key(c))
            if (op == ">" and left > right) or (op == ">=" and left >= right) or \
                    (op == "<" and left < right) or (op == "<=" and left <= right):
                return True
    return False


def _truthy(value) -> bool:
    return (php_string(value) or "").strip().lower() in ("1", "y", "true")


def _filter(users: list[dict], filter_param) -> list[dict]:
    conditions = []
    for key, wanted in array_items(filter_param):
        op = next((o for o in _OPS if key.startswith(o)), "")
        name = key[len(op):].upper()
        conditions.append((op, name, wanted))

    def keep(user: dict) -> bool:
        for op, name, wanted in conditions:
            if name == "NAME_SEARCH":
                words = (php_string(wanted) or "").casefold().split()
                texts = [(user.get(f) or "").casefold() for f in _SEARCHED]
                if not all(any(t.startswith(w) or f" {w}" in t for t in texts) for w in words):
                    return False
            elif name == "ACTIVE":
                if _truthy(wanted) and not user["ACTIVE"]:
                    return False
                if not _truthy(wanted) and (php_string(wanted) or "").strip().lower() in ("n", "false", "0") \
                        and user["ACTIVE"]:
                    return False
            elif name in user:
                if not _matches(op, user[name], wanted):
                    return False
        return True

    return [u for u in users if keep(u)]


def _select(user: dict, select_param) -> dict:
    names = [v for v in array_values(select_param) if isinstance(v, str)] if is_array(select_param) else []
    if not names:
        return user
    wanted = set()
    for name in names:
        if name == "*":
            wanted.update(k for k in user if not k.startswith("UF_"))
        elif name == "UF_*":
            wanted.update(k for k in user if k.startswith("UF_"))
        else:
            wanted.add(name)
    return {k: v for k, v in user.items() if k in wanted}


def _param(params: dict, name: str):
    for key in (name, name.upper(), name.lower(), name.capitalize()):
        if params.get(key) is not None:
            return params[key]
    return None


def get(portal, params: dict, find=None) -> Outcome:
    filter_param = _param(params, "filter")
    filter_param = dict(array_items(filter_param)) if is_array(filter_param) else {}
    if find:
        filter_param["NAME_SEARCH"] = find
    users = _filter(staff(portal), filter_param)
    raw_sort = _param(params, "sort")
    sort = "ID" if is_array(raw_sort) else (php_string(raw_sort) or "ID").upper()
    descending = (php_string(_param(params, "order")) or "ASC").upper() == "DESC"
    if sort != "ID" and users and sort in users[0]:
        users.sort(key=lambda u: _key(u.get(sort)), reverse=descending)
    elif descending:
        users.reverse()
    users = [visible(u, portal.scopes) for u in users]
    start = php_int(params.get("start", 0))
    select_param = params.get("select", params.get("SELECT"))
    if start < 0:
        return Outcome([_select(u, select_param) for u in users[:PAGE_SIZE]])
    offset = (start // PAGE_SIZE) * PAGE_SIZE
    page = users[offset:offset + PAGE_SIZE]
    following = offset + len(page)
    return Outcome([_select(u, select_param) for u in page], total=len(users),
                   next=following if following < len(users) else None)


def call(method: str, params: dict, portal, context=None):
    if method == "user.fields":
        return dict(FIELD_LABELS)
    if method == "user.search":
        find = _param(params, "find")
        return get(portal, params, find=php_string(find) if find is not None and not is_array(find) else None)
    return get(portal, params)
