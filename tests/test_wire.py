"""flatten_params / encode_form: what PHP's parse_str reads back (DESIGN.md, "Wire format")."""

from __future__ import annotations

import collections
import datetime as dt
import types
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
from flask_bitrix24.services.bitrix24_service import flatten_params
from flask_bitrix24.services.wire import encode_form, parse_php_form


def roundtrip(data):
    return parse_php_form(encode_form(flatten_params(data)))


def test_nested_dicts_use_brackets():
    assert flatten_params({"fields": {"NAME": "Ada", "ADDRESS": {"CITY": "London"}}}) == [
        ("fields[NAME]", "Ada"),
        ("fields[ADDRESS][CITY]", "London"),
    ]


def test_lists_of_dicts_are_indexed():
    data = {"fields": {"PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}, {"VALUE": "+2", "VALUE_TYPE": "HOME"}]}}
    assert flatten_params(data) == [
        ("fields[PHONE][0][VALUE]", "+1"),
        ("fields[PHONE][0][VALUE_TYPE]", "WORK"),
        ("fields[PHONE][1][VALUE]", "+2"),
        ("fields[PHONE][1][VALUE_TYPE]", "HOME"),
    ]
    assert roundtrip(data) == data


def test_lists_of_scalars_use_append_syntax():
    assert flatten_params({"select": ["ID", "NAME"]}) == [("select[]", "ID"), ("select[]", "NAME")]
    assert roundtrip({"select": ["ID", "NAME"]}) == {"select": ["ID", "NAME"]}


def test_filter_operators_stay_in_the_key_and_are_percent_encoded():
    pairs = flatten_params({"filter": {">=DATE_CREATE": "2024-01-01", "!STAGE_ID": "WON", "%TITLE": "x", "@ID": [1, 2]}})
    assert pairs == [
        ("filter[>=DATE_CREATE]", "2024-01-01"),
        ("filter[!STAGE_ID]", "WON"),
        ("filter[%TITLE]", "x"),
        ("filter[@ID][]", "1"),
        ("filter[@ID][]", "2"),
    ]
    body = encode_form(pairs)
    assert "filter%5B%3E%3DDATE_CREATE%5D=2024-01-01" in body
    assert "filter%5B%25TITLE%5D=x" in body


@pytest.mark.parametrize(
    "value",
    ["a&b=c", "1+1=2", "100%", "[x]", "a#b?c", "line1\nline2\r\n", "Zoë Ωμέγα 日本 😀", " lead and trail ", "=&%+#?[]"],
)
def test_reserved_and_unicode_characters_survive(value):
    data = {"fields": {"COMMENTS": value}, "k": value}
    body = encode_form(flatten_params(data))
    # Only unreserved characters and percent escapes on the wire: nothing PHP could read as syntax.
    assert all(ch.isalnum() or ch in "-._~%=&" for ch in body)
    assert body.count("&") == 1 and body.count("=") == 2
    assert dict(parse_qsl(body, keep_blank_values=True)) == {"fields[COMMENTS]": value, "k": value}
    assert roundtrip(data) == data


def test_none_is_the_empty_string_never_the_text_none():
    assert flatten_params({"fields": {"COMMENTS": None}}) == [("fields[COMMENTS]", "")]


def test_booleans_are_y_and_n_unless_given_as_strings():
    assert flatten_params({"fields": {"OPENED": True, "EXPORT": False, "X": "true"}}) == [
        ("fields[OPENED]", "Y"),
        ("fields[EXPORT]", "N"),
        ("fields[X]", "true"),
    ]


def test_numbers_dates_and_decimals_as_text():
    data = {"a": 5, "b": 5000.5, "c": Decimal("1000.00"), "d": dt.date(2024, 5, 1),
            "e": dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.UTC)}
    assert flatten_params(data) == [
        ("a", "5"), ("b", "5000.5"), ("c", "1000.00"), ("d", "2024-05-01"), ("e", "2024-05-01T10:30:00+00:00"),
    ]


def test_empty_containers_still_send_the_key():
    # No form encoding gives PHP an empty array; "key[]=" makes the key arrive (as a list).
    assert flatten_params({"filter": {}, "select": [], "fields": {"CONTACT_IDS": []}}) == [
        ("filter[]", ""),
        ("select[]", ""),
        ("fields[CONTACT_IDS][]", ""),
    ]


def test_top_level_list_is_positional():
    assert flatten_params([123, {"POST_MESSAGE": "hi"}]) == [("0", "123"), ("1[POST_MESSAGE]", "hi")]


def test_none_params_send_nothing():
    assert flatten_params(None) == []
    assert encode_form([]) == ""


def test_deep_mixed_structures_roundtrip():
    data = {"cmd": {"a": "crm.contact.get?id=1"}, "fields": {"X": [[1, 2], [3]], "Y": {"0": "zero", "k": ["v"]}}}
    assert roundtrip(data) == {"cmd": {"a": "crm.contact.get?id=1"},
                               "fields": {"X": [["1", "2"], ["3"]], "Y": {"0": "zero", "k": ["v"]}}}


@pytest.mark.parametrize("bad", [{"a[b]": 1}, {"fields": {"x]": 1}}, {"": 1}, {"a.b": 1}, {"a b": 1}, {"f": {"": 1}}])
def test_keys_php_would_misread_are_refused(bad):
    with pytest.raises(ValueError):
        flatten_params(bad)


@pytest.mark.parametrize("bad", [{"a": object()}, {"a": b"bytes"}, {"a": float("nan")}, {"a": float("inf")}])
def test_values_that_cannot_be_sent_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        flatten_params(bad)


def test_parse_php_form_reads_bitrix24_events():
    body = (
        "event=ONCRMCONTACTADD&event_handler_id=975&data%5BFIELDS%5D%5BID%5D=89&ts=1724696255"
        "&auth%5Bdomain%5D=some.bitrix24.com&auth%5Bmember_id%5D=d897&auth%5Bapplication_token%5D=tok"
    )
    assert parse_php_form(body) == {
        "event": "ONCRMCONTACTADD",
        "event_handler_id": "975",
        "data": {"FIELDS": {"ID": "89"}},
        "ts": "1724696255",
        "auth": {"domain": "some.bitrix24.com", "member_id": "d897", "application_token": "tok"},
    }


def test_parse_php_form_php_quirks():
    # '+' is a space, top-level '.' and ' ' become '_', appends count from the largest int key,
    # an unmatched '[' is part of the name, later duplicates win.
    assert parse_php_form("a+b=c+d&x.y=1&l[5]=a&l[]=b&d[=1&k=1&k=2") == {
        "a_b": "c d", "x_y": "1", "l": {"5": "a", "6": "b"}, "d_": "1", "k": "2",
    }


def test_parse_php_form_refuses_non_utf8_and_too_many_fields():
    with pytest.raises(ValueError):
        parse_php_form(b"a=\xff\xfe")
    with pytest.raises(ValueError):
        parse_php_form("&".join(f"k{i}=1" for i in range(20)), max_pairs=10)


def test_keys_of_non_ascii_digits_are_string_keys_as_in_php():
    # "²".isdigit() is true but int("²") raises; "٣" is not 3 to PHP: both are string keys, "a[]" counts past 0
    assert parse_php_form("a[²]=1&a[]=2&a[٣]=3&a[]=4") == {"a": {"²": "1", "0": "2", "٣": "3", "1": "4"}}


def test_batch_methods_from_params_and_from_the_encoded_body():
    from flask_bitrix24.services.wire import batch_methods, form_body

    cmd = {"w 0": "crm.contact.update?id=1&fields[NAME]=x y", "w1": "CRM.Contact.Get.json?id=2", "w2": "profile"}
    expected = {"w 0": "crm.contact.update", "w1": "crm.contact.get", "w2": "profile"}
    assert batch_methods({"halt": 0, "cmd": cmd}) == expected
    assert batch_methods(form_body({"halt": 0, "cmd": cmd})) == expected
    assert batch_methods({"cmd": ["a.b?x=1", "c", 5]}) == {"0": "a.b", "1": "c"}
    assert batch_methods("halt=0") == {} and batch_methods(None) == {}


# -- the fast encoder against urllib's quote: byte for byte, errors alike ------------------------------------

def _old_encode_form(pairs):
    from urllib.parse import quote

    return "&".join(f"{quote(k, safe='', errors='strict')}={quote(v, safe='', errors='strict')}" for k, v in pairs)


TRICKY_TEXT = [
    "", "plain", "a b", "a+b", "100%", "%", "%%41", "%zz", "a&b=c?d#e", "~-._", "/:;@!$'()*,", "[]{}|\\^`\"<>",
    "".join(chr(i) for i in range(128)), "\x00\x01\x7f", "line\r\nbreak\ttab", "Иван Петров", "日本語テキスト",
    "emoji 😀 mixed ü ß", "é%C3%A9", "crm.contact.add?fields%5BNAME%5D=Ada&fields%5BLAST_NAME%5D=L%C3%BCtzen",
    "a" * 5000 + "?" + "%" * 300, "\u2028\u2029", "\ufeffbom", "\U0010ffff",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_quote_matches_urllib(text):
    from urllib.parse import quote

    from flask_bitrix24.services.wire import _quote, _quote_key

    assert _quote(text) == quote(text, safe="", errors="strict")
    assert _quote_key(text) == quote(text, safe="", errors="strict")
    assert _quote_key(text) == quote(text, safe="", errors="strict")  # from the cache this time


def test_quote_matches_urllib_on_random_text():
    import random
    from urllib.parse import quote

    from flask_bitrix24.services.wire import _quote

    rng = random.Random(20261207)
    alphabet = [chr(i) for i in range(128)] + list("éü€Иж日😀\u2028\U0001f600")
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert _quote(text) == quote(text, safe="", errors="strict"), text


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then", "Иван \ud83d", "a%b \ud800"])
def test_quote_raises_what_urllib_raises_on_lone_surrogates(text):
    from urllib.parse import quote

    from flask_bitrix24.services.wire import _quote, check_sendable

    with pytest.raises(UnicodeEncodeError) as expected:
        quote(text, safe="", errors="strict")
    with pytest.raises(UnicodeEncodeError) as got:
        _quote(text)
    assert str(got.value) == str(expected.value)
    for params in ({"fields": {"NAME": text}}, {"fields": {text: "x"}}):
        with pytest.raises(UnicodeEncodeError) as old:
            _old_encode_form(flatten_params(params))
        with pytest.raises(UnicodeEncodeError) as new:
            check_sendable(params)
        assert str(new.value) == str(old.value)
        with pytest.raises(UnicodeEncodeError) as new:
            encode_form(flatten_params(params))
        assert str(new.value) == str(old.value)


TRICKY_PARAMS = [
    {"fields": {"NAME": "Иван", "LAST_NAME": "O'Brien & Sons", "OPENED": True, "EXPORT": False, "COMMENTS": None,
                "PHONE": [{"VALUE": "+7 (900) 000-00-00", "VALUE_TYPE": "WORK"}], "EMAIL": [],
                "UF_CRM_LIST": ["a b", "c&d", 3, 2.5], "UF_CRM_MAP": {}, "UF_CRM_DATE": dt.date(2026, 1, 2),
                "OPPORTUNITY": Decimal("10.50"), "NESTED": {"a": {"b": {"c": "%41=?"}}}},
     "params": {"REGISTER_SONET_EVENT": "Y"}},
    {"filter": {">=DATE_CREATE": "2026-01-01T00:00:00+03:00", "%TITLE": "50% off", "!ID": [1, 2, 3]},
     "select": ["ID", "UF_*"], "order": {"ID": "ASC"}, "start": -1},
    ["positional", {"x": 1}, [1, 2]],
    {"halt": 0, "cmd": {"w0": "crm.contact.add?fields%5BNAME%5D=A%26B&fields%5BEMAIL%5D%5B0%5D%5BVALUE%5D=a%40b.c",
                        "c 1": "crm.contact.get?id=$result[w0]", "ключ": "crm.contact.list?filter[NAME]=Иван"}},
    {"id": 5, "fields": {"TITLE": "tab\there\nnewline", "EMOJI": "😀", "ZERO": 0, "NEG": -1, "BIG": 10**30}},
    {"fields": types.MappingProxyType({"PHONE": ({"VALUE": "1"}, {"VALUE": "2"}), "IDS": (1, True),
                                       "MIXED": [1, {"a": "b"}], "SUB": collections.OrderedDict(x="y"),
                                       "S": type("S", (str,), {})("sub")})},
]


@pytest.mark.parametrize("params", TRICKY_PARAMS)
def test_encode_form_is_byte_identical_to_the_old_encoding(params):
    from flask_bitrix24.services.bulk.batch import command_string
    from flask_bitrix24.services.wire import check_sendable, form_body

    pairs = flatten_params(params)
    assert encode_form(pairs) == _old_encode_form(pairs)
    assert form_body(params) == _old_encode_form(pairs)
    check_sendable(params)  # sendable: no error
    if isinstance(params, dict):
        old_command = f"crm.contact.add?{_old_encode_form(pairs)}"
        assert command_string("crm.contact.add", params) == old_command
        batch = {"halt": 0, "cmd": {"k0": command_string("crm.contact.add", params), "k1": "profile"}}
        assert form_body(batch) == _old_encode_form(flatten_params({"halt": 0, "cmd": {"k0": old_command,
                                                                                         "k1": "profile"}}))
        assert parse_php_form(form_body(batch))["cmd"]["k0"] == old_command


@pytest.mark.parametrize("params", [
    {"fields": {"a]": 1}, "x": 2}, {"a.b": 1}, {" x": 1}, {"\tx": 1}, {"a b": 1}, {"": 1}, {"fields": {"": 1}}, {"fields": {"a[b]": 1}},
    {"fields": {True: 1}}, {"fields": {1.5: 1}}, {"fields": {"X": object()}}, {"fields": {"X": float("nan")}},
    {"fields": {"X": Decimal("Infinity")}}, "not params",
])
def test_check_sendable_raises_what_encoding_raises(params):
    from flask_bitrix24.services.wire import check_sendable

    with pytest.raises((ValueError, TypeError)) as old:
        _old_encode_form(flatten_params(params))
    with pytest.raises((ValueError, TypeError)) as new:
        check_sendable(params)
    assert type(new.value) is type(old.value) and str(new.value) == str(old.value)


# -- batch commands encoded once (encode_command, batch_body) against the two-pass encoding ---------------------

def _two_pass_batch(halt, commands):
    """What a batch body was before encode_command: each command's query encoded, then the body encoded."""
    from flask_bitrix24.services.bulk.batch import command_string
    from flask_bitrix24.services.wire import form_body

    return form_body({"halt": 1 if halt else 0, "cmd": {k: command_string(m, p) for k, (m, p) in commands.items()}})


@pytest.mark.parametrize("params", [p for p in TRICKY_PARAMS if isinstance(p, dict)] + [{}, None])
def test_batch_body_is_byte_identical_to_encoding_twice(params):
    from flask_bitrix24.services.wire import batch_body, batch_methods, encode_command

    commands = {"k0": ("crm.contact.add", params), "c 1": ("CRM.Contact.Get.json", {"id": 5}),
                "ключ": ("profile", None), "3": ("crm.deal.list", {"filter": {"%TITLE": "50% off"}})}
    for halt in (False, True):
        body = batch_body(halt, {k: encode_command(m, p) for k, (m, p) in commands.items()})
        assert body == _two_pass_batch(halt, commands)
        # The methods it keeps are those read back out of the text, and the portal reads each command back.
        assert batch_methods(body) == batch_methods(str(body)) == {
            "k0": "crm.contact.add", "c 1": "crm.contact.get", "ключ": "profile", "3": "crm.deal.list"}
        assert parse_php_form(body)["cmd"] == {k: v for k, v in _two_pass_cmd(commands).items()}


def _two_pass_cmd(commands):
    from flask_bitrix24.services.bulk.batch import command_string

    return {k: command_string(m, p) for k, (m, p) in commands.items()}


def test_encode_command_matches_two_passes_on_random_text():
    import random

    from flask_bitrix24.services.bulk.batch import command_string
    from flask_bitrix24.services.wire import _quote, encode_command

    rng = random.Random(20261208)
    alphabet = [chr(i) for i in range(128)] + list("éü€Иж日😀\u2028\U0001f600")
    names = [c for c in alphabet if c not in "[]"]
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        name = "".join(rng.choice(names) for _ in range(rng.randint(1, 8)))
        params = {"fields": {name: text, "LIST": [text, 1], "DEEP": [{"VALUE": text}]}}
        assert encode_command("crm.contact.add", params) == _quote(command_string("crm.contact.add", params)), params


@pytest.mark.parametrize("params", [{"fields": {"NAME": "ok \udfff then"}}, {"fields": {"Иван \ud83d": "x"}},
                                    {"fields": {"a[b]": 1}}, {"fields": {"X": float("nan")}}, {"fields": {"X": object()}}])
def test_encode_command_raises_what_encoding_twice_raises(params):
    from flask_bitrix24.services.bulk.batch import command_string
    from flask_bitrix24.services.wire import encode_command

    with pytest.raises((ValueError, TypeError)) as old:
        command_string("crm.contact.add", params)
    with pytest.raises((ValueError, TypeError)) as new:
        encode_command("crm.contact.add", params)
    assert type(new.value) is type(old.value) and str(new.value) == str(old.value)
