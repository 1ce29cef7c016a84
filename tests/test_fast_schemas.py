"""The fast load and dump of ``POST <entity>/batch`` (controllers/fast_schemas.py) against marshmallow's own.

Each fast function must give exactly what the schema gives, or None (then the schema's own method runs): for a
body, its loaded dict is compared by ``repr`` (types, key order and all); over HTTP, the endpoint's whole answer
(status, headers, bytes) with the fast paths on is compared with the answer of the schema alone.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict

import marshmallow
import pytest
from flask_bitrix24.controllers import bulk_controller, fast_schemas
from flask_bitrix24.controllers.fast_schemas import dump_write_answer, load_batch_write_body
from flask_bitrix24.controllers.params import MAX_ID
from flask_bitrix24.controllers.schemas import BatchWriteBody, WriteAnswer
from flask_bitrix24.services.bulk.write import WriteOutcome
from flask_bitrix24.services.errors import Bitrix24Error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------------
# JSON bodies: valid ones, and ones off by a little (a bool id, a null, a key too many or too few)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                           max_size=3), max_leaves=6)


def mostly(typical, *others):
    """``typical`` nine times in ten, else one of ``others``."""
    return st.sampled_from([typical] * 9 * len(others) + list(others)).flatmap(lambda strategy: strategy)


def shuffled(strategy):
    """Dicts of ``strategy`` with their keys in any order."""
    return strategy.flatmap(lambda d: st.permutations(list(d.items())).map(dict))


names = mostly(st.sampled_from(["NAME", "LAST_NAME", "TITLE", "UF_CRM_1", "ORIGIN_ID", "COMMENTS"]),
               st.sampled_from(["name", "bad name", "", "NAME[x]"]), st.text(max_size=5))
ids = st.one_of(st.sampled_from([True, False, 0, 1, -1, MAX_ID, MAX_ID + 1, None, 1.0, "1", [1], {"id": 1}]),
                st.integers(1, MAX_ID), st.integers())
good_maps = st.dictionaries(names, values, min_size=1, max_size=4)
maps = st.one_of(good_maps, st.just({}), values)
good_items = shuffled(st.fixed_dictionaries({"fields": good_maps}, optional={
    "id": st.integers(1, MAX_ID), "params": st.dictionaries(names, values, max_size=3)}))
# A good item with one thing changed (which may leave it good: the id 1, a map for params)
defects = st.one_of(st.tuples(st.just("id"), ids), st.tuples(st.just("fields"), maps),
                    st.tuples(st.just("params"), maps), st.tuples(st.sampled_from(["Fields", "ID", "params "]), values))
near_items = st.one_of(st.builds(lambda item, defect: {**item, defect[0]: defect[1]}, good_items, defects),
                       good_items.map(lambda item: {k: v for k, v in item.items() if k != "fields"}), values)
good_bodies = st.fixed_dictionaries({"items": st.lists(good_items, min_size=1, max_size=5)})
near_bodies = st.fixed_dictionaries({"items": st.lists(st.one_of(good_items, near_items), max_size=5)})
odd_bodies = shuffled(st.fixed_dictionaries({}, optional={"items": st.one_of(st.lists(good_items, max_size=2), values),
                                                          "item": values, "halt": values}))
bodies = st.one_of(good_bodies, near_bodies, near_bodies, odd_bodies, values)


def schema_load(body):
    try:
        return BatchWriteBody().load(body)
    except marshmallow.ValidationError:
        return None


@SETTINGS
@given(bodies)
def test_fast_load_is_the_schemas_load(body):
    """For JSON, the fast load takes exactly the bodies the schema takes, and loads them the same."""
    expected = schema_load(body)
    got = load_batch_write_body(body)
    assert (got is None) == (expected is None), (body, got, expected)
    assert repr(got) == repr(expected)


@SETTINGS
@given(good_bodies)
def test_fast_load_takes_every_valid_body(body):
    assert load_batch_write_body(body) is not None


def test_fast_load_copies_as_the_schema_does():
    """New dicts for the body, its items and their fields and params; the values in them are the caller's."""
    value = {"VALUE": "a@example.com"}
    body = {"items": [{"params": {"P": 1}, "fields": {"EMAIL": [value]}, "id": 7}]}
    for loaded in (load_batch_write_body(body), BatchWriteBody().load(body)):
        item, sent = loaded["items"][0], body["items"][0]
        assert list(item) == ["id", "fields", "params"]
        assert loaded is not body and loaded["items"] is not body["items"] and item is not sent
        assert item["fields"] is not sent["fields"] and item["params"] is not sent["params"]
        assert item["fields"]["EMAIL"][0] is value


class Key(str):
    pass


