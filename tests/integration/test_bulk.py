"""bx_batch, bx_list_all and bulk_write against the emulator over real HTTP, with limits and faults."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
from flask_bitrix24.services.bulk import bulk_write, bx_batch, bx_list_all
from flask_bitrix24.services.errors import NotFound


def seed(emulator, entity, count, start=0):
    with emulator._lock:
        for i in range(start, start + count):
            emulator.store.add(entity, {"fields": {"NAME": f"N{i}", "TITLE": f"T{i}", "OPPORTUNITY": str(i)}})


def test_bx_batch_dict_and_list_with_references_and_errors(stack):
    with stack.app.app_context():
        out = bx_batch({
            "a": ("crm.contact.add", {"fields": {"NAME": "Ann"}}),
            "g": ("crm.contact.get", {"id": "$result[a]"}),
            "bad": ("crm.contact.get", {"id": 999999}),
            "l": ("crm.contact.list", {"select": ["ID", "NAME"]}),
        }, client_id=1)
        assert list(out) == ["a", "g", "bad", "l"]
        assert out["g"].ok and out["g"].result["NAME"] == "Ann" and out["g"].result["ID"] == str(out["a"].result)
        assert isinstance(out["bad"].error, NotFound)
        assert out["l"].total == 1 and out["l"].result[0]["NAME"] == "Ann"

        as_list = bx_batch([("crm.contact.get", {"id": out["a"].result}), ("crm.contact.get", {"id": 0})], client_id=1)
        assert [item.ok for item in as_list] == [True, False]


def test_bx_batch_chunks_by_50_in_input_order(stack):
    seed(stack.emulator, "contact", 120)
    with stack.app.app_context():
        items = bx_batch([("crm.contact.get", {"id": i}) for i in range(1, 131)], client_id=1)
    assert [item.result["NAME"] for item in items[:120]] == [f"N{i}" for i in range(120)]
    assert all(isinstance(item.error, NotFound) for item in items[120:])
    assert stack.emulator.counters.by_method["batch"] == 3


def test_bx_batch_halt_marks_the_rest(stack):
    with stack.app.app_context():
        items = bx_batch([("crm.contact.get", {"id": 5})] + [("crm.contact.list", {})] * 60, client_id=1, halt=True)
    assert isinstance(items[0].error, NotFound)
    assert all(item.error is not None and item.error.code == "BATCH_HALTED" for item in items[1:])
    assert stack.emulator.counters.by_method["batch"] == 1


def test_bx_batch_refuses_references_across_chunks(stack):
    with stack.app.app_context(), pytest.raises(ValueError, match="outside its batch"):
        bx_batch({f"k{i}": ("crm.contact.get", {"id": "$result[k0]" if i == 60 else i}) for i in range(61)}, client_id=1)


@pytest.mark.parametrize("bad", [("a[b]", ("crm.contact.get", {"id": 1})), ("k", ("crm.contact.get", {"id": "\udfff"})),
                                 ("k", ("crm.contact.get", {"filter": {"a.b": 1}, "x y": 2}))])
def test_bx_batch_refuses_a_command_it_cannot_send_before_any_chunk_is_sent(stack, bad):
    commands = {f"k{i}": ("crm.contact.get", {"id": i}) for i in range(60)}
    commands[bad[0] if bad[0] != "k" else "k60"] = bad[1]  # in the second chunk of 50
    with stack.app.app_context(), pytest.raises(ValueError, match="cannot be sent|rewritten"):
        bx_batch(commands, client_id=1)
    assert stack.emulator.counters.requests == 0


@pytest.mark.parametrize("mode,chains", [("keyset", 4), ("keyset", 1), ("offset", 4)])
def test_list_all_10000_rows_each_exactly_once(stack, mode, chains):
    seed(stack.emulator, "contact", 10_000)
    stack.app.config["BITRIX_LIST_CHAINS"] = chains
    with stack.app.app_context():
        rows = list(bx_list_all("crm.contact.list", {"select": ["ID", "NAME"]}, client_id=1, mode=mode))
    ids = [int(r["ID"]) for r in rows]
    assert len(ids) == 10_000 and len(set(ids)) == 10_000 and ids == sorted(ids)
    c = stack.emulator.counters
    if mode == "keyset" and chains > 1:
        # ID ranges side by side: one batch of two probes (the first page up, the first page down), then
        # pages 50 IDs wide, 50 to a batch, the last batch also looking past the highest ID; no COUNT.
        assert c.by_method["batch"] == 5 and c.by_method.get("crm.contact.list", 0) == 0
        assert c.batch_commands["crm.contact.list"] == 2 + 198 + 1
    else:
        # 50 pages of 50 rows per request, one plain page first (the count), and no page chained past
        # the end: 10,000 rows are 200 pages, plus one page of slack for rows added meanwhile.
        assert c.by_method["batch"] == 4 and c.by_method["crm.contact.list"] == 1
        assert c.batch_commands["crm.contact.list"] <= 200


def test_list_all_while_rows_are_added(stack):
    seed(stack.emulator, "contact", 10_000)
    stop = threading.Event()

    def writer():
        n = 10_000
        while not stop.is_set():
            seed(stack.emulator, "contact", 25, start=n)
            n += 25
            stop.wait(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with stack.app.app_context():
            ids = [int(r["ID"]) for r in bx_list_all("crm.contact.list", {"select": ["ID"]}, client_id=1)]
    finally:
        stop.set()
        thread.join()
    counts = Counter(ids)
    assert all(c == 1 for c in counts.values())  # none twice
    assert set(range(1, 10_001)) <= set(counts)  # none of the rows present at the start is lost


def test_list_all_ends_while_rows_come_faster_than_it_reads(stack, monkeypatch):
    """A portal that gains 60 contacts with every page asked of it (faster than a page of 50 reads them):
    the listing still ends, with every row present at its start and none twice; past the end of the table
    it reads up to the highest ID there was when it got there, not after."""
    seed(stack.emulator, "contact", 500)
    store = stack.emulator.store
    real_list = store.list
    pages = {"count": 0}

    def growing_list(entity, params):
        with stack.emulator._lock:
            pages["count"] += 1
            for i in range(60 if pages["count"] <= 200 else 0):  # then it stops, so a chase ends too
                store.add(entity, {"fields": {"NAME": f"late {pages['count']}.{i}"}})
            return real_list(entity, params)

    monkeypatch.setattr(store, "list", growing_list)
    with stack.app.app_context():
        ids = [int(r["ID"]) for r in bx_list_all("crm.contact.list", {"select": ["ID"]}, client_id=1)]
    counts = Counter(ids)
    assert all(c == 1 for c in counts.values())
    assert set(range(1, 501)) <= set(counts)
    assert ids == sorted(ids)
    # Bounded: the pages asked are a handful, not a chase (each one adds 60 more rows than there were).
    assert pages["count"] < 60, pages
    assert len(ids) < 500 + 60 * pages["count"]  # the rows added after the end was reached are not read


def test_list_all_respects_filter_and_other_orders(stack):
    seed(stack.emulator, "deal", 300)
    with stack.app.app_context():
        rows = list(bx_list_all("crm.deal.list", {"filter": {">=OPPORTUNITY": 100}, "order": {"OPPORTUNITY": "DESC"},
                                                  "select": ["ID", "OPPORTUNITY"]}, client_id=1))
        keyed = list(bx_list_all("crm.deal.list", {"filter": {">ID": 250}, "select": ["ID"]}, client_id=1))
    assert [float(r["OPPORTUNITY"]) for r in rows] == [float(i) for i in range(299, 99, -1)]
    assert [int(r["ID"]) for r in keyed] == list(range(251, 301))


def _bulk_stack(make_stack, **faults):
    s = make_stack(app_config={"BITRIX_RATE_BURST": 100_000, "BITRIX_RATE_DRAIN": 100_000.0}, limits=False, **faults)
    s.configure()
    policy = type(s.app.extensions["bitrix24"].caller.policy)
    s.app.extensions["bitrix24"].caller.policy = policy(attempts=20, backoff_base=0.01, backoff_max=0.05, max_wait=60)
    return s


def _assert_each_created_once(s, outcomes, count):
    assert all(o.error is None for o in outcomes), [o for o in outcomes if o.error][:3]
    records = s.emulator.records["contact"]
    names = Counter(r["NAME"] for r in records.values())
    assert len(records) == count and set(names.values()) == {1}
    assert {o.id for o in outcomes} == set(records)
    assert all(records[o.id]["NAME"] == f"Bulk{o.index}" for o in outcomes)


@pytest.mark.parametrize("seed", [9, 15])
def test_bulk_create_1000_with_503s_and_drops_creates_each_exactly_once(make_stack, seed):
    # 10% injected 503s and 2% dropped connections, half of them after the portal did the work.
    # (These seeds make drops happen within the ~25 batch requests.)
    s = _bulk_stack(make_stack, fail_rate=0.10, fail_status=503, drop_rate=0.02, drop_phase="random", seed=seed)
    items = [{"fields": {"NAME": f"Bulk{i}", "LAST_NAME": "X"}} for i in range(1000)]
    with s.app.app_context():
        outcomes = bulk_write("crm.contact", items, client_id=1, attempts=20)
    _assert_each_created_once(s, outcomes, 1000)
    c = s.emulator.counters
    assert c.failed > 0 and c.dropped >= 1  # the faults really happened...
    assert c.by_method["crm.contact.list"] >= 1  # ...and a lost answer was reconciled by marker


def test_bulk_create_when_many_answers_are_lost_after_the_write(make_stack):
    # Every lost answer here comes after the records were written: a blind retry would duplicate.
    s = _bulk_stack(make_stack, drop_rate=0.2, drop_phase="after", fail_rate=0.2, fail_phase="after", seed=3)
    items = [{"fields": {"NAME": f"Bulk{i}", "LAST_NAME": "X"}} for i in range(500)]
    with s.app.app_context():
        outcomes = bulk_write("crm.contact", items, client_id=1, attempts=30)
    _assert_each_created_once(s, outcomes, 500)
    assert s.emulator.counters.dropped + s.emulator.counters.failed >= 3
    assert all(r["ORIGINATOR_ID"] == "flask-bitrix24" for r in s.emulator.records["contact"].values())
    # Each record's marker is its own: 128 random bits as 32 hex digits, none shared (a shared one would make a
    # lost answer's lookup find another item's record), and a second call draws new ones.
    markers = [r["ORIGIN_ID"] for r in s.emulator.records["contact"].values()]
    assert len(set(markers)) == 500 and all(re.fullmatch(r"[0-9a-f]{32}", m) for m in markers)
    with s.app.app_context():
        again = bulk_write("crm.contact", items[:50], client_id=1, attempts=30)
    assert not {s.emulator.records["contact"][o.id]["ORIGIN_ID"] for o in again} & set(markers)


def test_bulk_updates_and_per_item_errors(make_stack):
    s = _bulk_stack(make_stack)
    seed(s.emulator, "contact", 3)
    items = [{"id": 1, "fields": {"NAME": "One"}}, {"id": 999, "fields": {"NAME": "Nope"}},
             {"fields": {"NAME": "New"}}, {"fields": {"COMMENTS": "no name"}}]
    with s.app.app_context():
        outcomes = bulk_write("crm.contact", items, client_id=1)
    assert [(o.action, o.error is None) for o in outcomes] == [("updated", True), ("updated", False),
                                                                ("created", True), ("created", False)]
    assert s.emulator.records["contact"][1]["NAME"] == "One"
    assert outcomes[1].error.code == "NOT_FOUND" and outcomes[2].id == 4
    assert "required" in outcomes[3].error.description


def test_ranged_listing_walks_fewer_ranges_at_once_while_the_portal_says_503(make_stack, monkeypatch):
    from flask_bitrix24.services.bulk import ranges

    seen: list[int] = []

    class Recorded(ranges.Pace):
        def after(self, trouble):
            super().after(trouble)
            seen.append(self.chains)

    monkeypatch.setattr(ranges, "Pace", Recorded)
    # A busy portal: 2 requests in 5 refused. Attempts raised from 6: at this rate one call in 250 would
    # meet six refusals in a row, and with the chains' requests drawn in whatever order they come, a run of
    # the listing's dozens of calls gave up now and then; 20 make that one in 10^8 a call.
    stack = make_stack({"BITRIX_RETRY_ATTEMPTS": 20}, fail_rate=0.4, fail_status=503, seed=7)
    stack.configure()
    seed(stack.emulator, "contact", 30_000)
    with stack.app.app_context():
        ids = [int(row["ID"]) for row in bx_list_all("crm.contact.list", {"select": ["ID"]}, client_id=1)]
    assert ids == list(range(1, 30_001))  # every row once, in order, through the retries
    assert stack.emulator.counters.failed > 0 and min(seen) < 4  # it slowed down...
    assert seen[-1] >= min(seen)  # ...and never below one


def test_pace_halves_on_trouble_and_grows_back_after_clean_batches():
    from flask_bitrix24.services.bulk.ranges import Pace

    pace = Pace(4)
    pace.after(["QUERY_LIMIT_EXCEEDED"])
    assert pace.chains == 2
    pace.after(["PORTAL_ERROR"])
    pace.after(["QUERY_LIMIT_EXCEEDED"])
    assert pace.chains == 1
    for _ in range(2):
        pace.after([])
    assert pace.chains == 2
    for _ in range(4):
        pace.after([])
    assert pace.chains == 3
    for _ in range(20):
        pace.after([])
    assert pace.chains == 4  # never more than BITRIX_LIST_CHAINS
