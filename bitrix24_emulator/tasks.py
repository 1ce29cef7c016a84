"""Tasks: ``tasks.task.{add,update,get,list,delete,complete,start,pause,defer,renew,approve,disapprove,getFields}``
on the classic ``/rest/`` path (scope ``task``), with the ONTASKADD/ONTASKUPDATE/ONTASKDELETE events.

Sources:
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-add.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-update.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-get.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-list.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-delete.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-get-fields.html,
https://apidocs.bitrix24.com/api-reference/tasks/fields.html,
https://apidocs.bitrix24.com/api-reference/tasks/status/tasks-task-complete.html (and ``-start``, ``-pause``,
``-defer``, ``-renew`` next to it), https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-approve.html,
https://apidocs.bitrix24.com/api-reference/tasks/tasks-task-disapprove.html,
https://apidocs.bitrix24.com/api-reference/tasks/events-tasks/on-task-add.html (and ``on-task-update``,
``on-task-delete``); a real tasks.task.list page recorded in leshchenko1979/fast_bitrix24
(tests/real_responses/get_all_tasks.py: rows ``{"id": "8618", "status": "2", "group": [], "subStatus": "-1"}``
for ``select ["ID", "STATUS"]`` and ``filter {"status": -1}``, with ``next`` 50 and ``total``).

Facts from those pages: input names are UPPER_CASE, output keys camelCase with string values (``"id": "3711"``,
``"status": "2"``); ``{"task": {...}}`` from add/update/get and the status methods, ``{"task": true}`` from delete,
``{"tasks": [...]}`` with ``total``/``next`` from list (pages of 50, default order ID desc); ``get`` of a task
that does not exist answers ``"result": []``; ``auditorsData``/``accomplicesData``/``checklist``/``group`` are
``[]`` when empty and objects otherwise; ``UF_CRM_TASK`` (``["D_10", "C_7"]``) and the other system UFs come back
only when selected (selecting one brings all three); list filter ``REAL_STATUS`` is the real status (``status``
in the answer) and ``STATUS`` adds the meta statuses -1 overdue, -2 not viewed, -3 almost overdue (``subStatus``);
errors are HTTP 400 with the codes of each page (``"100"``, ``"0"``, ``"1048582"``, ``ERROR_CORE`` with a trailing
``<br>``); the event payloads carry ``FIELDS_BEFORE``/``FIELDS_AFTER`` (``{ID}`` or ``"undefined"``) and
``IS_ACCESSIBLE_BEFORE``/``IS_ACCESSIBLE_AFTER`` exactly as the event pages show them.

Choices where the docs are silent:

- Status moves follow each method's "action" flags in the docs' examples: start from pending (2); pause from in
  progress (3); defer from 2 or 3; complete from 2, 3 or 6 (to 4 "awaiting control" when TASK_CONTROL is Y and
  the caller is not the creator, else 5); approve and disapprove from 4 (to 5 and 2); renew from 4, 5 or 6 (to 2).
  Any other move is "Action on the task is not allowed" with the code the method's page shows.
- Parameter names (``taskId``, ``fields``, ``select``...) are matched without regard to case, and filter and
  order keys too (the recorded real call used ``filter {"status": -1}``).
- A task is "almost overdue" (-3) when its deadline is within 24 hours, overdue (-1) when past, both only while
  pending or in progress; -2 (not viewed) never applies: every task is seen by the webhook's user.
- Users: the webhook's user is "Demo Administrator"; any other positive id is taken to exist unless the users
  family can say otherwise (``users.State.exists(id)``); groups are named "Group {id}".
- ``select`` ``*`` is the default set; ``id`` is always returned; list rows add ``group`` and ``subStatus``; a
  selected RESPONSIBLE_ID/CREATED_BY/AUDITORS/ACCOMPLICES also brings its user objects.
- An unknown id on update/complete/... is "Action on the task is not allowed"; on delete "No access to delete
  the task" (code 1048582), as the pages list those codes for missing tasks or rights.
- The REST 3.0 ``/rest/api/`` form is not served.
"""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta

from .errors import ApiError
from .phpform import array_items, array_values, is_array, php_float, php_int, php_string
from .query import split_operator

ACTIONS = ("add", "update", "get", "list", "delete", "complete", "start", "pause", "defer", "renew", "approve",
           "disapprove", "getfields")