@pytest.mark.parametrize("body", [
    {"items": [{"fields": {"NAME": "a"}, "id": True}]},
    {"items": [{"fields": {"NAME": "a"}, "id": False}]},
    {"items": [{"fields": {"NAME": "a"}, "id": 1.0}]},
    {"items": [{"fields": {"NAME": "a"}, "id": "5"}]},
    {"items": [{"fields": {"NAME": "a"}, "id": None}]},
    {"items": [{"fields": {"NAME": "a"}, "id": 0}]},
    {"items": [{"fields": {"NAME": "a"}, "id": -1}]},
    {"items": [{"fields": {"NAME": "a"}, "id": MAX_ID + 1}]},
    {"items": [{"fields": {"NAME": "a"}, "params": None}]},
    {"items": [{"fields": {"NAME": "a"}, "params": []}]},
    {"items": [{"fields": {"NAME": "a"}, "Params": {}}]},
    {"items": [{"fields": {}}]},
    {"items": [{"fields": None}]},
    {"items": [{"fields": [["NAME", "a"]]}]},
    {"items": [{"params": {"P": 1}}]},
    {"items": [{}]},
    {"items": [{"fields": {"NAME": "a"}}, None]},
    {"items": [{"fields": {"NAME": "a"}}, "x"]},
    {"items": [{"fields": {1: "a"}}]},
    {"items": [{"fields": {"NAME": "a"}, "params": {None: 1}}]},
    {"items": []},
    {"items": None},
    {"items": {"0": {"fields": {"NAME": "a"}}}},
    {"items": [{"fields": {"NAME": "a"}}], "halt": True},
    {},
    [],
    None,
])
def test_fast_load_declines_what_the_schema_refuses(body):
    assert schema_load(body) is None
    assert load_batch_write_body(body) is None


@pytest.mark.parametrize("body", [
    {"items": ({"fields": {"NAME": "a"}},)},
    {"items": [OrderedDict(fields={"NAME": "a"})]},
    {"items": [{"fields": OrderedDict(NAME="a")}]},
    {"items": [{"fields": {Key("NAME"): "a"}}]},
    {"items": [{"fields": {b"NAME": "a"}}]},
    OrderedDict(items=[{"fields": {"NAME": "a"}}]),
])
def test_fast_load_declines_what_json_never_gives(body):
    """Shapes the schema may take (and change: a str subclass key comes out a str) but JSON never makes."""
    assert schema_load(body) is not None
    assert load_batch_write_body(body) is None


# ----------------------------------------------------------------------------------------------
# Answers

outcome_values = {
    "index": mostly(st.integers(0, 10**6), st.booleans(), st.floats(0, 9), st.none(), st.just("1")),
    "action": mostly(st.sampled_from(["created", "updated"]), st.integers(0, 9), st.none()),
    "ok": mostly(st.booleans(), st.integers(0, 1), st.none()),
    "id": values,
    "error": mostly(st.text(max_size=6), st.integers(0, 9), st.none()),
    "error_description": mostly(st.text(max_size=6), st.none()),
    "existing": mostly(st.booleans(), st.integers(0, 1), st.none()),
    "marker": values,
}
outcomes = shuffled(st.fixed_dictionaries({}, optional=outcome_values))
counts = mostly(st.integers(0, 10**6), st.booleans(), st.floats(0, 9), st.none())
answers = shuffled(st.fixed_dictionaries(
    {"result": mostly(st.lists(outcomes, max_size=3), st.lists(outcomes, max_size=3).map(tuple), values)},
    optional={"created": counts, "existing": counts, "updated": counts, "failed": counts, "total": values}))


@st.composite
def written(draw):
    """What write_many answers: WriteOutcome.as_dict() of outcomes made, found, updated and failed."""
    result = []
    for index in range(draw(st.integers(0, 6))):
        outcome = WriteOutcome(index, draw(st.sampled_from(["created", "updated"])),
                               id=draw(st.one_of(st.none(), st.integers(1, MAX_ID), st.text(max_size=3))))
        outcome.existing = draw(st.booleans())
        if draw(st.booleans()):
            outcome.error = Bitrix24Error(draw(st.text(max_size=8)), code=draw(st.sampled_from(["NOT_FOUND", None])))
        result.append(outcome.as_dict())
    return {"result": result, **{key: draw(st.integers(0, 10)) for key in ("created", "existing", "updated", "failed")}}


@SETTINGS
@given(answers)
def test_fast_dump_is_the_schemas_dump(answer):
    got = dump_write_answer(answer)
    if got is not None:
        assert repr(got) == repr(WriteAnswer().dump(answer))


