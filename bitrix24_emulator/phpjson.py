"""JSON output as Bitrix's ``Json::encode`` writes it.

The server uses JSON_HEX_TAG|HEX_AMP|HEX_APOS|HEX_QUOT|UNESCAPED_UNICODE, so quotes, <, >, & and '
become \\u00XX escapes, '/' becomes '\\/', and non-ASCII text is left as UTF-8. Clients must cope
with this, so the emulator reproduces it rather than using json.dumps' defaults.
"""

from __future__ import annotations

import re
from math import isfinite

_ESCAPES = {
    '"': "\\u0022",
    "\\": "\\\\",
    "/": "\\/",
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "'": "\\u0027",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


_PLAIN = re.compile(r"[^\"\\/<>&'\x00-\x1f\u2028\u2029]*")


def _string(text: str) -> str:
    if _PLAIN.fullmatch(text):
        return '"' + text + '"'  # nothing to escape (most strings): the same output, without the loop
    out = []
    for ch in text:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " " or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float(number: float) -> str:
    if isfinite(number):
        return repr(number)
    return "0"  # PHP refuses NAN and INF; 0 keeps the document valid


_KEYS: dict[str, str] = {}  # object keys as written, with their ":" (the same few names in every answer)


def _key(key) -> str:
    if type(key) is not str:
        return _string(str(key)) + ":"
    text = _KEYS.get(key)
    if text is None:
        text = _string(key) + ":"
        if len(key) <= 64:
            if len(_KEYS) >= 4096:
                _KEYS.clear()
            _KEYS[key] = text
    return text


def _encode(value, out: list) -> None:
    kind = type(value)
    # The common types first, by exact type; anything else (bool, None, subclasses) as before.
    if kind is str:
        out.append(_string(value))
    elif kind is dict:
        _encode_dict(value, out)
    elif kind is int:
        out.append(str(value))
    elif kind is float:
        out.append(_float(value))
    elif kind is list:
        _encode_list(value, out)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, dict):
        _encode_dict(value, out)
    elif isinstance(value, (list, tuple)):
        _encode_list(value, out)
    else:
        out.append(_string(str(value)))


def _encode_dict(value: dict, out: list) -> None:
    if not value:
        out.append("[]")  # an empty PHP array is always a list
        return
    if str(next(iter(value))) == "0" and all(str(k) == str(i) for i, k in enumerate(value)):
        _encode(list(value.values()), out)  # keys 0..n-1 in order: PHP emits a list
        return
    append = out.append
    keys = _KEYS
    opening = "{"
    for key, item in value.items():
        # What _key() and _encode() would write, the commonest cases inline: a known string key, an item
        # of type str, int or float.
        text = keys.get(key) if type(key) is str else None
        append(opening + (text or _key(key)))
        opening = ","
        kind = type(item)
        if kind is str:
            append(_string(item))
        elif kind is int:
            append(str(item))
        elif kind is float:
            append(repr(item) if isfinite(item) else "0")
        else:
            _encode(item, out)
    append("}")


def _encode_list(value, out: list) -> None:
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        _encode(item, out)
    out.append("]")


def dumps(value) -> str:
    out: list = []
    _encode(value, out)
    return "".join(out)
