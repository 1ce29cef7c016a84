"""The emulator's quicker form reading, JSON writing and record defaults give what the plain versions gave:
each is compared here with the code it replaced (kept below as it was), on tricky and on random input."""

from __future__ import annotations

import math
import random
import re
from urllib.parse import quote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitrix24_emulator import phpform, phpjson
from bitrix24_emulator.phpform import parse_str, split_name

from .conftest import make_api
from .test_batch import batch

# -- the code replaced, as it was ---------------------------------------------------------------------------


def old_parse_str(query):
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    result: dict = {}
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        parts = split_name(unquote_plus(name))
        if parts is None:
            continue
        target = result
        for i, key in enumerate(parts):
            last = i == len(parts) - 1
            if key is None:
                ints = [int(k) for k in target if re.match(r"^(0|-?[1-9]\d*)$", k)]
                key = str(max(ints) + 1) if ints and max(ints) >= 0 else "0"
            if last:
                target[key] = unquote_plus(value)
            else:
                child = target.get(key)
                if not isinstance(child, dict):
                    child = {}
                    target[key] = child
                target = child
    return result


def old_dumps(value) -> str:
    out: list = []

    def enc(value):
        if value is None:
            out.append("null")
        elif value is True:
            out.append("true")
        elif value is False:
            out.append("false")
        elif isinstance(value, str):
            out.append(phpjson._string(value))
        elif isinstance(value, int):
            out.append(str(value))
        elif isinstance(value, float):
            out.append("0" if math.isnan(value) or math.isinf(value) else repr(value))
        elif isinstance(value, dict):
            if not value:
                out.append("[]")
                return
            if all(str(k) == str(i) for i, k in enumerate(value)):
                enc(list(value.values()))
                return
            out.append("{")
            first = True
            for key, item in value.items():
                if not first:
                    out.append(",")
                first = False
                out.append(phpjson._string(str(key)))
                out.append(":")
                enc(item)
            out.append("}")
        elif isinstance(value, (list, tuple)):
            out.append("[")
            for i, item in enumerate(value):
                if i:
                    out.append(",")
                enc(item)
            out.append("]")
        else:
            out.append(phpjson._string(str(value)))

    enc(value)
    return "".join(out)


# -- unquote_plus and parse_str -----------------------------------------------------------------------------

TRICKY = ["", "plain", "a+b", "%", "%%", "%4", "%zz", "%41%42", "%2541", "%C3%A9", "%C3", "%C3x%A9", "%E2%82",
          "%E2%82%AC", "%F0%9F%98%80", "%F0%80", "%ED%A0%80", "%FF%FE", "é%20日", "a%2Bb+c", "%%C3%A9%",
          quote("Иван Петров") + "+" + quote("&=?#"), "%3" + "%41" * 20, "%25" * 30 + "%C3%A9" * 5,
          "%5Cx41", "%5C%78%34%31", "\\x41%41", "a\\%41", "\\", "%00%7F%80", "\x00%41", "%5C%5C%25", "%u0041",
          "%5cN{DIGIT ONE}", "\\N{DIGIT ONE}%41", "%41\n%42", "%C3%A9" * 3 + "%"]


@pytest.mark.parametrize("text", TRICKY)
def test_unquote_plus_matches_urllib(text):
    assert phpform.unquote_plus(text) == unquote_plus(text)


def test_unquote_plus_matches_urllib_on_random_text():
    rng = random.Random(20261207)
    pieces = list("%%%abXY09+ &=.") + ["%C3", "%A9", "%E2%82", "%AC", "%F0%9F", "%98%80", "%zz", "%4", "é", "日",
                                       "%FF", "%80", "%ed%a0%80", "%c3%a9", "%2B", "%25"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        assert phpform.unquote_plus(text) == unquote_plus(text), text


def test_unquote_plus_matches_urllib_on_long_ascii_escapes():
    """Past a few escapes, those standing for ASCII are read in one split (an encoded batch command)."""
    rng = random.Random(11)
    pieces = ["%25", "%26", "%3D", "%3d", "%5B", "%7F", "%00", "%2", "%", "%%", "%g1", "a", "+", "é", "日", "%41",
              "%2541", "%C3%A9"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(6, 30)))
        assert phpform.unquote_plus(text) == unquote_plus(text), text


_PIECES = st.sampled_from(["%", "%%", "%2", "%g1", "%zz", "%41", "%5C", "%5c", "%78", "%25", "%00", "%7F", "%80",
                            "%C3", "%A9", "%E2%82", "%AC", "%F0%9F", "%98%80", "%ED%A0%80", "%FF", "+", " ", "&",
                            "=", "\\", "x", "N", "{", "u", "0", "9", "a", "F", "é", "日", "\x00", "\n"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=40))
