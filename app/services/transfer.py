"""Export every record of an entity to JSON Lines or CSV, and import such a file back through the bulk
write path: the service under ``flask bitrix24 export`` / ``flask bitrix24 import``.

Export walks the listing by ID (``bx_list_all``: ``start=-1`` and ``>ID``, 50 pages per batch request,
constant memory; https://apidocs.bitrix24.com/settings/performance/huge-data.html) and hands out one row
at a time. Import reads one row at a time and writes them in chunks through ``bulk_write`` (50 per batch
request). Each new record carries an ``ORIGIN_ID`` (the row's own, a column the caller names, or one made
of the file's name and the row's line) with an ``ORIGINATOR_ID``, so running an interrupted import again
finds what the first run made instead of making it twice (``ORIGIN_ID`` / ``ORIGINATOR_ID``:
https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-add.html).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..entities import ENTITIES, FIRST_SMART_PROCESS_TYPE, Entity, smart_process
from .bitrix24_service import bx_call
from .bulk import bulk_write
from .bulk.list_all import bx_list_all
from .numbers import is_digits
from .wire import ENCODE_ERRORS, check_sendable

FORMATS = ("jsonl", "csv")
# ORIGINATOR_ID of the records an import makes with an ORIGIN_ID of its own making (file and line)
IMPORT_ORIGINATOR = "flask-bitrix24-import"
# Values of a multiple field share one CSV cell, joined by this; an import splits the cell on ";"
# (Bitrix24 multi-fields, e.g. PHONE / EMAIL: https://apidocs.bitrix24.com/api-reference/crm/data-types.html#crm_multifield)
MULTI_SEPARATOR = "; "
# Rows per bulk_write call during an import: progress is reported (and the failures file written) per chunk.
# Two rounds of the batches a bulk write has in flight (BITRIX_BULK_PARALLEL, 4, of 50): a chunk of 250 was
# four batches, then one alone, and a chunk ends only when its last batch does (bench/budget.py).
IMPORT_CHUNK = 400
MULTI_TYPES = ("crm_multifield",)
# Field types whose one value is an object (a file's {"fileData": [name, base64]}, an activity's SETTINGS):
# https://apidocs.bitrix24.com/api-reference/crm/data-types.html; another field that is not multiple takes a scalar
OBJECT_TYPES = ("file", "diskfile", "object")
# The fields an import finds its records by on a rerun
MARKERS = ("ORIGIN_ID", "ORIGINATOR_ID")
# Spreadsheet formula injection (OWASP "CSV Injection": https://owasp.org/www-community/attacks/CSV_Injection): a
# cell starting with one of these is a formula to Excel / LibreOffice / Google Sheets. Export writes such a cell
# with a leading "'" (the spreadsheets' own "this is text" mark), import takes one "'" off again.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ...except a plain number ("-5", "+1.5", "-1e3"): a number to a spreadsheet, never a formula, left as it is
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The longest CSV cell an import takes (characters): BITRIX_MAX_BODY_BYTES' default, the largest request body
# the plugin's own endpoints read; a row with a longer cell fails (INVALID_LINE), the others are imported
MAX_CELL = 1_048_576
# How deep a JSON Lines row may nest: Bitrix24's deepest field values (a multi-field: a list of objects) need 3
MAX_DEPTH = 8

# A filter given on the command line: [OPERATOR]FIELD=VALUE, the operators of
# https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html (and !%, !=%, !%= of
# https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html)
_FILTER_ARG = re.compile(
    r"^(?P<op>!=%|!%=|!=|!@|!%|>=|<=|=%|%=|=|!|>|<|@|%)?(?P<field>[A-Za-z][A-Za-z0-9_]*)=(?P<value>.*)$", re.DOTALL)


class TransferUsage(ValueError):
    """What the caller asked for cannot be done as asked (unknown entity, field or format): nothing was sent."""


def resolve_entity(name: str) -> Entity:
    """``contacts`` (any name of the entity table) or ``items:<entityTypeId>`` (a smart process)."""
    if name in ENTITIES:
        return ENTITIES[name]
    kind, _, type_id = name.partition(":")
    if kind == "items" and is_digits(type_id) and int(type_id) >= FIRST_SMART_PROCESS_TYPE:
        return smart_process(int(type_id))
    known = ", ".join([*ENTITIES, f"items:<entityTypeId, {FIRST_SMART_PROCESS_TYPE} or more>"])
    raise TransferUsage(f"unknown entity {name!r}: use one of {known}")


def _base_params(entity: Entity) -> dict[str, Any]:
    # crm.item.* name the smart process in every call: https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-list.html
    return {"entityTypeId": entity.type_id} if entity.prefix == "crm.item" else {}


def entity_fields(entity: Entity, client_id: int) -> dict[str, dict[str, Any]]:
    """The entity's field descriptions (``crm.*.fields``; ``crm.item.fields`` and ``tasks.task.getFields``
    wrap them in ``fields``), in the portal's order."""
    result = bx_call(entity.method("fields"), _base_params(entity) or None, client_id=client_id)["result"]
    if isinstance(result, dict) and set(result) == {"fields"} and isinstance(result["fields"], dict):
        result = result["fields"]
    if not isinstance(result, dict):
        return {}
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in result.items()}


