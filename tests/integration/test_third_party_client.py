"""A real third-party client (fast_bitrix24) and ours see the same data on the same emulator."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture
def fast(stack):
    from fast_bitrix24 import Bitrix

    return Bitrix(stack.emulator_server.base, ssl=False, verbose=False)


def our_list_all(stack, entity, select):
    rows, start = [], 0
    while start is not None:
        page = stack.http.get(f"{stack.api}/clients/1/{entity}", params={"select": select, "start": start, "order[ID]": "ASC"}).json()
        rows += page["result"]
        start = page.get("next")
    return rows


def test_fast_bitrix24_and_our_client_agree(stack, fast):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # written by fast_bitrix24's batched call, read by us
        fast_ids = fast.call("crm.contact.add", [{"fields": {"NAME": f"Fast{i}", "EMAIL": [{"VALUE": f"f{i}@example.com"}]}}
                                                 for i in range(75)])
        # written by us, read by fast_bitrix24
        our_ids = [stack.http.post(f"{stack.api}/clients/1/contacts", json={"NAME": f"Ours{i}", "LAST_NAME": "X"}).json()["result"]
                   for i in range(5)]
        theirs = fast.get_all("crm.contact.list", {"select": ["ID", "NAME", "LAST_NAME"]})
        by_id = fast.get_by_ID("crm.contact.get", [fast_ids[0], fast_ids[-1], our_ids[2]])

    ours = our_list_all(stack, "contacts", ["ID", "NAME", "LAST_NAME"])
    assert len(ours) == 80 and len({r["ID"] for r in ours}) == 80
    key = lambda r: (r["ID"], r["NAME"], r["LAST_NAME"])  # noqa: E731
    assert sorted(map(key, theirs)) == sorted(map(key, ours))
    for record_id in (fast_ids[0], fast_ids[-1], our_ids[2]):
        mine = stack.http.get(f"{stack.api}/clients/1/contacts/{record_id}").json()["result"]
        assert by_id[str(record_id)] == mine
    assert by_id[str(our_ids[2])]["NAME"] == "Ours2"