METHODS = frozenset(f"tasks.task.{a}" for a in ACTIONS)
SCOPES = {m: "task" for m in METHODS}
PAGE_SIZE = 50
PENDING, IN_PROGRESS, AWAITING, COMPLETED, DEFERRED = 2, 3, 4, 5, 6
STATUS_NAMES = {2: "Pending", 3: "In Progress", 4: "Awaiting Review", 5: "Completed", 6: "Deferred"}
# (from statuses, to status) of each status method; "complete" picks 4 or 5 itself.
MOVES = {"start": ({PENDING}, IN_PROGRESS), "pause": ({IN_PROGRESS}, PENDING),
         "defer": ({PENDING, IN_PROGRESS}, DEFERRED), "complete": ({PENDING, IN_PROGRESS, DEFERRED}, COMPLETED),
         "approve": ({AWAITING}, COMPLETED), "disapprove": ({AWAITING}, PENDING),
         "renew": ({AWAITING, COMPLETED, DEFERRED}, PENDING)}
NOT_ALLOWED_CODE = {"complete": "0", "start": "0", "update": "0", "pause": "1048582", "defer": "1048582",
                    "renew": "1048582", "approve": "1048582", "disapprove": "1048582"}

# Stored fields in the order tasks.task.get returns them (the add page's example), with their kinds.
BASE_FIELDS = {
    "ID": "id", "PARENT_ID": "id", "TITLE": "string", "DESCRIPTION": "string", "MARK": "string",
    "PRIORITY": "int", "MULTITASK": "yn", "NOT_VIEWED": "yn", "REPLICATE": "yn", "STAGE_ID": "int",
    "SPRINT_ID": "id", "BACKLOG_ID": "id", "CREATED_BY": "user", "CREATED_DATE": "datetime",
    "RESPONSIBLE_ID": "user", "CHANGED_BY": "user", "CHANGED_DATE": "datetime", "STATUS_CHANGED_BY": "user",
    "CLOSED_BY": "user", "CLOSED_DATE": "datetime", "ACTIVITY_DATE": "datetime", "DATE_START": "datetime",
    "DEADLINE": "datetime", "START_DATE_PLAN": "datetime", "END_DATE_PLAN": "datetime", "GUID": "string",
    "XML_ID": "string", "COMMENTS_COUNT": "int", "SERVICE_COMMENTS_COUNT": "int", "ALLOW_CHANGE_DEADLINE": "yn",
    "ALLOW_TIME_TRACKING": "yn", "TASK_CONTROL": "yn", "ADD_IN_REPORT": "yn", "FORKED_BY_TEMPLATE_ID": "id",
    "TIME_ESTIMATE": "int", "TIME_SPENT_IN_LOGS": "int", "MATCH_WORK_TIME": "yn", "FORUM_TOPIC_ID": "id",
    "FORUM_ID": "id", "SITE_ID": "string", "SUBORDINATE": "yn", "EXCHANGE_MODIFIED": "datetime",
    "EXCHANGE_ID": "id", "OUTLOOK_VERSION": "int", "VIEWED_DATE": "datetime", "SORTING": "float",
    "DURATION_FACT": "int", "IS_MUTED": "yn", "IS_PINNED": "yn", "IS_PINNED_IN_GROUP": "yn", "FLOW_ID": "id",
    "DESCRIPTION_IN_BBCODE": "yn", "STATUS": "int", "STATUS_CHANGED_DATE": "datetime", "DURATION_PLAN": "int",
    "DURATION_TYPE": "string", "FAVORITE": "yn", "GROUP_ID": "int",
}
SYSTEM_UF = ("UF_CRM_TASK", "UF_TASK_WEBDAV_FILES", "UF_MAIL_MESSAGE")
WRITABLE = {"PARENT_ID", "TITLE", "DESCRIPTION", "MARK", "PRIORITY", "MULTITASK", "REPLICATE", "STAGE_ID",
            "CREATED_BY", "RESPONSIBLE_ID", "DEADLINE", "START_DATE_PLAN", "END_DATE_PLAN", "XML_ID",
            "ALLOW_CHANGE_DEADLINE", "ALLOW_TIME_TRACKING", "TASK_CONTROL", "ADD_IN_REPORT", "TIME_ESTIMATE",
            "MATCH_WORK_TIME", "SITE_ID", "SORTING", "DESCRIPTION_IN_BBCODE", "STATUS", "DURATION_PLAN",
            "DURATION_TYPE", "GROUP_ID", "DATE_START", "IS_MUTED", "IS_PINNED", "FLOW_ID"}