def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """``["%NAME=An", ">ID=10", "@ID=1,2,3"]`` -> a list filter. A key given twice, or with ``@`` / ``!@``
    (values split on commas), becomes a list."""
    out: dict[str, Any] = {}
    for item in items:
        match = _FILTER_ARG.fullmatch(item)
        if match is None:
            raise TransferUsage(f"--filter {item!r}: write [OPERATOR]FIELD=VALUE, e.g. NAME=Ann, >ID=100, %TITLE=deal")
        key, value = f"{match['op'] or ''}{match['field']}", match["value"]
        values: list[str] = value.split(",") if match["op"] in ("@", "!@") else [value]
        if key in out:
            previous = out[key] if isinstance(out[key], list) else [out[key]]
            out[key] = previous + values
        else:
            out[key] = values if match["op"] in ("@", "!@") else value
    return out


def _id_field(entity: Entity) -> str:
    """The id's name in filters and rows: ``id`` for crm.item.*, ``ID`` for the rest."""
    return "id" if entity.camel else "ID"


def _camel(name: str) -> str:
    """RESPONSIBLE_ID -> responsibleId: tasks.task.list answers with camelCase keys for UPPER_CASE names."""
    head, *rest = name.lower().split("_")
    return head + "".join(p.title() for p in rest)


@dataclass
class ExportPlan:
    entity: Entity
    params: dict[str, Any]  # the *.list params: filter and select
    columns: list[str]  # CSV columns, in order: the select's, else the entity's fields


def export_plan(entity: Entity, client_id: int, filters: dict[str, Any], select: list[str]) -> ExportPlan:
    """Check the filter and select against the entity's fields (Bitrix24 drops an unknown filter key
    silently and would export every row) and choose the columns.

    Without ``select`` every field is exported: legacy lists are asked for ``*`` (standard fields), ``UF_*``
    (user fields) and the multi-fields by name, which ``*`` leaves out
    (https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-list.html); ``crm.item.list`` for ``*``.
    """
    fields = entity_fields(entity, client_id)
    known = set(fields) | {_id_field(entity)}
    for key in filters:
        name = _FILTER_ARG.fullmatch(f"{key}=").group("field")  # type: ignore[union-attr]
        if fields and name not in known:
            raise TransferUsage(f"--filter {key}: {entity.name} has no field {name!r} (Bitrix24 would ignore it and "
                                f"return every row)")
    columns: list[str] = []
    wanted: list[str] = []
    for raw in select:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name == "*":
                expand = [n for n, f in fields.items() if not n.startswith("UF_") and f.get("type") not in MULTI_TYPES]
            elif name == "UF_*":
                expand = [n for n in fields if n.startswith("UF_")]
            elif fields and name not in known:
                raise TransferUsage(f"--select {name}: {entity.name} has no field {name!r}")
            else:
                expand = [name]
            wanted.append(name)
            columns.extend(n for n in expand if n not in columns)
    params: dict[str, Any] = dict(_base_params(entity))
    if filters:
        params["filter"] = filters
    if wanted:
        params["select"] = wanted
    else:
        columns = list(fields)
        if entity.prefix == "crm.item":
            params["select"] = ["*"]
        elif entity.prefix.startswith("crm."):
            multi = [n for n, f in fields.items() if f.get("type") in MULTI_TYPES]
            params["select"] = ["*", "UF_*", *multi]
    return ExportPlan(entity, params, columns)


