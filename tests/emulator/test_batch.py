"""batch: commands, references, halt, limits and the five result sections.

Sources: "the batch page" below is https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html;
"the portal's source" is the rest module of the portal's PHP source, modules/rest/classes/general/rest_provider.php
(methodsBatch, processBatchElement) and modules/rest/classes/general/rest_util.php (ParseBatchQuery).
"""

from .conftest import BASE, make_api


def batch(api, cmd, halt=0, **extra):
    status, body = api("batch", {"halt": halt, "cmd": cmd, **extra})
    assert status == 200, body
    return body["result"]


def test_sections_and_references(api):
    """$result[key] substitutes the raw value; the five sections come back (the batch page; the portal's
    source)."""
    out = batch(api, {"c": "crm.contact.add?fields[NAME]=Ann", "g": "crm.contact.get?id=$result[c]"})
    assert set(out) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert out["result"]["c"] == 1 and out["result"]["g"]["NAME"] == "Ann"
    assert out["result_error"] == [] and out["result_total"] == [] and out["result_next"] == []
    assert set(out["result_time"]) == {"c", "g"} and "operating" in out["result_time"]["g"]


def test_list_shape_when_keys_are_0_to_n(api):
    """A cmd list (keys 0..n-1) gives list-shaped sections (the portal's source and its JSON encoder,
    modules/main/lib/web/json.php)."""
    out = batch(api, ["crm.contact.add?fields[NAME]=A", "crm.contact.add?fields[NAME]=B"])
    assert out["result"] == [1, 2]
    assert isinstance(out["result_time"], list) and len(out["result_time"]) == 2


def test_object_shape_when_a_key_is_missing(api):
    """An error at key 0 leaves keys 1.. only, so sections become objects with string keys (the portal's source
    and its JSON encoder, modules/main/lib/web/json.php)."""
    out = batch(api, ["crm.contact.get?id=99", "crm.contact.add?fields[NAME]=B"])
    assert out["result"] == {"1": 1}
    assert out["result_error"] == [{"error": "", "error_description": "Not found"}]


def test_total_next_sections_and_row_references():
    """List commands fill result_total/result_next; $result[list][0][ID] indexes a row (the batch page)."""
    api = make_api(limits=False)
    for i in range(55):
        api.ok("crm.contact.add", {"fields": {"NAME": f"n{i}"}})
    out = batch(api, {"l": "crm.contact.list?select[]=ID&order[ID]=DESC",
                      "g": "crm.contact.get?id=$result[l][0][ID]",
                      "n": "crm.contact.list?start=$next[l]&select[]=ID"})
    assert out["result_total"] == {"l": 55, "n": 55} and out["result_next"] == {"l": 50}
    assert out["result"]["g"]["ID"] == "55"
    assert len(out["result"]["n"]) == 5


def test_reference_inside_a_string_only_with_strings(api):
    """A reference inside a longer value is replaced only when it resolves to a string (the portal's source,
    processBatchElement)."""
    out = batch(api, {
        "a": "crm.contact.add?fields[NAME]=Ann",
        "g": "crm.contact.get?id=$result[a]",
        "b": "crm.contact.add?fields[NAME]=Copy of $result[g][NAME]&fields[LAST_NAME]=id $result[a]",
    })
    copy = api.emu.records["contact"][out["result"]["b"]]
    assert copy["NAME"] == "Copy of Ann"
    assert copy["LAST_NAME"] == "id $result[a]"  # the int result is not spliced into a string


def test_unresolvable_reference_gives_partial_value(api):
    """An unresolvable path uses the partial value reached, without an error (the portal's source,
    processBatchElement)."""
    out = batch(api, {"a": "crm.contact.add?fields[NAME]=Ann",
                      "g": "crm.contact.get?id=$result[a][NOPE]",
                      "x": "crm.contact.get?id=$result[zzz]"})
    assert out["result"]["g"]["NAME"] == "Ann"
    # $result[zzz] stops at the whole result section, an array; PHP's (int) of a non-empty array is 1.
    assert out["result_error"] == [] and out["result"]["x"]["ID"] == "1"


