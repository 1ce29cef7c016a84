"""PHP form semantics: ``parse_str`` key handling and the scalar casts the Bitrix server applies.

The real server is PHP, so a query string or form body reaches a method exactly as ``parse_str``
would build it. Arrays are kept as Python dicts with string keys (PHP arrays are ordered maps);
JSON bodies may bring real lists, so every helper here accepts both.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from urllib.parse import unquote

MAX_DEPTH = 64  # PHP's max_input_nesting_level

_NUMERIC_PREFIX = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CANONICAL_INT = re.compile(r"^(0|-?[1-9]\d*)$")

_ESCAPE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_ASCII_ESCAPES = {f"%{hi}{lo}": chr(int(hi + lo, 16)) for hi in "01234567" for lo in "0123456789abcdefABCDEF"}
_HEX_PAIRS = {key[1:]: char for key, char in _ASCII_ESCAPES.items()}
_NON_ASCII_ESCAPE = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]")
_MANY_ESCAPES = 6  # past this many (a batch command, encoded twice), one split is quicker than a match each
_CACHED_NAME = 256  # names up to this long are split once: the same few come in every request


def _unescape(match: re.Match) -> str:
    run = match.group()
    return _ASCII_ESCAPES.get(run) or bytes.fromhex(run.replace("%", "")).decode("utf-8", "replace")


def unquote_plus(text: str) -> str:
    """``urllib.parse.unquote_plus``, the same result (each run of %XX escapes read as UTF-8, "replace" on
    errors; a malformed escape left as it is), with less CPU for the short names and values of a form."""
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    if text.isascii() and "\\" not in text:
        # Every %XX becomes \xXX for Python's own escape decoder, which reads nothing else here (the text had
        # no backslash) and refuses a % not followed by two hex digits: then the general reading below.
        # What it gives is one character per byte, which urllib would have decoded as UTF-8 (on ASCII text
        # it decodes the whole string's bytes at once, "replace" on errors): only needed past ASCII.
        try:
            decoded = text.replace("%", "\\x").encode("ascii").decode("unicode_escape")
        except UnicodeDecodeError:
            return _unquote_general(text)
        return decoded if decoded.isascii() else decoded.encode("latin-1").decode("utf-8", "replace")
    return _unquote_general(text)


def _unquote_general(text: str) -> str:
    """unquote_plus past its "+" and its fast path: a malformed escape, a backslash or non-ASCII text."""
    if text.count("%") <= _MANY_ESCAPES:
        return _ESCAPE_RUN.sub(_unescape, text)
    if _NON_ASCII_ESCAPE.search(text) is not None:
        return unquote(text)  # escaped UTF-8: urllib's reading, runs of bytes decoded together
    # Every escape stands for one ASCII character, alone: urllib's loop, without its bytes.
    pieces = text.split("%")
    pairs = _HEX_PAIRS
    return pieces[0] + "".join([(pairs.get(p[:2]) or "%" + p[:2]) + p[2:] for p in pieces[1:]])


@lru_cache(maxsize=4096)
def _split_encoded(raw: str) -> tuple[str | None, ...] | None:
    parts = split_name(unquote_plus(raw))
    return None if parts is None else tuple(parts)


def parse_str(query: str | bytes) -> dict:
    """Parse ``a[b][]=1&c=2`` the way PHP's ``parse_str`` does."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    result: dict = {}
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        parts = _split_encoded(name) if len(name) <= _CACHED_NAME else split_name(unquote_plus(name))
        _assign_parts(result, parts, unquote_plus(value))
    return result


def assign_pairs(pairs) -> dict:
    """Build a PHP array from already-decoded (name, value) pairs, e.g. multipart form fields."""
    result: dict = {}
    for name, value in pairs:
        assign(result, name, value)
    return result


