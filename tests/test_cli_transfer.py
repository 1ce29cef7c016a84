"""``flask bitrix24 export`` / ``import``: the exact Bitrix24 methods and bodies they send (portal mocked)."""

from __future__ import annotations

import json

from flask_bitrix24.services.transfer import (
    IMPORT_ORIGINATOR,
    csv_cell,
    guard_formula,
    origin_prefix,
    parse_filters,
    unguard_formula,
)

from .conftest import portal_url, sent_params

CONTACT_FIELDS = {
    "ID": {"type": "integer", "isReadOnly": True},
    "NAME": {"type": "string"},
    "LAST_NAME": {"type": "string"},
    "DATE_CREATE": {"type": "datetime", "isReadOnly": True},
    "ORIGINATOR_ID": {"type": "string"},
    "ORIGIN_ID": {"type": "string"},
    "PHONE": {"type": "crm_multifield", "isMultiple": True},
    "EMAIL": {"type": "crm_multifield", "isMultiple": True},
    "UF_CRM_COLOR": {"type": "string"},
}


def test_export_sends_fields_then_one_counted_keyset_page(configured, portal, runner):
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": [{"ID": "7", "NAME": "Ann"}], "total": 1})
    result = runner.invoke(args=["bitrix24", "export", "contacts", "--client", "1", "--filter", "%NAME=An",
                                 "--filter", "@ID=7,8", "--select", "ID,NAME"])
    assert result.exit_code == 0, result.output
    assert [c.request.url for c in portal.calls] == [portal_url("crm.contact.fields"), portal_url("crm.contact.list")]
    assert sent_params(portal.calls[1]) == {"filter": {"%NAME": "An", "@ID": ["7", "8"]}, "select": ["ID", "NAME"],
                                            "order": {"ID": "ASC"}, "start": "0"}
    assert '{"ID":"7","NAME":"Ann"}\n' in result.output


def test_export_without_select_asks_for_every_field_multi_fields_by_name(configured, portal, runner):
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    row = {"ID": "7", "NAME": "Ann", "PHONE": [{"ID": "1", "VALUE": "+1 555", "VALUE_TYPE": "WORK"},
                                               {"ID": "2", "VALUE": "+1 556", "VALUE_TYPE": "HOME"}]}
    portal.post(portal_url("crm.contact.list"), json={"result": [row], "total": 1})
    result = runner.invoke(args=["bitrix24", "export", "contacts", "--client", "1", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert sent_params(portal.calls[1])["select"] == ["*", "UF_*", "PHONE", "EMAIL"]
    # (click < 8.2's runner mixes stderr into stdout: leave the progress lines out)
    lines = [line for line in result.output.splitlines() if not line.startswith("export contacts")]
    assert lines[0] == ",".join(CONTACT_FIELDS)
    assert lines[1] == "7,Ann,,,,,'+1 555; +1 556,,"  # the formula guard's ' (a leading + is a formula)


def test_import_looks_up_its_markers_then_batches_the_adds(configured, portal, runner, tmp_path):
    src = tmp_path / "people.csv"
    src.write_text("NAME,PHONE,DATE_CREATE\nAnn,+1 555; +1 556,2020-01-01\nBob,,\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": []})  # none made yet
    portal.post(portal_url("batch"), json={"result": {"result": {"w0": 11, "w1": 12}, "result_error": [],
                                                      "result_total": [], "result_next": [], "result_time": []}})
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 0, result.output
    assert "2 rows: created 2, existing 0, updated 0, failed 0" in result.output
    prefix = origin_prefix(str(src))
    lookup = sent_params(portal.calls[1])
    assert lookup["filter"] == {"@ORIGIN_ID": [f"{prefix}:2", f"{prefix}:3"], "ORIGINATOR_ID": IMPORT_ORIGINATOR,
                                ">ID": "0"}
    cmd = sent_params(portal.calls[2])["cmd"]
    assert set(cmd) == {"w0", "w1"}
    assert cmd["w0"].startswith("crm.contact.add?")
    from flask_bitrix24.services.wire import parse_php_form

    first = parse_php_form(cmd["w0"].split("?", 1)[1])
    assert first == {"fields": {"NAME": "Ann", "PHONE": [{"VALUE": "+1 555", "VALUE_TYPE": "WORK"},
                                                         {"VALUE": "+1 556", "VALUE_TYPE": "WORK"}],
                                "ORIGIN_ID": f"{prefix}:2", "ORIGINATOR_ID": IMPORT_ORIGINATOR}}
    second = parse_php_form(cmd["w1"].split("?", 1)[1])
    assert second == {"fields": {"NAME": "Bob", "ORIGIN_ID": f"{prefix}:3", "ORIGINATOR_ID": IMPORT_ORIGINATOR}}


def test_import_of_jsonl_updates_rows_with_an_id_and_keeps_their_multi_field_ids(configured, portal, runner, tmp_path):
    src = tmp_path / "edit.jsonl"
    src.write_text(json.dumps({"ID": "7", "NAME": "Ann B", "PHONE": [{"ID": "1", "VALUE": "+1 557"}]}) + "\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("batch"), json={"result": {"result": {"w0": True}, "result_error": [],
                                                      "result_total": [], "result_next": [], "result_time": []}})
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 0, result.output
    assert "created 0, existing 0, updated 1, failed 0" in result.output
    from flask_bitrix24.services.wire import parse_php_form

    cmd = sent_params(portal.calls[1])["cmd"]["w0"]
    assert cmd.startswith("crm.contact.update?")
    assert parse_php_form(cmd.split("?", 1)[1]) == {"id": "7", "fields": {"NAME": "Ann B",
                                                                          "PHONE": [{"ID": "1", "VALUE": "+1 557"}]}}