def test_unquote_plus_fast_path_matches_the_general_reading(text):
    """The escape-decoder path (ASCII text without a backslash) gives urllib's and the general path's result."""
    assert phpform.unquote_plus(text) == unquote_plus(text)
    spaced = text.replace("+", " ")
    assert phpform.unquote_plus(text) == (phpform._unquote_general(spaced) if "%" in spaced else spaced)


QUERIES = [
    "fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233&fields[PHONE][0][VALUE_TYPE]=WORK",
    "select[]=ID&select[]=NAME&a[5]=x&a[]=y&a[-3]=z&a[]=w",
    "filter[%3E%3DID]=5&filter[%21NAME]=&order[ID]=DESC",
    "a.b=1&a%20b=2&+c=3&a[b=4&a]b=5&x[y]z=6&x[y][=7&[a]=8&=9&&&noval&k==v",
    "fields%5BNAME%5D=%D0%98%D0%B2%D0%B0%D0%BD&fields%5BNAME%5D=later",
    "cmd%5Bw0%5D=crm.contact.add%3Ffields%255BNAME%255D%3DTenant%25201%26fields%255BEMAIL%255D%255B0%255D%255BVALUE"
    "%255D%3Dt1.c1%2540example.com&halt=0",
    "a[][]=1&a[][]=2&a[0][]=3",
    "deep" + "[x]" * 70 + "=too deep",
    "bad=%ZZ%&utf=%C3&mixed=%C3x%A9",
]


@pytest.mark.parametrize("query", QUERIES)
def test_parse_str_matches_the_old_reading(query):
    assert parse_str(query) == old_parse_str(query)
    assert parse_str(query) == old_parse_str(query)  # the names from the cache this time
    assert parse_str(query.encode()) == old_parse_str(query.encode())


def test_parse_str_matches_on_random_bodies():
    rng = random.Random(7)
    names = ["a", "a[]", "a[b]", "a[0]", "a[1][c]", "fields%5BNAME%5D", "x.y", "x%20y", "b[]", "b[-1]", "b[007]",
             "%5Bq%5D", "c[", "d]e", "f[g]h[i]", "n" * 300 + "[x]"]
    values = ["", "1", "%C3%A9", "a+b", "%zz", "$result[a]", "%24result"]
    for _ in range(3000):
        query = "&".join(f"{rng.choice(names)}={rng.choice(values)}" for _ in range(rng.randint(0, 8)))
        assert parse_str(query) == old_parse_str(query), query


# -- JSON ---------------------------------------------------------------------------------------------------

class Text(str):
    pass


class Number(int):
    pass


