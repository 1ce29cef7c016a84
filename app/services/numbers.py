"""Whole numbers written as text: ASCII digits only.

``str.isdigit()`` is also true for "²", "①" and "٣": ``int()`` then raises on the first two (a 500)
and reads the last as 3. Every check of "is this text a whole number" in the package goes through
``is_digits`` instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_digits", "as_id"]


def is_digits(value: Any) -> bool:
    """True for a non-empty string of the ASCII digits 0-9 only (no sign, no spaces)."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def as_id(value: Any) -> Any:
    """An id as an int when it is one (an int, not a bool, or ASCII digits); anything else as it came."""
    if is_digits(value):
        return int(value)
    return value
