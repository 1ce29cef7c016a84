"""Faster ``load`` / ``dump`` for the schemas of hot endpoints, giving exactly what the schema gives.

marshmallow walks every field of every nested object through its generic machinery: for a batch of 5,000
records that is a large share of the request's CPU. A fast function here returns what the schema's own
``load`` / ``dump`` would return for the shapes it is certain of, and None for anything else; the schema's own
method then runs, so every refusal, and its error, is still marshmallow's. ``routes.route`` installs them
(``fast_first``) on the schema instances it hands to flask-smorest, which still documents the schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields

from .params import MAX_ID
from .schemas import WriteAnswer, WriteOutcome

Fast = Callable[[Any], Any]

ENABLED = True  # False: every load and dump is the schema's own (the tests compare the two)


def fast_first(schema: Schema, *, load: Fast | None = None, dump: Fast | None = None) -> Schema:
    """``schema``, its ``load`` / ``dump`` trying ``load`` / ``dump`` first (a call with options, ``many=`` and
    the like, always goes to the schema's own method)."""
    for name, fast in (("load", load), ("dump", dump)):
        if fast is not None:
            setattr(schema, name, _first(fast, getattr(schema, name)))
    return schema


def _first(fast: Fast, own: Callable[..., Any]) -> Callable[..., Any]:
    def method(data: Any, **kwargs: Any) -> Any:
        if ENABLED and not kwargs:
            result = fast(data)
            if result is not None:
                return result
        return own(data, **kwargs)

    return method


# ----------------------------------------------------------------------------------------------
# Loads


def _str_keyed(value: Any) -> dict[str, Any] | None:
    """A copy of a ``_field_map`` value (keys ``fields.String``, values ``fields.Raw``: taken as they are), or
    None unless it is a dict with str keys."""
    if type(value) is not dict:
        return None
    for key in value:
        if type(key) is not str:
            return None
    return dict(value)


def load_batch_write_body(data: Any) -> dict[str, Any] | None:
    """``BatchWriteBody().load(data)``, or None where that might differ or refuse: anything but a dict with only
    ``items``, a non-empty list of dicts with only ``id`` (an int, not a bool, 1..MAX_ID), ``fields`` (required,
    a non-empty dict) and ``params`` (a dict), their keys str. A loaded item has only the keys that were sent,
    in the schema's order, and its own ``fields`` / ``params`` dicts (the values in them are the caller's)."""
    if type(data) is not dict or len(data) != 1:
        return None
    items = data.get("items")
    if type(items) is not list or not items:
        return None
    loaded = []
    for item in items:
        if type(item) is not dict:
            return None
        out: dict[str, Any] = {}
        if "id" in item:
            record_id = item["id"]
            if type(record_id) is not int or not 1 <= record_id <= MAX_ID:
                return None
            out["id"] = record_id
        record_fields = _str_keyed(item.get("fields"))
        if not record_fields:
            return None
        out["fields"] = record_fields
        if "params" in item:
            params = _str_keyed(item["params"])
            if params is None:
                return None
            out["params"] = params
        if len(out) != len(item):  # a key the schema does not know
            return None
        loaded.append(out)
    return {"items": loaded}


# ----------------------------------------------------------------------------------------------
# Dumps

# The fields that dump a value of this exact type unchanged (None: any value, as sent).
_UNCHANGED: dict[type[fields.Field], type | None] = {
    fields.Integer: int, fields.String: str, fields.Boolean: bool, fields.Raw: None,
}
_MISSING = object()


def _flat(schema: Schema, **checked_by_caller: type) -> tuple[tuple[str, type | None], ...]:
    """(name, type) of each field of ``schema`` in the order ``dump`` writes them: the type a value must have
    for the field to dump it unchanged (``_UNCHANGED``), or the one given here for a field the caller dumps."""
    out = []
    for name, field in schema.dump_fields.items():
        if name in checked_by_caller:
            kind = checked_by_caller[name]
        elif type(field) in _UNCHANGED and not (field.data_key or field.attribute or getattr(field, "as_string", 0)):
            kind = _UNCHANGED[type(field)]
        else:
            raise TypeError(f"{type(schema).__name__}.{name}: no fast dump for this field")
        out.append((name, kind))
    return tuple(out)


_OUTCOME = _flat(WriteOutcome())
_ANSWER = _flat(WriteAnswer(), result=list)


def _plain(obj: Any, layout: tuple[tuple[str, type | None], ...]) -> dict[str, Any] | None:
    """What ``dump`` gives of the dict ``obj`` for a schema of this layout: the keys the schema has, in its
    order, when each value is of the type ``layout`` gives; None otherwise."""
    if type(obj) is not dict:
        return None
    out = {}
    for name, kind in layout:
        value = obj.get(name, _MISSING)
        if value is _MISSING:
            continue
        if kind is not None and type(value) is not kind:
            return None
        out[name] = value
    return out


def dump_write_answer(answer: Any) -> dict[str, Any] | None:
    """``WriteAnswer().dump(answer)`` for what ``bulk_controller.write_many`` answers (outcomes from
    ``WriteOutcome.as_dict``, counts as ints), or None for anything else."""
    out = _plain(answer, _ANSWER)
    if out is None or "result" not in out:
        return None
    result = [_plain(outcome, _OUTCOME) for outcome in out["result"]]
    if None in result:
        return None
    out["result"] = result  # in its place: the keys stay in the schema's order
    return out
