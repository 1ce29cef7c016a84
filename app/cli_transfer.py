"""``flask bitrix24 export`` and ``flask bitrix24 import``: every record of an entity to a JSON Lines or
CSV file, and such a file back into the portal (see ``services/transfer.py`` for what is sent).

Exit codes: 0 all good; 1 some rows failed, or the portal stopped the work (the message says why); 2 a
usage error (unknown entity, field, format or file), with nothing sent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

import click
from flask.cli import with_appcontext

from .runtime import runtime
from .services.limiter import describe_limit
from .services.transfer import FORMATS, IMPORT_CHUNK, IMPORT_ORIGINATOR, TransferUsage

_client_option = click.option("--client", "--client-id", "client_id", type=click.IntRange(1, 2**31 - 1),
                              required=True, metavar="N", help="the client whose portal to use")


class Progress:
    """A progress bar on a terminal (stderr); elsewhere (a pipe, a log file) a plain line every
    ``every`` rows and one at the end."""

    def __init__(self, label: str, every: int, stream: IO[str] | None = None) -> None:
        self.label, self.every = label, every
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total: int | None = None
        self.done = self._shown = 0
        self.started = time.monotonic()
        self._bar: Any = None

    def set_total(self, total: int) -> None:
        self.total = total
        if self.tty and self._bar is None:
            # redrawn at most every 0.1% (a row at a time would make the terminal the bottleneck)
            self._bar = click.progressbar(length=max(total, 1), label=self.label, file=self.stream, show_pos=True,
                                          show_percent=True, show_eta=True, update_min_steps=max(1, total // 1000))
            self._bar.__enter__()
        elif not self.tty:
            self._line(f"{self.label}: {total:,} rows")

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif not self.tty and self.done - self._shown >= self.every:
            self._shown = self.done - self.done % self.every
            self._line(self._status())

    def finish(self, note: str = "done") -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        self._line(f"{self._status()}, {note}")

    def _status(self) -> str:
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"{self.label}: {self.done:,}{of} rows ({rate:,.0f} rows/s)"

    def _line(self, text: str) -> None:
        click.echo(text, file=self.stream)

    def note(self, text: str) -> None:
        """A line of its own beside the bar (or the plain lines)."""
        self._line(("\n" if self._bar is not None else "") + f"{self.label}: {text}")

    def budget_listener(self, quiet_for: float = 10.0) -> Any:
        """A listener (``Runtime.listening``) that says when calls wait for a method's operating budget:
        a job too big for one of the portal's 10-minute windows goes on in the next ones, and the
        person watching sees why the rows stopped moving and when they will move again."""
        last = [-quiet_for]

        def listener(name: str, info: dict[str, Any]) -> None:
            seconds = info.get("seconds")
            if name != "operating_wait" or not isinstance(seconds, (int, float)) or seconds < 5:
                return
            now = time.monotonic()
            if now - last[0] < quiet_for:
                return
            last[0] = now
            resume = time.strftime("%H:%M:%S", time.localtime(time.time() + seconds))
            allowed = describe_limit(info.get("limit", 480.0), info.get("window", 600.0))
            self.note(f"waiting {seconds:.0f} s for {info.get('method')}'s operating time on the portal "
                      f"(Bitrix24 allows each method {allowed}); going on at about {resume}")

        return listener


def _usage(exc: Exception) -> click.UsageError:
    return click.UsageError(str(exc))


def _portal_error(exc: Any, after: str) -> click.ClickException:
    return click.ClickException(f"{exc.code}: {exc.description} ({after})")


@click.command("export")
@click.argument("entity")
@_client_option
@click.option("--filter", "filters", multiple=True, metavar="[OP]FIELD=VALUE",
              help="e.g. NAME=Ann, >ID=100, %TITLE=deal, @ID=1,2,3; repeatable (all must match)")
@click.option("--select", multiple=True, metavar="FIELD[,FIELD]",
              help="fields to export, in this order (CSV columns); repeatable; * and UF_* as in Bitrix24. "
                   "Default: every field")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="jsonl (default) or csv; a --output ending in .csv means csv")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="the file to write (default: standard output); written as FILE.part, renamed when complete")
@click.option("--progress-every", type=click.IntRange(1), default=10_000, show_default=True,
              help="rows between progress lines when stderr is not a terminal")
@click.option("--formula-guard/--no-formula-guard", default=True, show_default=True,
              help="CSV: write a cell starting with = + - @ TAB or CR (a formula to a spreadsheet) with a leading "
                   "' (plain numbers such as -5 excepted); import takes the ' off again")
@with_appcontext
def export_command(entity: str, client_id: int, filters: tuple[str, ...], select: tuple[str, ...], fmt: str | None,
                   output: str, progress_every: int, formula_guard: bool) -> None:
    """Write every ENTITY record (contacts, deals, leads, companies, activities, items:<entityTypeId>, ...)
    matching the filter, as JSON Lines (one record a line, as Bitrix24 sends it) or CSV.

    CSV columns are the --select fields in order (else every field the portal lists for the entity);
    multi-fields (PHONE, EMAIL, WEB, IM) and other multiple values are their values joined by "; " (the
    value types are dropped), other nested values JSON text. A CSV cell that a spreadsheet would run as a
    formula (it starts with =, +, -, @, TAB or CR and is not a plain number such as -5) is written with a
    leading ' (OWASP "CSV injection"); import takes it off again; --no-formula-guard writes such cells as
    they are. The listing walks by ID, 50 pages per request, holding one batch in memory: rows added or
    deleted meanwhile are neither lost nor repeated.
    """
    from .services.errors import Bitrix24Error
    from .services.transfer import RowWriter, export_plan, export_rows, parse_filters, resolve_entity

    fmt = fmt or ("csv" if output.lower().endswith(".csv") else "jsonl")
    try:
        ent = resolve_entity(entity)
        plan = export_plan(ent, client_id, parse_filters(filters), list(select))
    except TransferUsage as exc:
        raise _usage(exc) from None
    except Bitrix24Error as exc:
        raise _portal_error(exc, "nothing exported") from None
    progress = Progress(f"export {ent.name}", progress_every)
    to_stdout = output == "-"
    target = f"{output}.part"
    out: IO[str] = sys.stdout if to_stdout else open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
    writer = RowWriter(out, fmt, plan.columns, camel_keys=getattr(ent, "camel_output", False),
                       formula_guard=formula_guard)
    try:
        with runtime().listening(progress.budget_listener()):
            for row in export_rows(plan, client_id, on_total=progress.set_total):
                writer.write(row)
                progress.advance()
        out.flush()
    except Bitrix24Error as exc:
        progress.finish("stopped")
        if not to_stdout:
            out.close()
            os.remove(target)
        raise _portal_error(exc, f"stopped after {progress.done:,} rows; nothing written to {output}"
                            if not to_stdout else f"stopped after {progress.done:,} rows") from None
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None
    except BaseException:
        if not to_stdout:
            out.close()
            os.remove(target)
        raise
    if not to_stdout:
        out.close()
        os.replace(target, output)
    progress.finish(f"exported to {'standard output' if to_stdout else output}")


def _max_cell() -> int:
    """The longest CSV cell an import reads: the plugin's request body limit (BITRIX_MAX_BODY_BYTES)."""
    from flask import current_app

    from .services.transfer import MAX_CELL

    return int(current_app.config.get("BITRIX_MAX_BODY_BYTES") or MAX_CELL)