def test_csv_cells_and_filter_arguments():
    assert csv_cell(None) == "" and csv_cell(True) == "Y" and csv_cell(False) == "N"
    assert csv_cell([{"VALUE": "a@x"}, {"VALUE": ""}, {"VALUE": "b@x"}]) == "a@x; b@x"
    assert csv_cell(["1", 2]) == "1; 2"
    assert csv_cell({"a": [1]}) == '{"a":[1]}'
    assert parse_filters([">=OPPORTUNITY=1000", "NAME=a=b", "!@ID=1,2", "TYPE_ID=A", "TYPE_ID=B"]) == {
        ">=OPPORTUNITY": "1000", "NAME": "a=b", "!@ID": ["1", "2"], "TYPE_ID": ["A", "B"]}


def test_a_csv_update_leaves_the_records_multi_fields_alone(configured, portal, runner, tmp_path):
    src = tmp_path / "edit.csv"
    src.write_text("ID,NAME,PHONE\n7,Ann B,+1 555\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("batch"), json={"result": {"result": {"w0": True}, "result_error": [],
                                                      "result_total": [], "result_next": [], "result_time": []}})
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 0, result.output
    assert "not sent with updates (CSV has no value IDs; an update would add the values again): PHONE" in result.output
    from flask_bitrix24.services.wire import parse_php_form

    cmd = sent_params(portal.calls[1])["cmd"]["w0"]
    assert parse_php_form(cmd.split("?", 1)[1]) == {"id": "7", "fields": {"NAME": "Ann B"}}


def test_formula_guard_marks_spreadsheet_formulas_and_import_takes_the_mark_off():
    formulas = ['=HYPERLINK("http://evil","x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "+1 555"]
    for text in formulas:
        assert guard_formula(text) == "'" + text
        assert unguard_formula(guard_formula(text)) == text
    # plain numbers stay numbers; text that merely starts with ' round-trips too
    for text in ["-5", "+1.5", "-1e3", "5", "", "plain", "'quoted", "'=x", "''+1", "O'Hara"]:
        assert unguard_formula(guard_formula(text)) == text
    assert guard_formula("-5") == "-5" and guard_formula("'=x") == "''=x" and guard_formula("'quoted") == "'quoted"


def test_export_csv_guards_formula_cells_unless_told_not_to(configured, portal, runner):
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    row = {"ID": "7", "NAME": "=1+1", "LAST_NAME": "-3", "PHONE": [{"VALUE": "+1 555", "VALUE_TYPE": "WORK"}]}
    portal.post(portal_url("crm.contact.list"), json={"result": [row], "total": 1})
    args = ["bitrix24", "export", "contacts", "--client", "1", "--select", "ID,NAME,LAST_NAME,PHONE", "--format", "csv"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "7,'=1+1,-3,'+1 555" in result.output.splitlines()
    result = runner.invoke(args=[*args, "--no-formula-guard"])
    assert result.exit_code == 0, result.output
    assert "7,=1+1,-3,+1 555" in result.output.splitlines()


def test_import_csv_takes_the_formula_guard_off(configured, portal, runner, tmp_path):
    src = tmp_path / "guarded.csv"
    src.write_text("NAME,LAST_NAME,PHONE\n'=1+1,'-x,'+1 555; +1 556\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    portal.post(portal_url("batch"), json={"result": {"result": {"w0": 11}, "result_error": [],
                                                      "result_total": [], "result_next": [], "result_time": []}})
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 0, result.output
    from flask_bitrix24.services.wire import parse_php_form

    cmd = sent_params(portal.calls[2])["cmd"]["w0"]
    fields = parse_php_form(cmd.split("?", 1)[1])["fields"]
    assert fields["NAME"] == "=1+1" and fields["LAST_NAME"] == "-x"
    assert fields["PHONE"] == [{"VALUE": "+1 555", "VALUE_TYPE": "WORK"}, {"VALUE": "+1 556", "VALUE_TYPE": "WORK"}]