VALUES = [
    None, True, False, 0, -5, 10**30, 1.5, math.nan, math.inf, -math.inf, -0.0, 1e-07, 1e300, 2.499999999999999,
    "", "plain", "<a href='x'>&\"</a>/\\",
    "\x00\x1f\u2028\u2029\t\n", "Иван 日本 😀", [], {}, (), [1, [2, [3]]], (1, "a"), {"0": "a", "1": "b"},
    {"1": "a", "0": "b"}, {0: "x", 1: "y"}, {"0": "x", "2": "y"}, {"a": {"0": {"b": []}}}, {1: "int key"},
    {True: "bool key"}, {None: "none"}, {Text("k"): Text("v"), "n": Number(3)}, {"f": 2.5, "i": 7, "s": "x",
                                                                                 "l": [], "d": {}}, object,
    {"result": {"w0": 1, "w1": 2}, "result_error": [], "result_time": {"w0": {"start": 1.0, "finish": 2.5,
                                                                               "date_start": "2026-12-07T10:00:00+03:00"}}},
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_matches_the_old_writer(value):
    assert phpjson.dumps(value) == old_dumps(value)
    assert phpjson.dumps({"k": value, "m": [value]}) == old_dumps({"k": value, "m": [value]})


# -- batch references and record defaults -------------------------------------------------------------------

def test_references_written_as_percent_24_are_still_followed(api):
    """'$' may reach the portal as %24: such a command's query is still searched for references."""
    out = batch(api, {"c": "crm.contact.add?fields[NAME]=Ann", "g": "crm.contact.get?id=%24result[c]",
                      "n": "crm.contact.add?fields[NAME]=%2524result[c]"})
    assert out["result"]["g"]["NAME"] == "Ann"
    status, body = api("crm.contact.get", {"id": out["result"]["n"]})
    assert body["result"]["NAME"] == "%24result[c]"


def test_new_records_follow_user_field_changes():
    api = make_api()
    emu = api.emu
    api("crm.contact.add", {"fields": {"NAME": "before"}})
    emu.store.add_user_field("contact", "UF_CRM_LATER", emu.store.fields["contact"]["NAME"])
    _, added = api("crm.contact.add", {"fields": {"NAME": "after"}})
    assert "UF_CRM_LATER" in emu.store.records["contact"][added["result"]]
    emu.store.remove_user_field("contact", "UF_CRM_LATER")
    _, again = api("crm.contact.add", {"fields": {"NAME": "again"}})
    record = emu.store.records["contact"][again["result"]]
    assert "UF_CRM_LATER" not in record
    first, second = emu.store.records["contact"][1], record
    assert list(first) == list(second) and first["EMAIL"] is not second["EMAIL"] and second["EMAIL"] == []


def test_clock_iso_matches_the_plain_conversion():
    from datetime import datetime

    from bitrix24_emulator.values import Clock

    clock = Clock(lambda: 1795766400.25, 180)
    rng = random.Random(3)
    moments = [1795766400.0, 1795766400.9989, 1795766400.999, 1795766400.9999996, 1795766401.0000001, -1.5, -0.0001,
               0.0, 1795766400, 2**31 + 0.5] + [1795766400 + rng.random() * 5 for _ in range(2000)]
    for moment in moments + moments[::-1]:
        plain = datetime.fromtimestamp(moment, clock.tz).isoformat(timespec="seconds")
        assert clock.iso(moment) == plain, moment
    assert clock.iso() == datetime.fromtimestamp(1795766400.25, clock.tz).isoformat(timespec="seconds")
    for bad in (math.nan, math.inf):
        with pytest.raises((ValueError, OverflowError)):
            clock.iso(bad)


def test_plain_string_fields_store_what_php_string_gives():
    """_internal_value returns a str given to a plain string field as it is: php_string's answer for a str."""
    api = make_api()
    store = api.emu.store
    for entity, defs in store.fields.items():
        for name, field in defs.items():
            for value in ("", "Ann", " 0 ", "Иван", "1.50"):
                assert store._internal_value(field, value) == store._internal_value(field, Text(value)), (entity, name)
                if field.type == "string" and not field.dynamic:
                    assert type(store._internal_value(field, value)) is str


def test_scope_of_answers_as_before_when_asked_again():
    from bitrix24_emulator import system
    from bitrix24_emulator.emulator import METHODS

    for method in sorted(METHODS) + ["user.x", "task.x.y", "nothing", ""]:
        assert system.scope_of(method) == system._scope_of(method) == system.scope_of(method)



def old_split_name(name):
    """split_name as it was, its base cleaned by a regex."""
    name = name.lstrip(" ")
    bracket = name.find("[")
    base = re.sub(r"[ .]", "_", name if bracket == -1 else name[:bracket])
    if not base:
        return None
    if bracket == -1:
        return [base]
    if name.find("]", bracket + 1) == -1:
        return [base + "_" + re.sub(r"[ .\[]", "_", name[bracket + 1:])]
    parts = [base]
    pos = bracket
    while pos < len(name) and name[pos] == "[":
        close = name.find("]", pos + 1)
        if close == -1:
            break
        index = name[pos + 1:close]
        parts.append(None if index == "" else index)
        pos = close + 1
        if len(parts) > phpform.MAX_DEPTH:
            return None
    return parts


def test_split_name_matches_the_regex_reading():
    rng = random.Random(5)
    pieces = [" ", ".", "_", "a", "[", "]", "[]", "b", "..", "  ", "é", "[x]", "[ .]"]
    for _ in range(20000):
        name = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert split_name(name) == old_split_name(name), name
    assert split_name("a" + "[x]" * 70) == old_split_name("a" + "[x]" * 70) is None


def test_php_int_of_an_int_matches_the_float_reading():
    def through_float(value):
        number = phpform.php_float(value)
        return 0 if math.isnan(number) or math.isinf(number) else int(number)

    edges = [0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, -(2**53), 2**63, -(2**63) - 1, 10**400, -(10**400),
             True, False, Number(7), Number(2**60 + 1)]
    rng = random.Random(9)
    for value in edges + [rng.randint(-(2**70), 2**70) for _ in range(5000)]:
        assert phpform.php_int(value) == through_float(value), value