def _count_rows(path: str, fmt: str, columns: list[str]) -> int:
    """The file's rows; ``columns`` gets its column names (CSV header, or the JSON rows' keys)."""
    from .services.transfer import read_rows

    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return sum(1 for _ in read_rows(stream, fmt, max_cell=_max_cell(), columns=columns))
    except UnicodeDecodeError as exc:
        raise TransferUsage(f"{path} is not UTF-8 text: {exc}") from None


def default_failures_path(path: str) -> str:
    """contacts.csv -> contacts.failures.jsonl, beside it."""
    stem = os.path.splitext(path)[0]
    return f"{stem}.failures.jsonl"


@click.command("import")
@click.argument("entity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@_client_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="jsonl or csv (default: from the file's extension)")
@click.option("--origin-id-column", default=None, metavar="COLUMN",
              help="take each new record's ORIGIN_ID from this column (default: the row's ORIGIN_ID, else "
                   f"<sha256 of the file name>:<line> with ORIGINATOR_ID {IMPORT_ORIGINATOR})")
@click.option("--failures", "failures_path", type=click.Path(dir_okay=False), default=None,
              help="where to write the rows that failed, one JSON object a line (default: FILE's name with "
                   ".failures.jsonl, beside it)")
@click.option("--chunk", type=click.IntRange(1, 5000), default=IMPORT_CHUNK, show_default=True,
              help="rows written per step (50 per Bitrix24 request)")
@with_appcontext
def import_command(entity: str, file: str, client_id: int, fmt: str | None, origin_id_column: str | None,
                   failures_path: str | None, chunk: int) -> None:
    """Create (rows without ID) or update (rows with ID) ENTITY records from a JSON Lines or CSV FILE
    (what export writes), 50 per Bitrix24 request.

    Every new record carries an ORIGIN_ID: the row's own, the --origin-id-column's, or one made of the
    file's name and the row's line (ORIGINATOR_ID flask-bitrix24-import). Running an interrupted or
    partly failed import again therefore finds the records the first run made ("existing") and creates
    only the rest. Keep the file's name and its lines' order for the rerun; import another file under
    another name. Read-only and unknown columns are not sent; empty CSV cells are left out (an import
    never clears a field); a CSV multi-field cell is split on ";"; a CSV cell starting with ' and then =, +,
    -, @, TAB or CR (export's formula guard) loses that '.
    """
    from .services.errors import Bitrix24Error
    from .services.transfer import (
        check_importable,
        detect_format,
        import_plan,
        import_rows,
        read_rows,
        resolve_entity,
    )

    try:
        ent = resolve_entity(entity)
        check_importable(ent)
        fmt = detect_format(file, fmt)
        columns: list[str] = []
        total = _count_rows(file, fmt, columns)
        if origin_id_column is not None and origin_id_column not in columns and (fmt == "csv" or total):
            shown = ", ".join(repr(c) for c in columns[:30]) + (", ..." if len(columns) > 30 else "")
            raise TransferUsage(f"--origin-id-column {origin_id_column!r}: {file} has no such column; its columns "
                                f"are {shown or 'none'}")
        plan = import_plan(ent, client_id, file, fmt, origin_id_column)
    except TransferUsage as exc:
        raise _usage(exc) from None
    except Bitrix24Error as exc:
        raise _portal_error(exc, "nothing imported") from None
    failures_target = failures_path or default_failures_path(file)
    failures_file: list[IO[str]] = []

    def on_failure(failure: Any) -> None:
        if not failures_file:
            failures_file.append(open(failures_target, "w", encoding="utf-8"))  # noqa: SIM115
        line = json.dumps(failure.as_dict(), ensure_ascii=False, default=str)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (a JSON line's "\ud800"): kept as JSON's escape
                line = json.dumps(failure.as_dict(), default=str)
        failures_file[0].write(line + "\n")
        failures_file[0].flush()

    progress = Progress(f"import {ent.name}", 1)
    progress.set_total(total)

    seen: list[Any] = []  # the summary so far, as of the last chunk written

    def on_chunk(summary: Any) -> None:
        seen[:] = [summary]
        progress.advance(summary.rows - progress.done)

    summary = None
    interrupted = False
    try:
        with open(file, encoding="utf-8-sig", newline="") as stream, runtime().listening(progress.budget_listener()):
            summary = import_rows(plan, read_rows(stream, fmt, max_cell=_max_cell()), client_id, chunk=chunk,
                                  on_failure=on_failure, on_chunk=on_chunk)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for handle in failures_file:
            handle.close()
    progress.finish("interrupted" if interrupted else "done")
    if plan.ignored:
        click.echo(f"not sent (read-only, or not a field of {ent.name}): {', '.join(plan.ignored)}", err=True)
    if plan.kept_on_update:
        click.echo(f"not sent with updates (CSV has no value IDs; an update would add the values again): "
                   f"{', '.join(plan.kept_on_update)}", err=True)
    if interrupted or summary is None:
        done = seen[0] if seen else None
        counts = (f": created {done.created:,}, existing {done.existing:,}, updated {done.updated:,}, failed "
                  f"{done.failed:,}" if done else "")
        click.echo(f"interrupted after {progress.done:,} of {total:,} rows{counts}. Run the same command again to "
                   "finish: records already made are found by their ORIGIN_ID, not made twice")
        raise SystemExit(1)
    click.echo(f"{ent.name} from {file}: {summary.rows:,} rows: created {summary.created:,}, existing "
               f"{summary.existing:,}, updated {summary.updated:,}, failed {summary.failed:,}")
    for reason, lines in summary.reasons.items():
        more = ", ..." if len(lines) == 10 else ""
        click.echo(f"  failed: {reason} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}{more})")
    if summary.failed:
        click.echo(f"failed rows written to {failures_target}")
        raise SystemExit(1)
    if failures_path is None and os.path.exists(failures_target):
        os.remove(failures_target)  # an earlier run's, now that every row is in
        click.echo(f"removed {failures_target} (an earlier run's failed rows; they are all in now)")