def test_export_of_a_smart_process_with_a_non_ascii_digit_type_is_a_usage_error(configured, portal, runner):
    # "²".isdigit() is true, int("²") raises; "٣" would be read as 3
    for name in ("items:²", "items:١٣٠"):
        result = runner.invoke(args=["bitrix24", "export", name, "--client", "1"])
        assert result.exit_code == 2 and "unknown entity" in result.output, result.output
        assert not isinstance(result.exception, ValueError)
    assert len(portal.calls) == 0


def _batch_ok(*ids: int) -> dict:
    return {"result": {"result": {f"w{i}": record_id for i, record_id in enumerate(ids)}, "result_error": [],
                       "result_total": [], "result_next": [], "result_time": []}}


def _sent_names(call) -> list[str]:
    from flask_bitrix24.services.wire import parse_php_form

    return [parse_php_form(cmd.split("?", 1)[1])["fields"]["NAME"] for cmd in sent_params(call)["cmd"].values()]


def test_a_jsonl_line_that_cannot_be_sent_fails_alone_and_the_rest_is_imported(configured, portal, runner, tmp_path):
    src = tmp_path / "odd.jsonl"
    lines = ['{"NAME": "before"}', '{"NAME": NaN}', '{"NAME": 1e999}', '{"NAME": -Infinity}',
             "[" * 100_000 + "]" * 100_000, '{"NAME": ' + "[" * 50_000 + "]" * 50_000 + "}",
             '{"NAME": "deep", "PHONE": [[[[[[[[["x"]]]]]]]]]}', '{"NAME": "x", "PHONE": [{"VAL[UE": "1"}]}',
             '{"NAME": "lone \\ud800 surrogate"}', '{"NAME": "after"}']
    src.write_text("\n".join(lines) + "\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    portal.post(portal_url("batch"), json=_batch_ok(11, 12))
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 1, result.output
    assert "10 rows: created 2, existing 0, updated 0, failed 8" in result.output
    assert _sent_names(portal.calls[-1]) == ["before", "after"]
    failures = [json.loads(line) for line in (tmp_path / "odd.failures.jsonl").read_text().splitlines()]
    reasons = {f["line"]: (f["error"], f["error_description"]) for f in failures}
    assert reasons[2] == ("INVALID_LINE", "NaN is not a number JSON allows: Bitrix24 takes finite numbers only")
    assert reasons[3] == ("INVALID_LINE", "1e999 is not a finite number: Bitrix24 takes finite numbers only")
    assert reasons[4][1].startswith("-Infinity is not a number JSON allows")
    assert reasons[5] == reasons[6] == reasons[7] == ("INVALID_LINE", "nested more than 8 levels deep")
    assert reasons[8][0] == "INVALID_ROW" and "cannot be sent to Bitrix24" in reasons[8][1]
    assert reasons[9][0] == "INVALID_ROW" and "surrogate" in reasons[9][1]
    assert failures[-1]["row"] == {"NAME": "lone \ud800 surrogate"}  # the file stays UTF-8, the row exact
    assert failures[0]["row"] == '{"NAME": NaN}'


def test_a_csv_cell_over_the_body_limit_fails_alone(app, configured, portal, runner, tmp_path):
    limit = app.config["BITRIX_MAX_BODY_BYTES"]
    src = tmp_path / "big.csv"
    src.write_text(f"NAME,LAST_NAME\nfirst,A\n{'x' * 140_000},B\n{'y' * (limit + 1)},C\nlast,D\n")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    portal.post(portal_url("batch"), json=_batch_ok(11, 12, 13))
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 1, result.output
    assert "4 rows: created 3, existing 0, updated 0, failed 1" in result.output
    assert _sent_names(portal.calls[-1]) == ["first", "x" * 140_000, "last"]  # over the csv module's 131,072
    (failure,) = [json.loads(line) for line in (tmp_path / "big.failures.jsonl").read_text().splitlines()]
    assert failure["line"] == 4 and failure["error"] == "INVALID_LINE"
    assert failure["error_description"] == f"the NAME cell holds {limit + 1:,} characters: at most {limit:,}"
    assert failure["row"] == {"NAME": "y" * 100 + f"... ({limit + 1:,} characters)", "LAST_NAME": "C"}


def test_a_csv_cell_past_the_readers_own_limit_fails_alone_and_reading_goes_on():
    import csv
    import io

    from flask_bitrix24.services.transfer import read_rows

    before = csv.field_size_limit()
    try:
        csv.field_size_limit(10)
        text = f"NAME,LAST_NAME\nfirst,A\n{'x' * 20},B\n{'y' * 1000},C\nlast,D\n"
        rows = [(r.line, r.fields, r.error) for r in read_rows(io.StringIO(text), "csv", max_cell=10)]
    finally:
        csv.field_size_limit(before)
    assert rows[0] == (2, {"NAME": "first", "LAST_NAME": "A"}, None)
    assert rows[1] == (3, None, "the NAME cell holds 20 characters: at most 10")
    assert rows[2][:2] == (4, None) and rows[2][2].endswith("a cell may hold at most 10 characters")
    assert rows[3] == (5, {"NAME": "last", "LAST_NAME": "D"}, None)


def test_markers_that_are_not_text_and_objects_in_one_value_fields_fail_their_row(configured, portal, runner, tmp_path):
    src = tmp_path / "markers.jsonl"
    rows = [{"NAME": "Q", "ORIGIN_ID": 123}, {"NAME": "R", "ORIGIN_ID": {"x": 1}}, {"NAME": "R2", "ORIGIN_ID": ["a"]},
            {"NAME": "S", "ORIGIN_ID": True}, {"NAME": "V", "ORIGIN_ID": "x", "ORIGINATOR_ID": {"a": 1}},
            {"NAME": {"nested": 1}}, {"NAME": "L", "LAST_NAME": ["a", "b"]},
            {"NAME": "P", "PHONE": [{"VALUE": "+1 555", "VALUE_TYPE": "WORK"}], "PHOTO": {"fileData": ["a.png", "eA=="]}}]
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    portal.post(portal_url("crm.contact.fields"), json={"result": {**CONTACT_FIELDS, "PHOTO": {"type": "file"}}})
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    portal.post(portal_url("batch"), json=_batch_ok(11, 12))
    result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1"])
    assert result.exit_code == 1, result.output
    assert "8 rows: created 2, existing 0, updated 0, failed 6" in result.output
    from flask_bitrix24.services.wire import parse_php_form

    sent = [parse_php_form(cmd.split("?", 1)[1])["fields"] for cmd in sent_params(portal.calls[-1])["cmd"].values()]
    assert [(f["NAME"], f["ORIGIN_ID"]) for f in sent] == [("Q", "123"), ("P", f"{origin_prefix(str(src))}:8")]
    assert sent[1]["PHOTO"] == {"fileData": ["a.png", "eA=="]}  # a file field takes an object
    failures = [json.loads(line) for line in (tmp_path / "markers.failures.jsonl").read_text().splitlines()]
    assert {f["line"]: f["error_description"] for f in failures} == {
        2: "ORIGIN_ID must be text (or a number), not an object: a rerun could not find the record by it",
        3: "ORIGIN_ID must be text (or a number), not a list: a rerun could not find the record by it",
        4: "ORIGIN_ID must be text (or a number), not true: a rerun could not find the record by it",
        5: "ORIGINATOR_ID must be text (or a number), not an object: a rerun could not find the record by it",
        6: "NAME holds one value, not an object",
        7: "LAST_NAME holds one value, not a list",
    }
    assert {f["error"] for f in failures} == {"INVALID_ROW"}


def test_an_origin_id_column_the_file_lacks_is_a_usage_error_naming_the_columns(configured, portal, runner, tmp_path):
    for name, text, columns in [("c.csv", "NAME,EXT\nA,e1\n", "'NAME', 'EXT'"),
                                ("c.jsonl", '{"NAME": "A"}\n{"NAME": "B", "EXT": "e2"}\n', "'NAME', 'EXT'"),
                                ("empty.csv", "NAME,EXT\n", "'NAME', 'EXT'")]:
        src = tmp_path / name
        src.write_text(text)
        result = runner.invoke(args=["bitrix24", "import", "contacts", str(src), "--client", "1",
                                     "--origin-id-column", "NOPE"])
        assert result.exit_code == 2, result.output
        assert f"--origin-id-column 'NOPE': {src} has no such column; its columns are {columns}" in result.output
    assert len(portal.calls) == 0  # nothing sent, not even the fields


def test_every_byte_order_mark_before_the_header_is_dropped(configured, portal, runner, tmp_path):
    src = tmp_path / "boms.csv"
    src.write_text("\ufeff\ufeffNAME,LAST_NAME\nAnn,A\n", encoding="utf-8")
    jsonl = tmp_path / "boms.jsonl"
    jsonl.write_text('\ufeff\ufeff{"NAME": "Bob"}\n', encoding="utf-8")
    portal.post(portal_url("crm.contact.fields"), json={"result": CONTACT_FIELDS})
    portal.post(portal_url("crm.contact.list"), json={"result": []})
    portal.post(portal_url("batch"), json=_batch_ok(11))
    for path, name in [(src, "Ann"), (jsonl, "Bob")]:
        result = runner.invoke(args=["bitrix24", "import", "contacts", str(path), "--client", "1"])
        assert result.exit_code == 0, result.output
        assert "not sent" not in result.output
        assert _sent_names(portal.calls[-1]) == [name]
