"""``flask bitrix24 export`` / ``flask bitrix24 import`` as a user runs them: the ``flask`` command in its own
process, on the stack's database (client 1's saved config), against the emulator over real HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flask_bitrix24.services.transfer import IMPORT_ORIGINATOR, origin_prefix

ROOT = Path(__file__).resolve().parents[2]


def cli_env(stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=stack.app.config["SQLALCHEMY_DATABASE_URI"],
        BITRIX_SECRET_KEY=stack.app.config["BITRIX_SECRET_KEY"],
        BITRIX_ALLOWED_HOSTS="127.0.0.1",
        BITRIX_ENV_FALLBACK="0",  # only client 1's saved config reaches the emulator: --client is what counts
        BITRIX_RATE_BURST="100000", BITRIX_RATE_DRAIN="100000",  # the emulator runs without limits here
        BITRIX_MAX_WAIT="10",
    )
    return env


def flask_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "flask_bitrix24", "bitrix24", *args]


def run_cli(stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(flask_cmd(*args), cwd=ROOT, env=cli_env(stack), capture_output=True, text=True,
                          timeout=timeout)


def seed_contacts(stack, n: int) -> None:
    items = []
    for i in range(n):
        fields = {"NAME": ("Even" if i % 2 == 0 else "Odd") + f" {i}", "LAST_NAME": f"#{i}"}
        if i % 10 == 0:
            fields["PHONE"] = [{"VALUE": f"+1 555 {i:04d}", "VALUE_TYPE": "WORK"},
                               {"VALUE": f"+1 556 {i:04d}", "VALUE_TYPE": "HOME"}]
            fields["EMAIL"] = [{"VALUE": f"c{i}@example.com", "VALUE_TYPE": "WORK"}]
        items.append({"fields": fields})
    r = stack.http.post(f"{stack.api}/clients/1/contacts/batch", json={"items": items})
    assert r.status_code == 200 and r.json()["created"] == n, r.text


def contacts(stack) -> dict[int, dict]:
    return dict(stack.emulator.records["contact"])


def test_export_jsonl_streams_every_row_with_plain_progress_lines(stack, tmp_path):
    seed_contacts(stack, 120)
    out = tmp_path / "contacts.jsonl"
    r = run_cli(stack, "export", "contacts", "--client", "1", "--output", str(out), "--progress-every", "50")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [int(row["ID"]) for row in rows] == sorted(contacts(stack))  # every row once, in ID order
    assert not (tmp_path / "contacts.jsonl.part").exists()
    # Without --select every field comes, multi-fields included (they are not part of "*").
    first = rows[0]
    assert first["NAME"] == "Even 0" and first["LAST_NAME"] == "#0"
    assert [p["VALUE"] for p in first["PHONE"]] == ["+1 555 0000", "+1 556 0000"]
    assert first["EMAIL"][0]["VALUE"] == "c0@example.com"
    assert "PHONE" not in rows[1]
    # stderr is a pipe: plain lines, the total first (from the listing's own count), then every 50 rows.
    lines = [line for line in r.stderr.splitlines() if line.startswith("export contacts")]
    assert lines[0] == "export contacts: 120 rows"
    assert lines[1].startswith("export contacts: 50 of 120 rows (")
    assert lines[2].startswith("export contacts: 100 of 120 rows (")
    assert lines[3].startswith("export contacts: 120 of 120 rows (") and lines[3].endswith(f"exported to {out}")
    assert len(lines) == 4


def test_export_csv_with_filter_and_select_keeps_the_select_order_and_joins_multi_fields(stack, tmp_path):
    seed_contacts(stack, 60)
    out = tmp_path / "even.csv"
    r = run_cli(stack, "export", "contacts", "--client", "1", "--filter", "%NAME=Even", "--filter", "<=ID=40",
                "--select", "ID,NAME", "--select", "PHONE", "--select", "EMAIL", "-o", str(out))
    assert r.returncode == 0, r.stderr
    table = list(csv.reader(io.StringIO(out.read_text())))
    assert table[0] == ["ID", "NAME", "PHONE", "EMAIL"]
    expected = [i for i, rec in sorted(contacts(stack).items()) if rec["NAME"].startswith("Even") and i <= 40]
    assert [int(row[0]) for row in table[1:]] == expected and len(expected) == 20
    by_id = {int(row[0]): row for row in table[1:]}
    first = min(expected)
    assert by_id[first][1:] == ["Even 0", "'+1 555 0000; +1 556 0000", "c0@example.com"]  # the formula guard's '
    assert by_id[expected[1]][1:] == ["Even 2", "", ""]
    assert "export contacts: 20 of 20 rows" in r.stderr


def test_export_csv_default_columns_are_the_entitys_fields_and_stdout_gets_the_rows(stack):
    seed_contacts(stack, 3)
    fields = stack.http.post(f"{stack.emulator_server.base}crm.contact.fields.json").json()["result"]  # in order
    r = run_cli(stack, "export", "contacts", "--client", "1", "--format", "csv", "--filter", ">ID=1")
    assert r.returncode == 0, r.stderr
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[0] == list(fields)  # the portal's order, every field
    assert [row[0] for row in table[1:]] == ["2", "3"]
    assert table[1][table[0].index("NAME")] == "Odd 1"


def test_export_smart_process_items(stack):
    for title in ("Alpha", "Beta"):
        r = stack.http.post(f"{stack.api}/clients/1/items/128", json={"fields": {"title": title}})
        assert r.status_code == 201, r.text
    r = run_cli(stack, "export", "items:128", "--client", "1", "--select", "id,title", "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert list(csv.reader(io.StringIO(r.stdout))) == [["id", "title"], ["1", "Alpha"], ["2", "Beta"]]


@pytest.mark.parametrize("args, message", [
    (["export", "kittens", "--client", "1"], "unknown entity 'kittens'"),
    (["export", "contacts", "--client", "1", "--filter", "NAMEE=Ann"], "contacts has no field 'NAMEE'"),
    (["export", "contacts", "--client", "1", "--filter", "NAME"], "write [OPERATOR]FIELD=VALUE"),
    (["export", "contacts", "--client", "1", "--select", "NAME,NOPE"], "contacts has no field 'NOPE'"),
    (["export", "contacts"], "Missing option '--client'"),
    (["import", "items:128", "--client", "1", "README.md"], "import of items is not supported"),
    (["import", "contacts", "--client", "1", "README.md"], "give --format jsonl or --format csv"),
    (["import", "contacts", "--client", "1", "no-such-file.csv"], "does not exist"),
])
def test_usage_errors_exit_2_and_send_nothing(stack, args, message):
    r = run_cli(stack, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert r.stdout == ""
    assert contacts(stack) == {}


def test_a_portal_refusal_exits_1_and_leaves_no_half_file(stack, tmp_path):
    out = tmp_path / "x.jsonl"
    r = run_cli(stack, "export", "contacts", "--client", "2", "-o", str(out))  # client 2 has no config
    assert r.returncode == 1
    assert "CONFIG_MISSING" in r.stderr and "nothing exported" in r.stderr
    assert not out.exists() and not (tmp_path / "x.jsonl.part").exists()


def test_import_killed_halfway_then_rerun_ends_with_exactly_n_records(make_stack, tmp_path):
    n = 400
    stack = make_stack(latency_ms=40)  # slow enough to stop it in the middle
    stack.configure()
    src = tmp_path / "people.jsonl"
    src.write_text("".join(json.dumps({"NAME": f"Person {i}", "LAST_NAME": "Imported"}) + "\n" for i in range(n)))
    # Half way, the portal holds each request that comes in until the import is dead, then drops it unanswered:
    # the kill always lands in the middle however slowly this test's loop is scheduled, and no request of the
    # dead process reaches the portal after it (one on its way would change what the rerun must find).
    emulator, killed = stack.emulator, threading.Event()
    draw_fault = emulator._draw_fault

    def held_from_half_way():  # the emulator asks this, under its lock, as each request comes in
        if len(emulator.records["contact"]) < n // 2:
            return draw_fault()
        killed.wait(60)
        return "drop-before"

    emulator._draw_fault = held_from_half_way
    proc = subprocess.Popen(flask_cmd("import", "contacts", str(src), "--client", "1", "--chunk", "50"), cwd=ROOT,
                            env=cli_env(stack), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(contacts(stack)) < n // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to tidy up: as a crash or a lost machine
    proc.communicate(timeout=30)
    killed.set()
    deadline = time.monotonic() + 10  # requests already past the gate finish (the held ones are dropped)
    while time.monotonic() < deadline:
        with emulator._lock:
            counters = emulator.counters
            if counters.requests == sum(counters.by_status.values()) + counters.dropped:
                break
        time.sleep(0.02)
    del emulator._draw_fault
    made = len(contacts(stack))
    assert n // 2 <= made < n, made  # it really stopped in the middle

    r = run_cli(stack, "import", "contacts", str(src), "--client", "1", "--chunk", "50")
    assert r.returncode == 0, r.stderr
    assert f"contacts from {src}: {n} rows: created {n - made}, existing {made}, updated 0, failed 0" in r.stdout
    records = contacts(stack).values()
    assert len(records) == n
    prefix = origin_prefix(str(src))
    assert sorted(rec["ORIGIN_ID"] for rec in records) == sorted(f"{prefix}:{line}" for line in range(1, n + 1))
    assert {rec["ORIGINATOR_ID"] for rec in records} == {IMPORT_ORIGINATOR}
    assert sorted(rec["NAME"] for rec in records) == sorted(f"Person {i}" for i in range(n))
    # A third run changes nothing.
    r = run_cli(stack, "import", "contacts", str(src), "--client", "1")
    assert r.returncode == 0 and f"created 0, existing {n}, updated 0, failed 0" in r.stdout
    assert len(contacts(stack)) == n


def test_import_csv_failures_file_then_a_fixed_rerun(stack, tmp_path):
    r = stack.http.post(f"{stack.api}/clients/1/deals", json={"fields": {"TITLE": "Old title"}})
    deal_id = r.json()["result"]
    src = tmp_path / "deals.csv"
    src.write_text(
        "ID,TITLE,CURRENCY_ID,OPPORTUNITY,DATE_CREATE\n"
        ",Good deal,USD,100,2020-01-01\n"          # line 2: created
        ",Bad money,XXX,5,\n"                      # line 3: the portal refuses the currency
        "x,Bad id,USD,1,\n"                        # line 4: refused before sending
        f"{deal_id},New title,,,\n"                # line 5: updates the deal, leaves the empty cells alone
        "too,few\n"                                # line 6: a malformed row
    )
    r = run_cli(stack, "import", "deals", str(src), "--client", "1")
    assert r.returncode == 1, r.stderr
    assert f"deals from {src}: 5 rows: created 1, existing 0, updated 1, failed 3" in r.stdout
    assert "INVALID_ROW: ID must be a positive integer, got 'x' (line 4)" in r.stdout
    assert "INVALID_LINE: 2 cells for 5 columns (line 6)" in r.stdout
    assert "not sent (read-only, or not a field of deals): DATE_CREATE" in r.stderr
    failures_file = tmp_path / "deals.failures.jsonl"
    assert f"failed rows written to {failures_file}" in r.stdout
    failures = [json.loads(line) for line in failures_file.read_text().splitlines()]
    assert [(f["line"], f["error"]) for f in failures] == [(3, failures[0]["error"]), (4, "INVALID_ROW"),
                                                            (6, "INVALID_LINE")]
    assert "XXX" in failures[0]["error_description"] or "currency" in failures[0]["error_description"].lower()
    assert failures[0]["row"] == {"ID": "", "TITLE": "Bad money", "CURRENCY_ID": "XXX", "OPPORTUNITY": "5",
                                  "DATE_CREATE": ""}
    deals = stack.emulator.records["deal"]
    assert deals[deal_id]["TITLE"] == "New title" and len(deals) == 2
    good = next(d for d in deals.values() if d["TITLE"] == "Good deal")
    assert good["CURRENCY_ID"] == "USD" and float(good["OPPORTUNITY"]) == 100
    assert good["ORIGIN_ID"] == f"{origin_prefix(str(src))}:2" and good["ORIGINATOR_ID"] == IMPORT_ORIGINATOR

    # Fix the failed lines in place and run it again: the good row is found, not made twice.
    src.write_text(
        "ID,TITLE,CURRENCY_ID,OPPORTUNITY,DATE_CREATE\n"
        ",Good deal,USD,100,2020-01-01\n"
        ",Bad money,EUR,5,\n"
        ",Bad id,USD,1,\n"
        f"{deal_id},New title,,,\n"
        ",too few,,,\n"
    )
    custom = tmp_path / "custom-failures.jsonl"
    r = run_cli(stack, "import", "deals", str(src), "--client", "1", "--failures", str(custom))
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "5 rows: created 3, existing 1, updated 1, failed 0" in r.stdout
    assert not custom.exists()
    assert failures_file.exists()  # only the default-named file is ours to tidy away...
    r = run_cli(stack, "import", "deals", str(src), "--client", "1")
    assert r.returncode == 0 and "created 0, existing 4, updated 1, failed 0" in r.stdout
    assert not failures_file.exists()  # ...once a run has every row in
    assert len(stack.emulator.records["deal"]) == 5


def test_import_origin_id_column_and_a_repeated_origin_id(stack, tmp_path):
    src = tmp_path / "crm-dump.csv"
    src.write_text("external,NAME\nA-1,Ann\nA-2,Bob\nA-1,Ann again\n,Nobody\n")
    r = run_cli(stack, "import", "contacts", str(src), "--client", "1", "--origin-id-column", "external")
    assert r.returncode == 1
    assert "4 rows: created 2, existing 0, updated 0, failed 2" in r.stdout
    assert "DUPLICATE_ORIGIN_ID: ORIGIN_ID 'A-1' is also on line 2 (line 4)" in r.stdout
    assert "INVALID_ROW: no value in the ORIGIN_ID column 'external' (line 5)" in r.stdout
    made = sorted((rec["ORIGIN_ID"], rec["ORIGINATOR_ID"], rec["NAME"]) for rec in contacts(stack).values())
    assert made == [("A-1", IMPORT_ORIGINATOR, "Ann"), ("A-2", IMPORT_ORIGINATOR, "Bob")]


def test_import_refuses_markers_that_are_not_text_so_a_rerun_makes_no_duplicates(stack, tmp_path):
    src = tmp_path / "o.jsonl"
    src.write_text('{"NAME":"Q","ORIGIN_ID":123}\n{"NAME":"R","ORIGIN_ID":{"x":1}}\n{"NAME":"R2","ORIGIN_ID":["a"]}\n'
                   '{"NAME":"S","ORIGIN_ID":true}\n{"NAME":"V","ORIGIN_ID":"x","ORIGINATOR_ID":{"a":1}}\n'
                   '{"NAME":{"nested":1}}\n')
    for run, counts in enumerate(["created 1, existing 0", "created 0, existing 1"]):
        r = run_cli(stack, "import", "contacts", str(src), "--client", "1")
        assert r.returncode == 1, (run, r.stdout, r.stderr)
        assert f"6 rows: {counts}, updated 0, failed 5" in r.stdout, (run, r.stdout)
    made = [(rec["NAME"], rec["ORIGIN_ID"], rec["ORIGINATOR_ID"]) for rec in contacts(stack).values()]
    assert made == [("Q", "123", None)]  # the row's own ORIGIN_ID goes as it is, without an ORIGINATOR_ID


def test_an_unknown_origin_id_column_is_a_usage_error_and_a_header_with_two_boms_still_reads(stack, tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("NAME,EXT\nA,e1\n")
    r = run_cli(stack, "import", "contacts", str(src), "--client", "1", "--origin-id-column", "NOPE")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"--origin-id-column 'NOPE': {src} has no such column; its columns are 'NAME', 'EXT'" in r.stderr
    assert contacts(stack) == {} and not (tmp_path / "c.failures.jsonl").exists()
    boms = tmp_path / "boms.csv"
    boms.write_text("\ufeff\ufeffNAME,LAST_NAME\nAnn,A\n", encoding="utf-8")
    r = run_cli(stack, "import", "contacts", str(boms), "--client", "1")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "not sent" not in r.stderr
    assert [(rec["NAME"], rec["LAST_NAME"]) for rec in contacts(stack).values()] == [("Ann", "A")]


def test_export_then_import_round_trip_through_jsonl_keeps_multi_fields(stack, tmp_path):
    seed_contacts(stack, 11)
    out = tmp_path / "all.jsonl"
    r = run_cli(stack, "export", "contacts", "--client", "1", "--select", "NAME,LAST_NAME,PHONE,EMAIL", "-o", str(out))
    assert r.returncode == 0, r.stderr
    # The rows carry ID: drop it so they are created again as copies.
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    copy = tmp_path / "copy.jsonl"
    copy.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "ID"}) + "\n" for row in rows))
    r = run_cli(stack, "import", "contacts", str(copy), "--client", "1")
    assert r.returncode == 0, r.stderr
    assert "11 rows: created 11" in r.stdout
    records = contacts(stack)
    copies = [rec for rec in records.values() if rec.get("ORIGINATOR_ID") == IMPORT_ORIGINATOR]
    first = next(rec for rec in copies if rec["NAME"] == "Even 0")
    assert [p["VALUE"] for p in first["PHONE"]] == ["+1 555 0000", "+1 556 0000"]
    originals = {p["ID"] for rec in records.values() if rec not in copies for p in rec.get("PHONE") or []}
    assert not originals & {p["ID"] for p in first["PHONE"]}  # new values, not the originals' taken over


def test_export_csv_guards_formulas_and_an_import_of_it_keeps_the_values(stack, tmp_path):
    names = ['=HYPERLINK("http://evil","x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "-5", "'=quoted", "plain"]
    for name in names:
        r = stack.http.post(f"{stack.api}/clients/1/contacts",
                            json={"NAME": name, "LAST_NAME": "x", "PHONE": [{"VALUE": "=1+1", "VALUE_TYPE": "WORK"}]})
        assert r.status_code == 201, r.text
    out = tmp_path / "c.csv"
    r = run_cli(stack, "export", "contacts", "--client", "1", "-o", str(out), "--select", "NAME,LAST_NAME,PHONE")
    assert r.returncode == 0, r.stderr
    with open(out, encoding="utf-8", newline="") as stream:  # a quoted cell keeps its CR
        table = list(csv.reader(stream))
    assert [row[0] for row in table[1:]] == ["'" + n for n in names[:6]] + ["-5", "''=quoted", "plain"]
    assert {row[2] for row in table[1:]} == {"'=1+1"}
    r = run_cli(stack, "import", "contacts", str(out), "--client", "1")
    assert r.returncode == 0, (r.stdout, r.stderr)
    copies = [rec for rec in contacts(stack).values() if rec.get("ORIGINATOR_ID") == IMPORT_ORIGINATOR]
    assert sorted(rec["NAME"] for rec in copies) == sorted(names)
    assert {p["VALUE"] for rec in copies for p in rec["PHONE"]} == {"=1+1"}
    raw = tmp_path / "raw.csv"
    r = run_cli(stack, "export", "contacts", "--client", "1", "-o", str(raw), "--select", "NAME", "--no-formula-guard",
                "--filter", "ID=1")
    assert r.returncode == 0, r.stderr
    assert raw.read_text() == 'NAME\n"=HYPERLINK(""http://evil"",""x"")"\n'


def test_export_on_a_terminal_draws_a_progress_bar(stack, tmp_path):
    seed_contacts(stack, 30)
    master, slave = pty.openpty()
    out = tmp_path / "c.jsonl"
    proc = subprocess.Popen(flask_cmd("export", "contacts", "--client", "1", "-o", str(out)), cwd=ROOT,
                            env=cli_env(stack), stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = seen.decode("utf-8", "replace")
    assert "export contacts" in text and "30/30" in text and "100%" in text, text
    assert "export contacts: 30 rows" not in text  # no plain lines on a terminal
    assert len(out.read_text().splitlines()) == 30


def test_an_import_bigger_than_one_operating_window_waits_for_the_next_and_earns_no_429(make_stack, tmp_path):
    # crm.contact.update costs 0.5 s of the portal's server time: 480 s allow 961 calls a window (here 12 s).
    # 1,100 updates need two windows; the command says it waits, and the portal refuses nothing.
    stack = make_stack(app_config={"BITRIX_OPERATING_BUCKET": 1.2}, limits=True, burst=100_000, rate=100_000,
                       operating_window=12.0, method_costs={"crm.contact.update": 0.5}, preload={"contact": 1100})
    stack.configure()
    src = tmp_path / "updates.jsonl"
    src.write_text("".join(json.dumps({"ID": str(i), "NAME": f"Renamed {i}"}) + "\n" for i in range(1, 1101)))
    env = {**cli_env(stack), "BITRIX_OPERATING_BUCKET": "1.2"}
    started = time.monotonic()
    r = subprocess.run(flask_cmd("import", "contacts", str(src), "--client", "1"), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert "1,100 rows: created 0, existing 0, updated 1,100, failed 0" in r.stdout
    assert "waiting" in r.stderr and "crm.contact.update's operating time" in r.stderr, r.stderr
    assert "480 s per 12 s)" in r.stderr  # the limit and window this deployment is set to, not a constant
    counters = stack.emulator.counters
    assert counters.operating_limited == 0 and counters.by_status.get(429, 0) == 0
    assert counters.operating_seconds["crm.contact.update"] == pytest.approx(550)
    assert took > 5  # it did wait for the oldest bucket to drop out
    assert all(rec["NAME"] == f"Renamed {i}" for i, rec in stack.emulator.records["contact"].items())