SORTABLE = {"ID", "TITLE", "TIME_SPENT_IN_LOGS", "DATE_START", "CREATED_DATE", "CHANGED_DATE", "CLOSED_DATE",
            "ACTIVITY_DATE", "START_DATE_PLAN", "END_DATE_PLAN", "DEADLINE", "REAL_STATUS", "STATUS_COMPLETE",
            "PRIORITY", "MARK", "CREATED_BY_LAST_NAME", "RESPONSIBLE_LAST_NAME", "GROUP_ID", "TIME_ESTIMATE",
            "ALLOW_CHANGE_DEADLINE", "ALLOW_TIME_TRACKING", "MATCH_WORK_TIME", "FAVORITE", "SORTING", "IS_PINNED",
            "IS_PINNED_IN_GROUP", "STATUS"}
DURATION_TYPES = ("secs", "mins", "hours", "days", "weeks", "months", "years")


def camel(name: str) -> str:
    """``RESPONSIBLE_ID`` -> ``responsibleId``, ``UF_CRM_TASK`` -> ``ufCrmTask``."""
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _error(code: str, text: str) -> ApiError:
    return ApiError(code, text, 400)


def core_error(text: str) -> ApiError:
    return ApiError("ERROR_CORE", text + "<br>", 400)


def _param(params: dict, name: str):
    """A top-level parameter, its name matched without regard to case."""
    if name in params:
        return params[name]
    wanted = name.lower()
    for key, value in params.items():
        if str(key).lower() == wanted:
            return value
    return None


def _upper_keys(value) -> list[tuple[str, object]]:
    return [(key.upper(), item) for key, item in array_items(value)]


