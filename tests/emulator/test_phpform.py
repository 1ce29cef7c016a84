"""Request bodies (PHP parse_str semantics and casts) and JSON encoding details.

Sources: https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html (the documented form keys);
the portal's PHP source, which reads form bodies with PHP's parse_str (modules/rest/classes/general/rest_util.php)
and encodes answers with modules/main/lib/web/json.php.
"""

import json

import pytest

from bitrix24_emulator.phpform import parse_str, php_bool, php_int, split_name
from bitrix24_emulator.phpjson import dumps


def test_nested_keys():
    """fields[PHONE][0][VALUE] builds nested arrays; values are percent- and plus-decoded
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    parsed = parse_str("fields[TITLE]=My%20company&fields[PHONE][0][VALUE]=112233"
                       "&fields[PHONE][0][VALUE_TYPE]=WORK&q=a+b")
    assert parsed == {"fields": {"TITLE": "My company", "PHONE": {"0": {"VALUE": "112233", "VALUE_TYPE": "WORK"}}},
                      "q": "a b"}


def test_empty_brackets_append():
    """select[]=ID&select[]=NAME appends with the next integer key
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    assert parse_str("select[]=ID&select[]=NAME") == {"select": {"0": "ID", "1": "NAME"}}
    assert parse_str("a[5]=x&a[]=y") == {"a": {"5": "x", "6": "y"}}


def test_operator_keys_are_url_encoded():
    """filter[%3E%3DID]=5 is filter[>=ID]=5
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html)."""
    assert parse_str("filter[%3E%3DID]=5") == {"filter": {">=ID": "5"}}


def test_top_level_dot_and_space_become_underscore():
    """PHP's parse_str: '.' and ' ' in the base name become '_', not inside brackets."""
    assert parse_str("a.b=1&c+d=2&e[f.g]=3") == {"a_b": "1", "c_d": "2", "e": {"f.g": "3"}}


def test_name_edge_cases():
    """PHP's parse_str: unterminated '[' becomes '_', trailing junk after ']' is ignored, empty names dropped."""
    assert split_name("a[b") == ["a_b"]
    assert parse_str("a[b]x=1") == {"a": {"b": "1"}}
    assert parse_str("=1&[x]=2&&flag") == {"flag": ""}
    assert parse_str(" lead=1") == {"lead": "1"}


def test_later_value_overwrites():
    """A later scalar replaces an array and vice versa, as in PHP's parse_str."""
    assert parse_str("a=1&a[b]=2") == {"a": {"b": "2"}}
    assert parse_str("a[b]=2&a=1") == {"a": "1"}


@pytest.mark.parametrize("value,expected", [
    ("false", True), ("0", False), ("", False), (0, False), (1, True), ("1", True), (None, False),
    ([], False), ({"a": 1}, True), (False, False), ("0.0", True),
])
def test_php_bool_cast(value, expected):
    """halt is read with PHP (bool): the form string "false" is TRUE (the portal's source,
    modules/rest/classes/general/rest_provider.php methodsBatch)."""
    assert php_bool(value) is expected


def test_php_int_cast():
    """ids are cast with (int): a numeric prefix counts, garbage is 0 (the portal's source,
    modules/crm/classes/general/restservice.php, CCrmRestProxyBase get/update/delete)."""
    assert php_int("12abc") == 12
    assert php_int("abc") == 0
    assert php_int(" 7") == 7
    assert php_int("-3") == -3
    assert php_int(4.9) == 4


def test_json_escapes_like_bitrix():
    """quotes, <, >, &, ' are \\u00XX escaped, '/' is '\\/', unicode is left as is (the portal's source,
    modules/main/lib/web/json.php)."""
    text = dumps({"a": 'He said "hi" <b> & \'x\' a/b Привет'})
    assert '\\u0022' in text and '\\u003C' in text and '\\u0026' in text and '\\u0027' in text
    assert '\\/' in text and "Привет" in text
    assert json.loads(text) == {"a": 'He said "hi" <b> & \'x\' a/b Привет'}


def test_json_empty_array_and_sequential_keys():
    """An empty PHP array is [], and 0..n-1 keys become a JSON list, anything else an object (the portal's
    source, modules/main/lib/web/json.php)."""
    assert dumps({}) == "[]"
    assert dumps({"0": "a", "1": "b"}) == '["a","b"]'
    assert dumps({"1": "a"}) == '{"1":"a"}'
