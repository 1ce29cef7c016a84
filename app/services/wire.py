"""Bitrix24's wire format: PHP-style form encoding, both ways.

Bitrix24 is PHP. It reads request bodies with ``parse_str`` and posts its events the same way, so
nested data travels as ``fields[PHONE][0][VALUE]=...``. ``flatten_params`` produces pairs that
``parse_str`` turns back into exactly the structure given; ``parse_php_form`` reads such a body
(an event from Bitrix24) into nested dicts the way PHP would.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote_plus

from .numbers import is_digits

__all__ = ["flatten_params", "encode_form", "check_sendable", "parse_php_form", "encode_command", "batch_body",
           "batch_key", "ENCODE_ERRORS"]

# PHP rewrites these characters in a top-level name ("a.b" arrives as "a_b"), and a bracket inside a
# key cannot be told apart from nesting: keys holding them cannot survive the trip, so we refuse them.
_TOP_LEVEL_MANGLED = frozenset(" .")
_BRACKETS = frozenset("[]")


def _scalar(value: Any) -> str:
    # CRM's booleans are "Y"/"N" strings; None clears a field, so it travels as "" (never "None").
    if value is None:
        return ""
    if value is True:
        return "Y"
    if value is False:
        return "N"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot send {value!r} to Bitrix24: not a finite number")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send {value!r} to Bitrix24: not a finite number")
        return format(value, "f")
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Bitrix24: use str, int, float, bool or None")


def _check_key(key: Any, top_level: bool) -> str:
    if type(key) is str and key and "[" not in key and "]" not in key and not (
            top_level and (" " in key or "." in key or key[0].isspace())):
        return key  # the common case, without the sets below
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"parameter names must be str or int, got {type(key).__name__}")
    text = str(key)
    if text == "":
        raise ValueError("an empty parameter name cannot be sent: PHP drops it or reads it as an append")
    if _BRACKETS & set(text):
        raise ValueError(f"parameter name {text!r} contains '[' or ']', which PHP reads as nesting")
    if top_level and (_TOP_LEVEL_MANGLED & set(text) or text[0].isspace()):
        raise ValueError(f"top-level parameter name {text!r} would reach PHP rewritten ('.' and ' ' become '_')")
    return text


def _is_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is dict or kind is list:  # without the Mapping ABC's slow check
        return kind is str or kind is int
    return not isinstance(value, (Mapping, list, tuple))


def _walk(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    kind = type(value)
    if kind is str:  # the common cases first: isinstance against the Mapping ABC is slow
        out.append((prefix, value))
    elif kind is int or kind is bool or value is None:
        out.append((prefix, _scalar(value)))
    elif kind is dict or isinstance(value, Mapping):
        if not value:
            # No form encoding gives PHP an empty array. "key[]=" makes the key arrive as an array
            # (holding one empty string), which list-typed Bitrix24 parameters read as "clear";
            # omitting the key would silently leave the old value in place.
            out.append((prefix + "[]", ""))
            return
        for key, item in value.items():
            name = f"{prefix}[{_check_key(key, False)}]"
            if type(item) is str:
                out.append((name, item))  # a leaf, without the call
            else:
                _walk(name, item, out)
    elif kind is list or isinstance(value, (list, tuple)):
        if not value:
            out.append((prefix + "[]", ""))
        elif all(_is_scalar(item) for item in value):
            out.extend((prefix + "[]", _scalar(item)) for item in value)
        else:
            # Explicit indexes keep the fields of one item together ("a[0][VALUE]", "a[0][VALUE_TYPE]").
            for index, item in enumerate(value):
                _walk(f"{prefix}[{index}]", item, out)
    else:
        out.append((prefix, _scalar(value)))


def flatten_params(data: Mapping[str, Any] | list | tuple | None) -> list[tuple[str, str]]:
    """Flatten nested params into ``(key, value)`` pairs that PHP's ``parse_str`` reads back exactly.

    - dicts nest as ``a[b][c]``; lists of scalars as ``a[]``; other lists as ``a[0][b]``;
    - filter operators stay in the key (``filter[>=DATE_CREATE]``);
    - ``None`` -> ``""``, ``True``/``False`` -> ``"Y"``/``"N"``, numbers -> decimal text,
      dates -> ISO 8601;
    - an empty list or dict is sent as ``key[]=`` so that the key arrives (see ``_walk``);
    - a top-level list is sent positionally (``0=...&1[...]=...``) for the legacy methods that want it.

    Percent-encoding is not done here: ``encode_form`` does it for the body.
    """
    out: list[tuple[str, str]] = []
    if data is None:
        return out
    if isinstance(data, Mapping):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        raise TypeError(f"params must be a dict or a list, got {type(data).__name__}")
    for key, value in items:
        _walk(_check_key(key, True), value, out)
    return out


# What quote(text, safe="") leaves alone (RFC 3986's unreserved characters), and the rest of ASCII as it writes them.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_ESCAPED = {chr(i): f"%{i:02X}" for i in range(128) if chr(i) not in _UNRESERVED}
_RESERVED = re.compile(r"[^A-Za-z0-9_.~-]+")
# Characters other than these four: an already encoded query (``command_string``'s) has none of them.
_NOT_QUERY = re.compile(r"[^A-Za-z0-9_.~%&=?-]")
_KEYS: dict[str, str] = {}  # parameter names as encoded: the same few names come back in every item
_MAX_KEYS, _MAX_KEY_LENGTH = 4096, 200


def _escape(match: re.Match) -> str:
    run = match.group()
    # A run of characters quote() escapes: each UTF-8 byte as %XX (upper-case hex, as quote writes it).
    return _ESCAPED.get(run) or "%" + run.encode("utf-8").hex("%").upper()


def _quote(text: str) -> str:
    """``quote(text, safe="", errors="strict")``, character for character, at a fraction of its CPU: every
    value and name of every body goes through here (a batch command's go through ``_quote_twice`` instead)."""
    if _NOT_QUERY.search(text) is None:
        # Only unreserved characters and %, &, =, ?: an encoded query (or plain text), escaped in four passes.
        return text.replace("%", "%25").replace("&", "%26").replace("=", "%3D").replace("?", "%3F")
    try:
        return _RESERVED.sub(_escape, text)
    except UnicodeEncodeError:
        # errors="strict": a lone surrogate (possible in JSON input) raises instead of being mangled; quote()
        # raises it, so that the error reads as it always did.
        return quote(text, safe="", errors="strict")


def _cached(cache: dict[str, str], key: str, encode: Any) -> str:
    """``encode(key)``, kept in ``cache`` (names up to _MAX_KEY_LENGTH, _MAX_KEYS of them, then it starts over)."""
    encoded = cache.get(key)
    if encoded is None:
        encoded = encode(key)
        if len(key) <= _MAX_KEY_LENGTH:
            if len(cache) >= _MAX_KEYS:
                cache.clear()
            cache[key] = encoded
    return encoded


def _quote_key(key: str) -> str:
    return _cached(_KEYS, key, _quote)


def encode_form(pairs: list[tuple[str, str]]) -> str:
    """Percent-encode pairs as an ``application/x-www-form-urlencoded`` body.

    Every character outside the unreserved set is encoded, brackets included, so no value can be
    mistaken for syntax (``&``, ``=``, ``+``, ``%``, ``#``, ``?``, newlines, unicode as UTF-8); the
    result is what ``urllib.parse.quote(..., safe="", errors="strict")`` makes of each name and value.
    """
    return "&".join([f"{_quote_key(k)}={_quote(v)}" for k, v in pairs])


# What encoding may raise for params that cannot be sent (flatten_params, encode_form, encode_command).
ENCODE_ERRORS = (ValueError, TypeError, UnicodeError, RecursionError)


def check_sendable(params: Any) -> None:
    """Raise what ``encode_form(flatten_params(params))`` would raise (ValueError, TypeError,
    UnicodeError, RecursionError), without making the body: a check of what can be sent."""
    for key, value in flatten_params(params):
        if not key.isascii():
            _quote(key)  # raises for a lone surrogate, as encode_form would, in the same order
        if not value.isascii():
            _quote(value)


class EncodedForm(str):
    """A request body already made by ``form_body`` (or ``batch_body``): passed down as it is, not encoded
    again. ``methods``: a batch body's command keys and each command's method, as ``batch_methods`` reads
    them, kept by ``batch_body`` so that they are not read back out of the text; None elsewhere."""

    methods: dict[str, str] | None = None


def form_body(params: Any) -> EncodedForm:
    """``params`` as the form body Bitrix24 reads (``flatten_params`` + ``encode_form``), once."""
    if isinstance(params, EncodedForm):
        return params
    return EncodedForm(encode_form(flatten_params(params)))


# A batch command travels as the value of ``cmd[key]``: its query (``command_string``) percent-encoded once
# more. Encoding is character by character, so that is each name and value encoded twice, joined by the
# separators encoded once (%26, %3D, %3F). Text encoded once holds only unreserved characters and "%", so
# the second pass is "%" -> "%25": made here in one pass.
_TWICE = {ord(char): "%25" + escaped[1:] for char, escaped in _ESCAPED.items()}  # for str.translate
_NAMES_TWICE: dict[str, str] = {}  # parameter names as a command's query has them, encoded twice


def _escape_twice(match: re.Match) -> str:
    return "%25" + match.group().encode("utf-8").hex(" ").upper().replace(" ", "%25")


def _quote_twice(text: str) -> str:
    """``_quote(_quote(text))``, in one pass."""
    if text.isascii():
        return text.translate(_TWICE)  # each ASCII character on its own: unreserved ones stay as they are
    try:
        return _RESERVED.sub(_escape_twice, text)
    except UnicodeEncodeError:
        return quote(text, safe="", errors="strict")  # raises as encode_form would (a lone surrogate)


def _name_twice(name: str) -> str:
    return _cached(_NAMES_TWICE, name, _quote_twice)


class EncodedCommand(str):
    """One batch command as the body carries it (the value of ``cmd[key]``), made once by ``encode_command``
    and sent as it is however often its batch is sent again; ``method``: its method as ``batch_methods``
    reads it (lower-case, without ``.json``)."""

    method: str | None = None


def encode_command(method: str, params: Any) -> EncodedCommand:
    """``_quote(method?query)`` (the query ``encode_form(flatten_params(params))``), as ``form_body`` would
    write it as the value of ``cmd[key]``, in one pass; raises what encoding raises (ValueError, TypeError,
    UnicodeError, RecursionError)."""
    query = "%26".join([f"{_name_twice(k)}%3D{_quote_twice(v)}" for k, v in flatten_params(params)])
    command = EncodedCommand(f"{_quote(method)}%3F{query}" if query else _quote(method))
    command.method = parse_command_method(method)
    return command


def batch_body(halt: bool, commands: Mapping[str, EncodedCommand]) -> EncodedForm:
    """The body of a ``batch`` call, ``form_body({"halt": 0|1, "cmd": {key: command}})`` to the byte, from
    commands already encoded, with its ``methods`` kept."""
    parts = [f"halt={1 if halt else 0}"]
    parts += [f"cmd%5B{batch_key(key)}%5D={command}" for key, command in commands.items()]
    body = EncodedForm("&".join(parts))
    body.methods = {str(key): command.method for key, command in commands.items() if command.method is not None}
    return body


def batch_key(key: Any) -> str:
    """A batch command's key as the body carries it (``cmd%5B<key>%5D``); raises what ``form_body`` would
    for a key PHP would misread (ValueError, TypeError, UnicodeError)."""
    return _quote_key(_check_key(key, False))


# ---------------------------------------------------------------------------------------------------
# Reading PHP-style forms (Bitrix24's outbound events)

MAX_NESTING = 64  # PHP's max_input_nesting_level default


def _split_name(name: str) -> tuple[str, list[str]] | None:
    """Split ``a[b][]`` into ``("a", ["b", ""])`` the way PHP's variable registration does."""
    name = name.lstrip(" ")
    open_at = name.find("[")
    if open_at <= 0:
        base, rest = (name, "") if open_at < 0 else ("", name)
    else:
        base, rest = name[:open_at], name[open_at:]
    if not base:
        return None
    segments: list[str] = []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            if not segments:
                # An unmatched first bracket is not nesting: PHP keeps it as "_" in the name.
                base = base + "_" + rest[1:]
            break
        segments.append(rest[1:close])
        rest = rest[close + 1 :]
        if len(segments) > MAX_NESTING:
            raise ValueError("form keys nest deeper than PHP allows")
    # Characters after the last "]" that do not open another segment are ignored, as in PHP.
    base = base.replace(".", "_").replace(" ", "_")
    return base, segments


def _next_index(node: dict[str, Any]) -> str:
    # "a[]" appends at one past the largest integer key, as PHP arrays do.
    ints = [int(k) for k in node if _is_int_key(k)]
    return str(max(ints) + 1 if ints else 0)


def _is_int_key(key: str) -> bool:
    # PHP turns "12" and "-3" into integer keys, but not "012" or "1.0".
    digits = key[1:] if key.startswith("-") else key
    return is_digits(digits) and (digits == "0" or not digits.startswith("0")) and key != "-0"


def parse_php_form(body: str | bytes, *, max_pairs: int = 10_000) -> dict[str, Any]:
    """Parse a form body the way PHP's ``parse_str`` does, into nested dicts and lists.

    An array whose keys are 0..n-1 in order becomes a list (as PHP's ``json_encode`` would show it);
    any other array is a dict with string keys. Later duplicates of a key win. Raises ``ValueError``
    on bodies that are not UTF-8, have too many fields or nest too deeply.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("form body is not UTF-8") from exc
    root: dict[str, Any] = {}
    pairs = [p for p in body.split("&") if p]
    if len(pairs) > max_pairs:
        raise ValueError(f"form body has more than {max_pairs} fields")
    for pair in pairs:
        raw_name, _, raw_value = pair.partition("=")
        split = _split_name(unquote_plus(raw_name))
        if split is None:
            continue
        base, segments = split
        node, key = root, base
        for segment in segments:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node, key = child, (segment if segment != "" else _next_index(child))
        node[key] = unquote_plus(raw_value)
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted


def batch_section(value: Any) -> dict[str, Any]:
    """A section of a batch answer (``result``, ``result_error``, ``result_time``...) as a dict by command key:
    it is a list when the keys were 0..n-1, an object otherwise, and [] when empty
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html)."""
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {}


_ENCODED_COMMAND = re.compile(r"(?:^|&)cmd(?:%5B|\[)([^&=]*?)(?:%5D|\])=([^&]*)")


def batch_methods(params: Any) -> dict[str, str]:
    """A batch call's command keys and each command's method (lower-case), from its params (``{"cmd":
    {...}}`` or a list) or from its body already encoded (``cmd%5Bkey%5D=method%3Fquery``). The encoded
    body is only scanned, not decoded: this runs on every batch request."""
    from urllib.parse import unquote

    if isinstance(params, EncodedForm) and params.methods is not None:
        return dict(params.methods)  # a batch_body: known without reading the text
    if isinstance(params, str):
        found = {}
        for key, value in _ENCODED_COMMAND.findall(params):
            method = parse_command_method(unquote(value.split("%3F", 1)[0].split("?", 1)[0]))
            if method is not None:
                found[unquote(key)] = method
        return found
    cmd = params.get("cmd") if isinstance(params, dict) else None
    items = enumerate(cmd) if isinstance(cmd, list) else cmd.items() if isinstance(cmd, dict) else ()
    return {str(k): m for k, v in items if (m := parse_command_method(v)) is not None}


def parse_command_method(command: Any) -> str | None:
    """The method of one batch command (``crm.contact.update?id=5&...``), lower-case, or None."""
    if not isinstance(command, str):
        return None
    name = command.split("?", 1)[0].strip().lower()
    if name.endswith(".json"):
        name = name[: -len(".json")]
    return name or None