class State:
    """The portal's tasks by id, stored with UPPER_CASE keys and Python values."""

    def __init__(self, portal):
        self.portal = portal
        self.tasks: dict[int, dict] = {}
        self.next_id = 1

    # ---- users and groups -------------------------------------------------------------------------------

    def user_exists(self, user_id: int) -> bool:
        if user_id <= 0:
            return False
        if user_id == int(self.portal.user_id):
            return True
        from . import users

        if hasattr(users, "State"):
            exists = getattr(self.portal.state(users), "exists", None)
            if callable(exists):
                return bool(exists(user_id))
        return True

    def user(self, user_id) -> dict:
        uid = php_int(user_id)
        name = "Demo Administrator" if uid == int(self.portal.user_id) else f"User {uid}"
        return {"id": str(uid), "name": name, "link": f"/company/personal/user/{uid}/",
                "icon": "/bitrix/images/tasks/default_avatar.png", "workPosition": ""}

    # ---- values -----------------------------------------------------------------------------------------

    def _value(self, name: str, value):
        kind = BASE_FIELDS.get(name)
        if name in ("ACCOMPLICES", "AUDITORS"):
            ids = [php_int(v) for v in (array_values(value) if is_array(value) else [value])]
            return list(dict.fromkeys(str(i) for i in ids if i > 0))
        if name == "UF_CRM_TASK":
            items = array_values(value) if is_array(value) else [value]
            return list(dict.fromkeys(s for s in (php_string(v) for v in items if not is_array(v)) if s))
        if name == "UF_TASK_WEBDAV_FILES":
            items = array_values(value) if is_array(value) else [value]
            return [php_int(str(v).lstrip("n")) for v in items if not is_array(v) and php_int(str(v).lstrip("n"))]
        if name.startswith("UF_"):
            return value
        if is_array(value):
            return ...
        if kind == "datetime":
            if value in (None, ""):
                return None
            converted = self.portal.clock.datetime_value(php_string(value))
            return ... if converted is None else converted
        if kind == "yn":
            return "Y" if (php_string(value) or "").upper() in ("Y", "1", "TRUE") else "N"
        if kind in ("int", "id", "user"):
            return None if value in (None, "") else str(php_int(value))
        if kind == "float":
            return None if value in (None, "") else str(php_float(value))
        return php_string(value)

    def internalize(self, fields) -> dict:
        values = {}
        for key, value in _upper_keys(fields):
            if key in WRITABLE or key in ("ACCOMPLICES", "AUDITORS") or key.startswith("UF_"):
                converted = self._value(key, value)
                if converted is not ...:
                    values[key] = converted
        if values.get("STATUS") == "1":
            values["STATUS"] = str(PENDING)  # 1 (new) is stored as pending
        return values

    def check(self, task_id: int, values: dict, record: dict) -> None:
        """The ERROR_CORE checks of add and update (texts of the update page, with its <br>)."""
        merged = {**record, **values}
        if not (merged.get("TITLE") or "").strip():
            raise core_error("Task title is not specified")
        responsible = php_int(merged.get("RESPONSIBLE_ID") or 0)
        if responsible <= 0:
            raise core_error("Responsible person is not specified")
        if not self.user_exists(responsible):
            raise core_error('The user specified in the "Responsible" field was not found')
        if "STATUS" in values and php_int(values["STATUS"]) not in STATUS_NAMES:
            raise core_error("Invalid status")
        parent = php_int(merged.get("PARENT_ID") or 0)
        if parent:
            if parent == task_id:
                raise core_error("Cannot bind the node to itself")
            if parent not in self.tasks:
                raise core_error('The task specified in the "Parent Task" field was not found')
            seen, node = set(), parent
            while node and node not in seen:
                seen.add(node)
                if node == task_id:
                    raise core_error("Creating cyclic links in tasks is prohibited")
                node = php_int(self.tasks.get(node, {}).get("PARENT_ID") or 0)
        start, end = merged.get("START_DATE_PLAN"), merged.get("END_DATE_PLAN")
        clock = self.portal.clock
        if start and end and clock.timestamp(end) < clock.timestamp(start):
            raise core_error("The end date specified in the scheduling is earlier than the start date")

    # ---- derived values ---------------------------------------------------------------------------------

    def sub_status(self, record: dict) -> int:
        """STATUS of the list filter: -1 overdue, -3 almost overdue (24 h), else the real status."""
        status = php_int(record["STATUS"])
        deadline = self.portal.clock.timestamp(record.get("DEADLINE")) if record.get("DEADLINE") else None
        if deadline is not None and status in (PENDING, IN_PROGRESS):
            now = self.portal.clock.now()
            if deadline < now:
                return -1
            if deadline - now <= timedelta(days=1).total_seconds():
                return -3
        return status

    def actions(self, record: dict) -> dict:
        status = php_int(record["STATUS"])
        favorite = record.get("FAVORITE") == "Y"
        allowed = {name: status in sources for name, (sources, _) in MOVES.items()}
        return {"accept": False, "decline": False, "complete": allowed["complete"], "approve": allowed["approve"],
                "disapprove": allowed["disapprove"], "start": allowed["start"], "pause": allowed["pause"],
                "delegate": True, "remove": True, "edit": True, "defer": allowed["defer"], "renew": allowed["renew"],
                "create": True, "changeDeadline": True, "checklistAddItems": True, "addFavorite": not favorite,
                "deleteFavorite": favorite, "rate": True, "take": False, "edit.originator": False,
                "checklist.reorder": True, "elapsedtime.add": True, "dayplan.timer.toggle": False,
                "edit.plan": True, "checklist.add": True, "favorite.add": not favorite,
                "favorite.delete": favorite}

    def group(self, record: dict):
        group_id = php_int(record.get("GROUP_ID") or 0)
        if not group_id:
            return []
        return {"id": str(group_id), "name": f"Group {group_id}", "opened": False, "membersCount": 0, "image": "",
                "additionalData": []}

    def users_data(self, ids: list[str]):
        return {uid: self.user(uid) for uid in ids} if ids else []

    # ---- output -----------------------------------------------------------------------------------------

    def output(self, record: dict, select: list[str] | None, listing: bool) -> dict:
        """A task as get (``listing`` False) or a list row shows it; ``select`` None means the default set."""
        if select is None or "*" in select:
            names = list(BASE_FIELDS) + ["AUDITORS", "ACCOMPLICES", "CHECKLIST", "GROUP", "CREATOR", "RESPONSIBLE",
                                         "ACCOMPLICES_DATA", "AUDITORS_DATA", "NEW_COMMENTS_COUNT", "ACTION"]
            if select is not None:
                names += [n for n in select if n.startswith("UF_")]
        else:
            wanted = set(select)
            names = ["ID"] + [n for n in BASE_FIELDS if n in wanted and n != "ID"]
            for extra, implied in (("AUDITORS", ["AUDITORS", "AUDITORS_DATA"]),
                                   ("ACCOMPLICES", ["ACCOMPLICES", "ACCOMPLICES_DATA"])):
                if extra in wanted:
                    names += implied
            if "CREATED_BY" in wanted:
                names.append("CREATOR")
            if "RESPONSIBLE_ID" in wanted:
                names.append("RESPONSIBLE")
            names += [n for n in select if n.startswith("UF_")]
        if any(n in SYSTEM_UF for n in names):
            names = [n for n in names if n not in SYSTEM_UF] + list(SYSTEM_UF)
        out: dict = {}
        for name in dict.fromkeys(names):
            out.update(self._output_value(record, name))
        if listing:
            out.setdefault("group", self.group(record))
            out["subStatus"] = str(self.sub_status(record))
        return out

    def _output_value(self, record: dict, name: str) -> dict:
        if name in BASE_FIELDS or name in ("AUDITORS", "ACCOMPLICES"):
            return {camel(name): record.get(name)}
        if name == "CHECKLIST":
            return {"checklist": []}
        if name == "GROUP":
            return {"group": self.group(record)}
        if name == "CREATOR":
            return {"creator": self.user(record["CREATED_BY"])}
        if name == "RESPONSIBLE":
            return {"responsible": self.user(record["RESPONSIBLE_ID"])}
        if name == "ACCOMPLICES_DATA":
            return {"accomplicesData": self.users_data(record["ACCOMPLICES"])}
        if name == "AUDITORS_DATA":
            return {"auditorsData": self.users_data(record["AUDITORS"])}
        if name == "NEW_COMMENTS_COUNT":
            return {"newCommentsCount": 0}
        if name == "ACTION":
            return {"action": self.actions(record)}
        if name in ("UF_CRM_TASK", "UF_TASK_WEBDAV_FILES"):
            return {camel(name): list(record.get(name) or [])}
        if name.startswith("UF_"):
            return {camel(name): record.get(name)}
        return {}

    # ---- writes -----------------------------------------------------------------------------------------

    def new_record(self, task_id: int) -> dict:
        now = self.portal.clock.iso()
        me = str(self.portal.user_id)
        record = {name: None for name in BASE_FIELDS}
        record.update(ID=str(task_id), TITLE="", DESCRIPTION="", PRIORITY="1", MULTITASK="N", NOT_VIEWED="N",
                      REPLICATE="N", STAGE_ID="0", CREATED_BY=me, CREATED_DATE=now, CHANGED_BY=me, CHANGED_DATE=now,
                      ACTIVITY_DATE=now, GUID="{" + str(uuid.UUID(int=task_id)) + "}", ALLOW_CHANGE_DEADLINE="N",
                      ALLOW_TIME_TRACKING="N", TASK_CONTROL="N", ADD_IN_REPORT="N", TIME_ESTIMATE="0",
                      MATCH_WORK_TIME="N", SITE_ID="s1", SUBORDINATE="N", OUTLOOK_VERSION="1", IS_MUTED="N",
                      IS_PINNED="N", IS_PINNED_IN_GROUP="N", DESCRIPTION_IN_BBCODE="Y", STATUS=str(PENDING),
                      STATUS_CHANGED_DATE=now, DURATION_TYPE="days", FAVORITE="N", GROUP_ID="0")
        record.update(AUDITORS=[], ACCOMPLICES=[], UF_CRM_TASK=[], UF_TASK_WEBDAV_FILES=[], UF_MAIL_MESSAGE=None)
        return record

    def touch(self, record: dict, status_changed: bool) -> None:
        now, me = self.portal.clock.iso(), str(self.portal.user_id)
        record.update(CHANGED_BY=me, CHANGED_DATE=now, ACTIVITY_DATE=now)
        if status_changed:
            record.update(STATUS_CHANGED_BY=me, STATUS_CHANGED_DATE=now)
            if php_int(record["STATUS"]) == COMPLETED:
                record.update(CLOSED_BY=me, CLOSED_DATE=now)
            else:
                record.update(CLOSED_BY="0", CLOSED_DATE=None)
            if php_int(record["STATUS"]) == IN_PROGRESS and not record.get("DATE_START"):
                record["DATE_START"] = now