@SETTINGS
@given(written())
def test_fast_dump_takes_every_answer_of_write_many(answer):
    got = dump_write_answer(answer)
    assert got is not None
    assert repr(got) == repr(WriteAnswer().dump(answer))


# ----------------------------------------------------------------------------------------------
# Over HTTP: the whole answer, fast paths on and off


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: nothing here reaches the database."""
    return f"sqlite:///{tmp_path / 'test.db'}"


def echoing_bulk_write(prefix, items, *, client_id):
    """bulk_write without a portal: each item's outcome carries what reached it (its repr in the
    error_description, its id), made, found, updated or failed by turns."""
    if any(item["fields"].get("ORIGIN_ID") == "twice" for item in items):
        raise ValueError("ORIGIN_ID 'twice' is given to more than one new record")
    result = []
    for index, item in enumerate(items):
        outcome = WriteOutcome(index, "updated" if item["id"] else "created", id=item["id"] or 1000 + index)
        turn = index % 4
        if turn == 1:
            outcome.error = Bitrix24Error(repr(item), code="ERROR_CORE")
        elif turn == 2:
            outcome.existing = True
        elif turn == 3:
            outcome.id = f"{prefix}:{index}:{sorted(item['params'])}"  # ids are passed on as the portal sent them
        result.append(outcome)
    return result


@pytest.fixture
def batch_client(make_app, monkeypatch):
    app = make_app(BITRIX_BATCH_MAX_ITEMS=4)
    app.json.sort_keys = False  # a host may turn it off: the keys' order must be the schema's too
    monkeypatch.setattr(bulk_controller, "bulk_write", echoing_bulk_write)
    return app.test_client()


@contextlib.contextmanager
def schema_only():
    fast_schemas.ENABLED = False
    try:
        yield
    finally:
        fast_schemas.ENABLED = True


def both_answers(client, entity: str, data: bytes):
    def post():
        r = client.post(f"/api/bitrix/clients/1/{entity}/batch", data=data, content_type="application/json")
        headers = sorted((k, v) for k, v in r.headers.items() if k != "X-Request-ID")
        return r.status_code, headers, r.data

    fast = post()
    with schema_only():
        slow = post()
    return fast, slow


@SETTINGS
@given(mostly(st.sampled_from(["contacts", "deals", "tasks"]), st.just("widgets")), bodies)
def test_batch_answers_the_same_with_and_without_the_fast_paths(batch_client, entity, body):
    fast, slow = both_answers(batch_client, entity, json.dumps(body).encode())
    assert fast == slow


@pytest.mark.parametrize("data", [
    b'{"items": [{"fields": {"NAME": NaN}}]}',
    b'{"items": [{"fields": {"NAME": "a"}, "id": 1e3}]}',
    b'{"items": [{"fields": {"NAME": "a"}}], "items": []}',
    b'{"items": [], "items": [{"fields": {"NAME": "a"}}]}',
    b'{"items": [{"fields": {"NAME": "a"}, "fields": {}}]}',
    b'{"items": [{"fields": {"NAME": "a", "ORIGIN_ID": "twice"}}]}',
    b'{"items": [{"fields": {"NAME": "\\ud800"}}]}',
    b'{"items": [{"fields": {"NAME": "a"}}, {"fields": {"NAME": "b"}}, {"fields": {"NAME": "c"}}, {"fields": {"NAME": "d"}}, {"fields": {"NAME": "e"}}]}',
    b'{"items": [{"fields": {"NAME": "a"}}]',
    b'[{"fields": {"NAME": "a"}}]',
    b"null",
    b"",
])
def test_batch_answers_odd_bodies_the_same_with_and_without_the_fast_paths(batch_client, data):
    fast, slow = both_answers(batch_client, "contacts", data)
    assert fast == slow


def test_a_valid_batch_is_loaded_and_dumped_without_marshmallow(batch_client, monkeypatch):
    """The fast paths are the ones taken (and the switch the tests above use does turn them off)."""
    calls = []
    for name in ("_do_load", "_serialize"):
        own = getattr(marshmallow.Schema, name)
        monkeypatch.setattr(marshmallow.Schema, name,
                            lambda self, *a, _own=own, _name=name, **k: calls.append(_name) or _own(self, *a, **k))
    data = json.dumps({"items": [{"fields": {"NAME": "a"}}, {"id": 5, "fields": {"NAME": "b"}, "params": {"P": "Y"}}]})

    def post():
        calls.clear()
        r = batch_client.post("/api/bitrix/clients/1/contacts/batch", data=data, content_type="application/json")
        assert r.status_code == 200, r.get_json()
        return sorted(set(calls))

    assert post() == []
    with schema_only():
        assert post() == ["_do_load", "_serialize"]