def split_name(name: str) -> list[str | None] | None:
    """Split a PHP variable name into its base and bracket indices (``None`` means ``[]``).

    Mirrors php_register_variable_ex: leading spaces dropped, ' ' and '.' in the base become '_',
    an unterminated first '[' becomes '_' too, and anything after the last ']' that does not open
    another index is ignored.
    """
    name = name.lstrip(" ")
    bracket = name.find("[")
    base = name if bracket == -1 else name[:bracket]
    if " " in base or "." in base:
        base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return None
    if bracket == -1:
        return [base]
    if name.find("]", bracket + 1) == -1:
        # Not an index after all: the '[' and any ' ', '.', '[' after it become '_'.
        return [base + "_" + re.sub(r"[ .\[]", "_", name[bracket + 1:])]
    parts: list[str | None] = [base]
    pos = bracket
    while pos < len(name) and name[pos] == "[":
        close = name.find("]", pos + 1)
        if close == -1:
            break  # an unterminated later index is dropped, the value lands on the previous level
        index = name[pos + 1:close]
        parts.append(None if index == "" else index)
        pos = close + 1
        if len(parts) > MAX_DEPTH:
            return None
    return parts


def _next_index(array: dict) -> str:
    ints = [int(k) for k in array if _CANONICAL_INT.match(k)]
    return str(max(ints) + 1) if ints and max(ints) >= 0 else "0"


def assign(result: dict, name: str, value) -> None:
    _assign_parts(result, split_name(name), value)


def _assign_parts(result: dict, parts, value) -> None:
    if parts is None:
        return
    target = result
    for key in parts[:-1]:
        if key is None:
            key = _next_index(target)
        child = target.get(key)
        if not isinstance(child, dict):
            child = {}
            target[key] = child
        target = child
    key = parts[-1]
    if key is None:
        key = _next_index(target)
    target[key] = value


# ---- scalar casts -------------------------------------------------------------------------------

def php_float(value) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # json_decode reads an integer too large for a double as INF, as PHP does
            return math.inf if value > 0 else -math.inf
    if isinstance(value, (dict, list)):
        return 1.0 if value else 0.0
    if value is None:
        return 0.0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return float(value)  # the common case (stored IDs and amounts), without the regex
    match = _NUMERIC_PREFIX.match(str(value))
    return float(match.group(0)) if match else 0.0


_EXACT_INT = 2**53  # up to this size an int goes through a float unchanged


def php_int(value) -> int:
    """PHP ``(int)`` cast: leading numeric prefix, truncated; garbage is 0."""
    if type(value) is int and -_EXACT_INT <= value <= _EXACT_INT:
        return value  # what int(php_float(value)) gives back: the float holds it exactly
    number = php_float(value)
    if math.isnan(number) or math.isinf(number):
        return 0
    return int(number)


def php_bool(value) -> bool:
    """PHP ``(bool)`` cast: only 0, "0", "", null and empty arrays are false ("false" is true)."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, (dict, list)):
        return bool(value)
    return bool(value)


def php_string(value) -> str | None:
    """PHP ``(string)`` cast for scalars; None stays None (JSON null)."""
    if value is None:
        return None
    if value is True:
        return "1"
    if value is False:
        return ""
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, (dict, list)):
        return "Array"
    return str(value)


def is_array(value) -> bool:
    return isinstance(value, (dict, list))


def array_items(value) -> list[tuple[str, object]]:
    """(key, value) pairs of a PHP array given as dict or list."""
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        return [(str(i), v) for i, v in enumerate(value)]
    return []


def array_values(value) -> list:
    return [v for _, v in array_items(value)]


def is_sequential(keys) -> bool:
    """True when PHP's json_encode would emit a list: keys are exactly 0..n-1 in order."""
    return all(str(k) == str(i) for i, k in enumerate(keys))


def to_json_shape(value):
    """Turn PHP-style dicts with keys 0..n-1 into lists (and an empty array into [])."""
    if isinstance(value, dict):
        if is_sequential(value.keys()):
            return [to_json_shape(v) for v in value.values()]
        return {k: to_json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_shape(v) for v in value]
    return value