# ---- methods ------------------------------------------------------------------------------------------------


def _task_id(params: dict) -> int:
    raw = _param(params, "taskId")
    if raw is None:
        raise _error("100", "CTaskItem All parameters in the constructor must have real class type (internal error)")
    if is_array(raw) or php_string(raw).strip().lstrip("-").isdigit() is False:
        raise _error("0", "wrong task id")
    return php_int(raw)


def _select(params: dict) -> list[str] | None:
    raw = _param(params, "select")
    if raw is None:
        return None
    if not is_array(raw):
        raise _error("100", f"Invalid value {php_string(raw)} to match with parameter {{select}}. Should be value "
                            "of type array. (internal error)")
    names = [str(v).upper() for v in array_values(raw) if isinstance(v, (str, int)) and str(v)]
    return names or None


def _fields(params: dict) -> dict:
    raw = _param(params, "fields")
    if not is_array(raw) or not array_items(raw):
        raise _error("100", "Could not find value for parameter {fields} (internal error)")
    return raw


def _emit(portal, context, name: str, task_id: int) -> None:
    """The event pages' payloads, flattened as form pairs."""
    before, after = [("data[FIELDS_BEFORE][ID]", str(task_id))], [("data[FIELDS_AFTER][ID]", str(task_id))]
    if name == "ONTASKADD":
        data = [("data[FIELDS_BEFORE]", "undefined"), *after, ("data[IS_ACCESSIBLE_BEFORE]", "N"),
                ("data[IS_ACCESSIBLE_AFTER]", "undefined")]
    elif name == "ONTASKUPDATE":
        data = [*before, *after, ("data[IS_ACCESSIBLE_BEFORE]", "undefined"),
                ("data[IS_ACCESSIBLE_AFTER]", "undefined")]
    else:
        data = [*before, ("data[FIELDS_AFTER]", "undefined"), ("data[IS_ACCESSIBLE_BEFORE]", "undefined"),
                ("data[IS_ACCESSIBLE_AFTER]", "N")]
    portal.emit(name, data, context)