def export_rows(plan: ExportPlan, client_id: int, on_total: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Every matching row, walked by ID, one batch of 2,500 in memory at a time."""
    return bx_list_all(plan.entity.method("list"), plan.params, client_id=client_id, on_total=on_total)


def csv_cell(value: Any) -> str:
    """One value as CSV text: multi-fields (``[{"VALUE": ..., "VALUE_TYPE": ...}]``) and lists of scalars
    become their values joined by ``"; "`` (the value types are dropped), other nested values JSON,
    booleans ``Y`` / ``N``, ``None`` the empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, list):
        if all(isinstance(v, dict) and "VALUE" in v for v in value):
            return MULTI_SEPARATOR.join(str(v["VALUE"]) for v in value if v.get("VALUE") not in (None, ""))
        if all(not isinstance(v, (dict, list)) for v in value):
            return MULTI_SEPARATOR.join(csv_cell(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def guard_formula(text: str) -> str:
    """``=SUM(A1)`` -> ``'=SUM(A1)``: a cell whose first character after any ``'`` is in ``FORMULA_START``
    gets one more ``'`` (so a value that already began with ``'=`` comes back from ``unguard_formula`` as it
    was); plain numbers, negative ones included, are left alone."""
    if text.lstrip("'")[:1] in FORMULA_START and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def unguard_formula(text: str) -> str:
    """Undo ``guard_formula``: ``'=SUM(A1)`` -> ``=SUM(A1)``, ``''=x`` -> ``'=x``; any other cell as it is."""
    if text.startswith("'") and text.lstrip("'")[:1] in FORMULA_START:
        return text[1:]
    return text


class RowWriter:
    """Writes rows to a text stream as JSON Lines (one object a line, as the portal sent it) or as CSV
    (a header of ``columns``, then one line per row, cells by ``csv_cell``, through ``guard_formula``
    unless ``formula_guard`` is off)."""

    def __init__(self, out: IO[str], fmt: str, columns: list[str], camel_keys: bool = False,
                 formula_guard: bool = True) -> None:
        self.out, self.fmt, self.columns, self.camel_keys = out, fmt, columns, camel_keys
        self.formula_guard = formula_guard
        self._csv = self._quoted = None
        if fmt == "csv":
            self._csv = csv.writer(out, lineterminator="\n")
            # quotes a cell only if it holds "," '"' or the line terminator "\n": a bare "\r" would go out
            # unquoted and split the row for every reader, so a row holding one is written fully quoted
            self._quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
            self._csv.writerow(columns)

    def write(self, row: Any) -> None:
        if self._csv is None:
            self.out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            return
        row = row if isinstance(row, dict) else {}
        cells = []
        for name in self.columns:
            value = row.get(name)
            if value is None and self.camel_keys:
                value = row.get(_camel(name))
            cell = csv_cell(value)
            cells.append(guard_formula(cell) if self.formula_guard else cell)
        (self._quoted if any("\r" in cell for cell in cells) else self._csv).writerow(cells)  # type: ignore[union-attr]


# ---- import -------------------------------------------------------------------------------------------------


def detect_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if ext == "csv":
        return "csv"
    raise TransferUsage(f"cannot tell the format of {path!r} from its name: give --format jsonl or --format csv")


def origin_prefix(path: str) -> str:
    """The first part of the ORIGIN_IDs an import makes for rows without one: the SHA-256 of the file's
    name (not its folder, not its content), so the same file imported again, from anywhere and after
    its failed rows were fixed, gets the same ORIGIN_IDs."""
    return hashlib.sha256(os.path.basename(path).encode("utf-8")).hexdigest()[:16]


@dataclass
class SourceRow:
    line: int  # the row's line in the file (CSV: the header is line 1; a quoted cell may span lines)
    fields: dict[str, Any] | None  # None: the line could not be read
    raw: Any = None  # what the file held, for the failures file
    error: str | None = None


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    # json.loads reads 1e999 as inf, and NaN / Infinity at all: Bitrix24 (and the form encoding) take neither
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is not a finite number")
    return value


def _no_constant(text: str) -> float:
    raise _NotFinite(f"{text} is not a number JSON allows")


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def read_rows(stream: IO[str], fmt: str, *, max_cell: int = MAX_CELL,
              columns: list[str] | None = None) -> Iterator[SourceRow]:
    """Rows of a JSON Lines or CSV file, one at a time. Blank JSON lines are skipped; a line that cannot be
    a row (not a JSON object, a number that is not finite, nested over ``MAX_DEPTH`` levels, a CSV cell of
    more than ``max_cell`` characters) is a row that failed (``INVALID_LINE``), and reading goes on. A CSV
    cell that ``guard_formula`` marked loses its ``'`` in ``fields`` (``raw`` keeps the file's text).
    ``columns``, if given, gets the file's column names: the CSV header, or every key of the JSON rows read.
    Byte order marks before the first line are dropped, however many (a file saved twice with one)."""
    seen: set[str] = set()
    if fmt == "jsonl":
        for number, text in enumerate(stream, start=1):
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
            except _NotFinite as exc:
                yield SourceRow(number, None, text.rstrip("\n"), f"{exc}: Bitrix24 takes finite numbers only")
                continue
            except RecursionError:
                yield SourceRow(number, None, text.rstrip("\n"), f"nested more than {MAX_DEPTH} levels deep")
                continue
            except ValueError as exc:
                yield SourceRow(number, None, text.rstrip("\n"), f"not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                kind = type(value).__name__
                yield SourceRow(number, None, value, f"a line must be a JSON object of fields, not {kind}")
                continue
            if _too_deep(value):
                yield SourceRow(number, None, text.rstrip("\n"), f"nested more than {MAX_DEPTH} levels deep")
                continue
            if columns is not None and not seen.issuperset(value):
                columns.extend(key for key in value if key not in seen)
                seen.update(value)
            yield SourceRow(number, value, value)
        return
    # The csv module's own limit (131,072 characters a cell) raises in the middle of the file; it is set
    # well above max_cell so that the reader keeps its place, and longer cells are refused here, row by row.
    csv.field_size_limit(max(csv.field_size_limit(), 64 * max_cell))
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise TransferUsage(f"the CSV header line cannot be read: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise TransferUsage("the CSV file has no header line: its first line must name the fields")
    header = [h.strip() for h in header]
    header[0] = header[0].lstrip("\ufeff").strip()
    if len(set(header)) != len(header):
        raise TransferUsage(f"the CSV header names a column twice: {header}")
    if columns is not None:
        columns[:] = header
    line = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a cell of more than 64 * max_cell characters
            line += 1
            yield SourceRow(line, None, None, f"cannot be read ({exc}): a cell may hold at most {max_cell:,} "
                                              "characters")
            continue
        line += 1
        if not any(cell.strip() for cell in record):
            continue
        raw = dict(zip(header, record, strict=False))
        if len(record) != len(header):
            yield SourceRow(line, None, raw, f"{len(record)} cells for {len(header)} columns")
            continue
        long = [name for name, cell in raw.items() if len(cell) > max_cell]
        if long:
            clipped = {name: cell if name not in long else f"{cell[:100]}... ({len(cell):,} characters)"
                       for name, cell in raw.items()}
            yield SourceRow(line, None, clipped, f"the {long[0]} cell holds {len(raw[long[0]]):,} characters: "
                                                 f"at most {max_cell:,}")
            continue
        yield SourceRow(line, {name: unguard_formula(cell) for name, cell in raw.items()}, raw)


@dataclass
class ImportPlan:
    entity: Entity
    fmt: str
    prefix: str  # ORIGIN_ID = f"{prefix}:{line}" for rows without one
    fields: dict[str, dict[str, Any]]
    origin_column: str | None = None
    ignored: list[str] = field(default_factory=list)  # columns not sent: read-only or unknown
    kept_on_update: list[str] = field(default_factory=list)  # CSV multi-field columns not sent with updates

    def to_item(self, row: SourceRow) -> dict[str, Any]:
        """The bulk_write item for a row: an update when it has an ID, else a create with an ORIGIN_ID.
        Raises ``ValueError`` with what is wrong with the row."""
        source = dict(row.fields or {})
        id_key = _id_field(self.entity)
        record_id = source.pop(id_key, None)
        if isinstance(record_id, str):
            record_id = record_id.strip()
        origin = None
        if self.origin_column:
            origin = source.pop(self.origin_column, None) if self.origin_column not in self.fields else \
                source.get(self.origin_column)
            if origin in (None, ""):
                raise ValueError(f"no value in the ORIGIN_ID column {self.origin_column!r}")
            origin = _marker(f"the ORIGIN_ID column {self.origin_column!r}", origin)
        out: dict[str, Any] = {}
        for name, value in source.items():
            meta = self.fields.get(name)
            if meta is None or meta.get("isReadOnly"):
                if name not in self.ignored:
                    self.ignored.append(name)
                continue
            value = self._value(name, meta, value, update=bool(record_id))
            if value is not None:
                out[name] = value
        if record_id not in (None, ""):
            if not re.fullmatch(r"[1-9][0-9]{0,9}", str(record_id)):
                raise ValueError(f"{id_key} must be a positive integer, got {record_id!r}")
            return {"id": int(record_id), "fields": _sendable(out)}
        if origin is not None:
            out["ORIGIN_ID"] = str(origin)
            if not out.get("ORIGINATOR_ID"):
                out["ORIGINATOR_ID"] = IMPORT_ORIGINATOR
        elif not out.get("ORIGIN_ID"):
            out["ORIGIN_ID"], out["ORIGINATOR_ID"] = f"{self.prefix}:{row.line}", IMPORT_ORIGINATOR
        return {"fields": _sendable(out)}

    def _value(self, name: str, meta: dict[str, Any], value: Any, *, update: bool) -> Any:
        if self.fmt == "csv":
            if value.strip() == "":
                return None  # an empty cell is left out: an import never clears a field
            if update and meta.get("type") in MULTI_TYPES:
                # An update *adds* the multi-field values it is given (crm.contact.update, "Working with
                # Multiple Fields": https://apidocs.bitrix24.com/api-reference/crm/contacts/crm-contact-update.html),
                # and a CSV cell has no value IDs to change existing ones by: leave the record's alone.
                if name not in self.kept_on_update:
                    self.kept_on_update.append(name)
                return None
            if meta.get("isMultiple"):
                parts = [p.strip() for p in value.split(";") if p.strip()]
                if meta.get("type") in MULTI_TYPES:
                    return [{"VALUE": p, "VALUE_TYPE": "WORK"} for p in parts]
                return parts
            return value
        if name in MARKERS and value is not None:
            return _marker(name, value)
        if isinstance(value, (dict, list)) and not meta.get("isMultiple") and meta.get("type") not in OBJECT_TYPES:
            # Bitrix24 would store "Array" in a field of one scalar value
            raise ValueError(f"{name} holds one value, not {_json_kind(value)}")
        if meta.get("type") in MULTI_TYPES and isinstance(value, list) and not update:
            # an exported value's ID belongs to the record it came from: a new record gets new values
            return [{k: v for k, v in item.items() if k not in ("ID", "TYPE_ID")} if isinstance(item, dict) else item
                    for item in value]
        return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _marker(name: str, value: Any) -> str:
    """An ORIGIN_ID / ORIGINATOR_ID as the text the portal stores and the rerun looks up: a string, or a
    number as its text; anything else (an object, a list, true) would be stored as "Array" / "Y" and the
    rerun would not find the record."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{name} must be text (or a number), not {_json_kind(value)}: a rerun could not find the "
                     "record by it")


def _sendable(fields: dict[str, Any]) -> dict[str, Any]:
    """The row's fields if the form encoding can carry them; else ``ValueError`` saying why, so that the row
    fails alone instead of the whole batch request it would be part of."""
    try:
        check_sendable({"fields": fields})  # a lone surrogate too (a JSON line may hold "\ud800")
    except ENCODE_ERRORS as exc:
        raise ValueError(f"cannot be sent to Bitrix24: {exc}") from None
    return fields


def check_importable(entity: Entity) -> None:
    """Imports write through ``bulk_write`` (legacy ``crm.*.add`` / ``update``) and are made safe to rerun by
    ``ORIGIN_ID``: entities without both cannot be imported."""
    if entity.prefix == "crm.item" or not getattr(entity, "origin_ids", True):
        raise TransferUsage(f"import of {entity.name} is not supported: it needs ORIGIN_ID on the records "
                            "(the CRM entities contacts, deals, leads, companies, activities have it)")


def import_plan(entity: Entity, client_id: int, path: str, fmt: str, origin_column: str | None) -> ImportPlan:
    check_importable(entity)
    fields = entity_fields(entity, client_id)
    if "ORIGIN_ID" not in fields:
        raise TransferUsage(f"{entity.name} have no ORIGIN_ID field on this portal: an import could not be rerun "
                            "without duplicates")
    return ImportPlan(entity, fmt, origin_prefix(path), fields, origin_column)


@dataclass
class Failure:
    line: int
    error: str
    description: str
    row: Any

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "error": self.error, "error_description": self.description, "row": self.row}


@dataclass
class ImportSummary:
    created: int = 0
    existing: int = 0
    updated: int = 0
    failed: int = 0
    rows: int = 0
    reasons: dict[str, list[int]] = field(default_factory=dict)  # "CODE: description" -> lines (first 10 kept)

    def fail(self, failure: Failure) -> None:
        self.failed += 1
        lines = self.reasons.setdefault(f"{failure.error}: {failure.description}", [])
        if len(lines) < 10:
            lines.append(failure.line)


def import_rows(plan: ImportPlan, rows: Iterable[SourceRow], client_id: int, *, chunk: int = IMPORT_CHUNK,
                on_failure: Callable[[Failure], None] | None = None,
                on_chunk: Callable[[ImportSummary], None] | None = None) -> ImportSummary:
    """Write the rows through ``bulk_write``, ``chunk`` at a time; count what happened to each."""
    summary = ImportSummary()
    batch: list[tuple[SourceRow, dict[str, Any]]] = []
    failures: list[Failure] = []  # this chunk's, reported in line order once it is written

    def failed(row: SourceRow, code: str, description: str) -> None:
        failures.append(Failure(row.line, code, description, row.raw))

    def flush() -> None:
        if not batch:
            report()
            return
        items, seen = [], {}
        for row, item in batch:
            fields = item["fields"]
            key = None if item.get("id") else (str(fields.get("ORIGINATOR_ID") or ""), str(fields["ORIGIN_ID"]))
            if key is not None and key in seen:
                failed(row, "DUPLICATE_ORIGIN_ID", f"ORIGIN_ID {key[1]!r} is also on line {seen[key]}")
                continue
            if key is not None:
                seen[key] = row.line
            items.append((row, item))
        outcomes = bulk_write(plan.entity.prefix, [item for _, item in items], client_id=client_id)
        for (row, _), outcome in zip(items, outcomes, strict=True):
            if outcome.error is not None:
                failed(row, outcome.error.code, outcome.error.description)
            elif outcome.existing:
                summary.existing += 1
            elif outcome.action == "created":
                summary.created += 1
            else:
                summary.updated += 1
        batch.clear()
        report()

    def report() -> None:
        for failure in sorted(failures, key=lambda f: f.line):
            summary.fail(failure)
            if on_failure is not None:
                on_failure(failure)
        failures.clear()
        if on_chunk is not None:
            on_chunk(summary)

    for row in rows:
        summary.rows += 1
        if row.fields is None:
            failed(row, "INVALID_LINE", row.error or "unreadable")
            continue
        try:
            item = plan.to_item(row)
        except ValueError as exc:
            failed(row, "INVALID_ROW", str(exc))
            continue
        batch.append((row, item))
        if len(batch) >= chunk:
            flush()
    flush()
    return summary
