"""The ``batch`` method (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html): up to 50
``method?query`` commands with cross-references."""

from __future__ import annotations

import re

from .errors import ApiError, batch_length_exceeded
from .phpform import array_items, parse_str, php_bool

MAX_COMMANDS = 50
_REFERENCE = re.compile(r"\$(result|next|total|time|error)((?:\[[^\]]+\])+)", re.IGNORECASE)
_SEGMENT = re.compile(r"\[([^\]]+)\]")


def _walk(start, path: str):
    """Follow ``[a][b]`` from ``start``; an unresolvable step leaves the partial value (SRC)."""
    current = start
    for segment in _SEGMENT.findall(path):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        else:
            break
    return current


def _substitute(value, sections: dict):
    if isinstance(value, dict):
        return {k: _substitute(v, sections) for k, v in value.items()}
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        return _walk(sections[whole.group(1).lower()], whole.group(2))

    def replace(match: re.Match) -> str:
        resolved = _walk(sections[match.group(1).lower()], match.group(2))
        return resolved if isinstance(resolved, str) else match.group(0)

    return _REFERENCE.sub(replace, value)


def run_batch(params: dict, execute) -> dict:
    """``execute(method, params)`` returns (result, total, next, time) or raises ApiError."""
    results, errors, totals, nexts, times = {}, {}, {}, {}, {}
    sections = {"result": results, "error": errors, "total": totals, "next": nexts, "time": times}
    halt = php_bool(params.get("halt"))
    count = 0
    for key, command in array_items(params.get("cmd")):
        if not isinstance(command, str):
            continue  # non-string commands are silently skipped
        count += 1
        try:
            if count > MAX_COMMANDS:
                raise batch_length_exceeded()
            # parse_url + parse_str: the path is the method, the fragment is cut off.
            method, _, rest = command.partition("?")
            raw = rest.split("#", 1)[0]
            query = parse_str(raw)
            if "$" in raw or "%24" in raw:  # else no value can hold a reference ("$" arrives as itself or %24)
                query = _substitute(query, sections)
            method = method.strip().lstrip("/")
            result, total, next_, time_ = execute(method, query)
        except ApiError as err:
            errors[key] = err.body()
            if halt:
                break  # later keys are absent from every section
            continue
        results[key] = result
        if total is not None:
            totals[key] = total
        if next_ is not None:
            nexts[key] = next_
        times[key] = time_
    # Empty sections are [] and 0..n-1 keys become lists: phpjson does both on output.
    return {"result": results, "result_error": errors, "result_total": totals, "result_next": nexts,
            "result_time": times}