def call(method: str, params: dict, portal, context) -> object:
    state: State = portal.state(sys.modules[__name__])
    action = method.rsplit(".", 1)[1]
    if action == "getfields":
        return {"fields": _describe()}
    if action == "list":
        return _list(state, params)
    if action == "add":
        fields = _fields(params)
        values = state.internalize(fields)
        task_id = state.next_id
        record = state.new_record(task_id)
        values.setdefault("CREATED_BY", record["CREATED_BY"])
        state.check(task_id, values, record)
        record.update(values)
        record["STATUS"] = str(php_int(record["STATUS"]))
        state.tasks[task_id] = record
        state.next_id += 1
        _emit(portal, context, "ONTASKADD", task_id)
        return {"task": state.output(record, None, listing=False)}
    task_id = _task_id(params)
    record = state.tasks.get(task_id)
    if action == "get":
        select = _select(params)
        if record is None:
            return []
        return {"task": state.output(record, select, listing=False)}
    if action == "delete":
        if record is None:
            raise _error("1048582", "No access to delete the task")
        del state.tasks[task_id]
        _emit(portal, context, "ONTASKDELETE", task_id)
        return {"task": True}
    if action == "update":
        fields = _fields(params)
        if record is None:
            raise _error("0", "Action on the task is not allowed (internal error)")
        values = state.internalize(fields)
        state.check(task_id, values, record)
        changed = "STATUS" in values and values["STATUS"] != record["STATUS"]
        record.update(values)
        state.touch(record, changed)
        _emit(portal, context, "ONTASKUPDATE", task_id)
        return {"task": state.output(record, None, listing=False)}
    sources, target = MOVES[action]
    if record is None or php_int(record["STATUS"]) not in sources:
        raise _error(NOT_ALLOWED_CODE[action], "Action on the task is not allowed")
    if action == "complete" and record["TASK_CONTROL"] == "Y" and record["CREATED_BY"] != str(portal.user_id):
        target = AWAITING
    record["STATUS"] = str(target)
    state.touch(record, status_changed=True)
    _emit(portal, context, "ONTASKUPDATE", task_id)
    return {"task": state.output(record, None, listing=False)}


# ---- list ---------------------------------------------------------------------------------------------------

FILTER_FIELDS = {"ID", "PARENT_ID", "GROUP_ID", "CREATED_BY", "STATUS_CHANGED_BY", "PRIORITY", "FORUM_TOPIC_ID",
                 "RESPONSIBLE_ID", "TITLE", "REAL_STATUS", "STATUS", "MARK", "SITE_ID", "ADD_IN_REPORT",
                 "DATE_START", "DEADLINE", "CREATED_DATE", "CLOSED_DATE", "CHANGED_DATE", "ACCOMPLICE", "AUDITOR",
                 "STAGE_ID", "SPRINT_ID", "BACKLOG_ID", "UF_CRM_TASK", "FAVORITE"}
