"""Conversions between request values and the strings legacy crm.* methods store and return."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from .errors import ApiError, crm_error
from .phpform import php_float, php_int, php_string

# Amounts (OPPORTUNITY, TAX_VALUE, product-row prices) are DECIMAL(18,2) columns on a portal: 16 digits before
# the point. An amount from 10^16 up (or INF, NAN) is refused with the legacy error, never clamped or stored.
MAX_AMOUNT = Decimal(10) ** 16

_DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
)


class Clock:
    """Portal time: an injectable time source plus the portal's UTC offset."""

    def __init__(self, now, utc_offset_minutes: int = 180):
        self.now = now
        self.tz = timezone(timedelta(minutes=utc_offset_minutes))
        self._last_second: tuple[int, str] | None = None  # iso(): the second last written, and its text

    def iso(self, ts: float | None = None) -> str:
        """PHP ``date('c')``: seconds precision with the offset, e.g. 2026-11-27T10:00:00+03:00."""
        moment = self.now() if ts is None else ts
        if type(moment) is float and math.isfinite(moment):
            second = math.floor(moment)
            # Below .999 no rounding to microseconds can carry into the next second: the text is the
            # second's, written once per second (every command of a batch has two of them).
            if moment - second < 0.999:
                last = self._last_second
                if last is not None and last[0] == second:
                    return last[1]
                text = datetime.fromtimestamp(second, self.tz).isoformat(timespec="seconds")
                self._last_second = (second, text)
                return text
        return datetime.fromtimestamp(moment, self.tz).isoformat(timespec="seconds")

    def parse(self, text) -> datetime | None:
        """A strtotime-ish reader for the formats clients send; naive values are portal time."""
        if not isinstance(text, str):
            return None
        text = text.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
        for fmt in _DATE_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=self.tz)
        return None

    def datetime_value(self, text) -> str | None:
        moment = self.parse(text)
        return None if moment is None else moment.astimezone(self.tz).isoformat(timespec="seconds")

    def date_value(self, text) -> str | None:
        """A date comes back as local midnight shifted by the offset (a quirk of ConvertDate in the portal's
        source, modules/rest/classes/general/rest_util.php)."""
        moment = self.parse(text)
        if moment is None:
            return None
        return self.date_output(moment.astimezone(self.tz).date())

    def date_output(self, day: date) -> str:
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        offset = self.tz.utcoffset(None)
        return (midnight + offset).isoformat(timespec="seconds")

    def timestamp(self, text) -> float | None:
        moment = self.parse(text)
        return None if moment is None else moment.timestamp()

    def day(self, text) -> date | None:
        """The calendar date of a stored ``date`` value (its first ten characters)."""
        if isinstance(text, str) and re.match(r"^\d{4}-\d\d-\d\d", text):
            return date.fromisoformat(text[:10])
        moment = self.parse(text)
        return None if moment is None else moment.astimezone(self.tz).date()


def out_of_range(value, name: str = "amount") -> ApiError:
    return crm_error(f"The {name} {value} is out of range: an amount is stored as DECIMAL(18,2), so it must be "
                     f"a finite number below {MAX_AMOUNT:f} in absolute value")


def money(value) -> str:
    """Legacy OPPORTUNITY-style numbers: commas become dots, spaces vanish, two decimals; out of range: refused."""
    if isinstance(value, str):
        value = value.replace(" ", "").replace(",", ".")
    number = php_float(value)
    if not math.isfinite(number) or abs(number) >= MAX_AMOUNT:
        raise out_of_range(value if isinstance(value, str) else number)
    return f"{number:.2f}"


def yes_no(value) -> str:
    if value is True:
        return "Y"
    text = php_string(value)
    return "Y" if text is not None and text.strip().upper() in ("Y", "1", "TRUE") else "N"


def integer(value) -> str:
    return str(php_int(value))


def is_empty(value) -> bool:
    return value is None or value == "" or value is False