def test_error_reference(api):
    """$error[key] reaches a failed command's error (the portal's source)."""
    out = batch(api, {"bad": "crm.contact.get?id=7",
                      "c": "crm.contact.add?fields[NAME]=$error[bad][error_description]"})
    assert api.emu.records["contact"][out["result"]["c"]]["NAME"] == "Not found"


def test_halt_stops_after_first_failure(api):
    """halt=1 stops after the first failing command; later keys are absent from every section (the batch page;
    the portal's source)."""
    out = batch(api, {"a": "crm.contact.add?fields[NAME]=A", "b": "crm.contact.get?id=999",
                      "c": "crm.contact.add?fields[NAME]=C"}, halt=1)
    assert list(out["result"]) == ["a"] and list(out["result_error"]) == ["b"]
    assert "c" not in out["result_time"] and len(api.emu.records["contact"]) == 1


def test_halt_php_bool_cast(api):
    """halt is a PHP (bool) cast, so the string "false" halts and "0" does not (the portal's source,
    methodsBatch)."""
    cmd = {"b": "crm.contact.get?id=999", "c": "crm.contact.add?fields[NAME]=C"}
    response = api.client.post(BASE + "batch", data={"halt": "false", **{f"cmd[{k}]": v for k, v in cmd.items()}})
    assert "c" not in response.json["result"]["result"]
    response = api.client.post(BASE + "batch", data={"halt": "0", **{f"cmd[{k}]": v for k, v in cmd.items()}})
    assert response.json["result"]["result"] == {"c": 1}


def test_halt_zero_collects_all_errors(api):
    """halt=0 runs everything and collects errors (the batch page)."""
    out = batch(api, {"a": "crm.contact.get?id=1", "b": "crm.nothing.here", "c": "crm.contact.add?fields[NAME]=C"})
    assert out["result_error"]["a"]["error_description"] == "Not found"
    assert out["result_error"]["b"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert out["result"] == {"c": 1}


def test_more_than_50_commands():
    """Commands 51+ each get ERROR_BATCH_LENGTH_EXCEEDED; the batch is still 200 (the batch page; the portal's
    source)."""
    api = make_api(limits=False)
    cmd = {f"k{i}": f"crm.contact.add?fields[NAME]=n{i}" for i in range(53)}
    out = batch(api, cmd)
    assert len(out["result"]) == 50
    assert set(out["result_error"]) == {"k50", "k51", "k52"}
    assert out["result_error"]["k50"] == {"error": "ERROR_BATCH_LENGTH_EXCEEDED",
                                          "error_description": "Max batch length exceeded"}


def test_nested_batch_refused(api):
    """A nested batch gets ERROR_BATCH_METHOD_NOT_ALLOWED (the batch page)."""
    out = batch(api, {"n": "batch?cmd[x]=profile"})
    assert out["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


def test_non_string_commands_skipped_and_case(api):
    """Non-string cmd values are skipped; inner method names are case-insensitive (the portal's source)."""
    out = batch(api, {"a": {"method": "profile"}, "b": "PROFILE", "c": "crm.Contact.Add?fields[NAME]=x"})
    assert set(out["result"]) == {"b", "c"} and out["result_error"] == []


def test_double_encoded_values(api):
    """Values inside a command are URL-encoded once more (an & in a name is %26)
    (https://apidocs.bitrix24.com/settings/how-to-call-rest-api/data-encoding.html; the portal's source,
    ParseBatchQuery)."""
    out = batch(api, {"a": "crm.contact.add?fields[NAME]=Tom%20%26%20Jerry"})
    assert api.emu.records["contact"][out["result"]["a"]]["NAME"] == "Tom & Jerry"


def test_batch_counts_once_against_rate_bucket():
    """A batch counts once against the leaky bucket, however many commands it carries
    (https://apidocs.bitrix24.com/limits.html)."""
    api = make_api(burst=2)
    batch(api, {f"k{i}": "profile" for i in range(30)})
    assert api.raw("profile").status_code == 200
    assert api.raw("profile").status_code == 503
    assert api.emu.counters.batch_commands["profile"] == 30