DATE_FIELDS = {"DATE_START", "DEADLINE", "CREATED_DATE", "CLOSED_DATE", "CHANGED_DATE"}
NUMBER_FIELDS = {"ID", "PARENT_ID", "GROUP_ID", "CREATED_BY", "STATUS_CHANGED_BY", "PRIORITY", "FORUM_TOPIC_ID",
                 "RESPONSIBLE_ID", "REAL_STATUS", "STATUS", "STAGE_ID", "SPRINT_ID", "BACKLOG_ID", "ACCOMPLICE",
                 "AUDITOR"}


def _stored(state: State, record: dict, name: str) -> list:
    """The values a filter on ``name`` looks at (several for the list-valued fields)."""
    if name == "REAL_STATUS":
        return [record["STATUS"]]
    if name == "STATUS":
        return [record["STATUS"], str(state.sub_status(record))]
    if name == "ACCOMPLICE":
        return list(record["ACCOMPLICES"])
    if name == "AUDITOR":
        return list(record["AUDITORS"])
    if name == "UF_CRM_TASK":
        return list(record["UF_CRM_TASK"])
    return [record.get(name)]


def _key(state: State, name: str, value):
    if value is None or value == "":
        return None
    if name in DATE_FIELDS:
        return state.portal.clock.timestamp(php_string(value))
    if name in NUMBER_FIELDS:
        return php_float(value)
    return str(value).casefold()


def _condition(state: State, op: str, name: str, wanted):
    candidates = array_values(wanted) if is_array(wanted) else [wanted]

    def match_one(record: dict) -> bool:
        if name == "STATUS":
            # Negative values are the meta statuses (subStatus); others compare the real status.
            values = []
            for candidate in candidates:
                meta = php_int(candidate) < 0
                values.append((str(state.sub_status(record)) if meta else record["STATUS"], candidate))
            pairs = values
        else:
            pairs = [(stored, c) for stored in _stored(state, record, name) for c in candidates]
        hits = []
        for stored, candidate in pairs:
            left, right = _key(state, name, stored), _key(state, name, candidate)
            if op in ("", "=", "!", "!="):
                hits.append(left == right)
            elif op == "%":
                hits.append(right is not None and left is not None and right.replace("%", "") in left)
            elif left is None or right is None:
                hits.append(False)
            else:
                hits.append({">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op])
        found = any(hits)
        return not found if op in ("!", "!=") else found

    return match_one


def _list(state: State, params: dict):
    from .registry import Outcome

    conditions = []
    filter_param = _param(params, "filter")
    for key, wanted in _upper_keys(filter_param) if is_array(filter_param) else []:
        if key == "::SUBFILTER-PARAMS":
            if is_array(wanted) and (php_string(dict(_upper_keys(wanted)).get("FAVORITE")) or "").upper() == "Y":
                conditions.append(lambda r: r.get("FAVORITE") == "Y")
            continue
        op, name = split_operator(key)
        if name not in FILTER_FIELDS or op not in ("", "=", "!", "!=", "<", "<=", ">", ">=", "%"):
            continue  # unknown filter keys are left out
        conditions.append(_condition(state, op, name, wanted))
    order_param = _param(params, "order")
    order = []
    for key, direction in _upper_keys(order_param) if is_array(order_param) else []:
        text = (php_string(direction) or "").lower() if not is_array(direction) else ""
        if key not in SORTABLE or text not in ("asc", "desc"):
            raise _error("0", "Invalid sorting key (internal error)")
        order.append((key, text == "desc"))
    rows = [r for r in state.tasks.values() if all(c(r) for c in conditions)]
    rows.sort(key=lambda r: php_int(r["ID"]), reverse=True)  # default and tie-break: ID desc
    for name, descending in reversed(order):
        column = {"REAL_STATUS": "STATUS", "STATUS_COMPLETE": "STATUS"}.get(name, name)

        def sort_key(r, column=column):
            value = _key(state, column, r.get(column)) if column in BASE_FIELDS else None
            return (value is not None, value if value is not None else 0)

        rows.sort(key=sort_key, reverse=descending)
    select = _select(params)
    start = max(php_int(_param(params, "start") or 0), 0)
    offset = (start // PAGE_SIZE) * PAGE_SIZE
    page = rows[offset:offset + PAGE_SIZE]
    following = offset + len(page)
    return Outcome({"tasks": [state.output(r, select, listing=True) for r in page]}, len(rows),
                   following if following < len(rows) else None)


def _describe() -> dict:
    """tasks.task.getFields: the page's field descriptions (title, type, and where given default/required)."""
    yn = {"Y": "Yes", "N": "No"}
    fields = {
        "ID": {"title": "ID", "type": "integer", "primary": True},
        "PARENT_ID": {"title": "Base Task ID", "type": "integer", "default": 0},
        "TITLE": {"title": "Title", "type": "string", "required": True},
        "DESCRIPTION": {"title": "Description", "type": "string"},
        "MARK": {"title": "Rating", "type": "enum", "values": {"N": "Negative", "P": "Positive"}, "default": None},
        "PRIORITY": {"title": "Priority", "type": "enum", "values": {"2": "High", "1": "Medium", "0": "Low"},
                     "default": 1},
        "STATUS": {"title": "Status", "type": "enum", "values": {str(k): v for k, v in STATUS_NAMES.items()},
                   "default": 2},
        "MULTITASK": {"title": "Multitask", "type": "enum", "values": yn, "default": "N"},
        "NOT_VIEWED": {"title": None, "type": "enum", "values": yn, "default": "N"},
        "REPLICATE": {"title": "Recurring Task", "type": "enum", "values": yn, "default": "N"},
        "GROUP_ID": {"title": "Project", "type": "integer", "default": 0},
        "STAGE_ID": {"title": "Stage", "type": "integer", "default": 0},
        "CREATED_BY": {"title": "Creator", "type": "integer", "required": True},
        "CREATED_DATE": {"title": None, "type": "datetime"},
        "RESPONSIBLE_ID": {"title": "Assignee", "type": "integer", "required": True},
        "ACCOMPLICES": {"title": "Participants", "type": "array"},
        "AUDITORS": {"title": "Observers", "type": "array"},
        "CHANGED_BY": {"title": "Modified By", "type": "integer"},
        "CHANGED_DATE": {"title": "Modified On", "type": "datetime"},
        "STATUS_CHANGED_BY": {"title": "Status Changed By", "type": "integer"},
        "STATUS_CHANGED_DATE": {"title": "Status Changed On", "type": "datetime"},
        "CLOSED_BY": {"title": "Closed By", "type": "integer", "default": None},
        "CLOSED_DATE": {"title": "Closed On", "type": "datetime", "default": None},
        "ACTIVITY_DATE": {"title": None, "type": "datetime", "default": None},
        "DATE_START": {"title": "Start Date", "type": "datetime", "default": None},
        "DEADLINE": {"title": "Deadline", "type": "datetime", "default": None},
        "START_DATE_PLAN": {"title": "Planned Start Date", "type": "datetime", "default": None},
        "END_DATE_PLAN": {"title": "Planned End Date", "type": "datetime", "default": None},
        "GUID": {"title": "GUID", "type": "string", "default": None},
        "XML_ID": {"title": "XML ID", "type": "string", "default": None},
        "COMMENTS_COUNT": {"title": "Comments", "type": "integer", "default": 0},
        "ALLOW_CHANGE_DEADLINE": {"title": "Assignee can change deadline", "type": "enum", "values": yn,
                                  "default": "N"},
        "ALLOW_TIME_TRACKING": {"title": "Track time spent", "type": "enum", "values": yn, "default": "N"},
        "TASK_CONTROL": {"title": "Approve task when completed", "type": "enum", "values": yn, "default": "N"},
        "ADD_IN_REPORT": {"title": "Add to Report", "type": "enum", "values": yn, "default": "N"},
        "TIME_ESTIMATE": {"title": "Time Estimate", "type": "integer"},
        "SITE_ID": {"title": "Site", "type": "string"},
        "DURATION_TYPE": {"title": "Duration type", "type": "enum", "values": list(DURATION_TYPES),
                          "default": "days"},
        "UF_CRM_TASK": {"title": "CRM items", "type": "crm"},
        "UF_TASK_WEBDAV_FILES": {"title": "Files", "type": "disk_file"},
        "UF_MAIL_MESSAGE": {"title": None, "type": "mail_message"},
    }
    return fields
