#!/usr/bin/env python
"""CPU to encode one ``batch`` request of 50 contact creates: the two-pass encoding against the one-pass one.

    .venv/bin/python bench/encode_batch.py [--rounds 15] [--calls 300]

Both are in the code: ``check_sendable`` of each item (the batch endpoint's own check), ``command_string``
(each command's query), then ``form_body`` of ``{"halt", "cmd"}`` (the body, encoding every command a second
time) and ``batch_methods`` reading the commands' methods back out of that text, as a bulk write did
before; ``encode_command`` + ``batch_body``, which write each command encoded twice in one pass and keep the
methods, as a bulk write does now. The 50 creates are shaped as
bench/tenants.py's (NAME, LAST_NAME, one EMAIL, the ORIGIN_ID marker and ORIGINATOR_ID bulk_write adds). The
two bodies are checked to be the same bytes first. Rounds alternate the two; CPU is ``time.process_time()``;
the best and median round are printed as ms per batch request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.services.bulk.batch import command_string  # noqa: E402
from app.services.wire import batch_body, batch_methods, check_sendable, encode_command, form_body  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300, help="batch requests encoded per round")
    args = parser.parse_args()
    items = [("crm.contact.add", {"fields": {"NAME": "Tenant 7", "LAST_NAME": f"Contact {i}",
                                             "EMAIL": [{"VALUE": f"t7.c{i}@example.com"}],
                                             "ORIGIN_ID": os.urandom(16).hex(), "ORIGINATOR_ID": "flask-bitrix24"}})
             for i in range(50)]

    def two_passes() -> str:
        for _, params in items:
            check_sendable(params)
        body = form_body({"halt": 0, "cmd": {f"w{i}": command_string(m, p) for i, (m, p) in enumerate(items)}})
        batch_methods(str(body))
        return body

    def one_pass() -> str:
        body = batch_body(False, {f"w{i}": encode_command(m, p) for i, (m, p) in enumerate(items)})
        batch_methods(body)
        return body

    if two_passes() != one_pass():
        raise SystemExit("the two encodings differ")
    rounds: dict[str, list[float]] = {"two passes": [], "one pass": []}
    for _ in range(args.rounds):
        for name, encode in (("two passes", two_passes), ("one pass", one_pass)):
            started = time.process_time()
            for _ in range(args.calls):
                encode()
            rounds[name].append((time.process_time() - started) / args.calls * 1000)
    for name, values in rounds.items():
        print(f"{name:10}  CPU ms per batch request of 50 creates  best {min(values):.3f}  "
              f"median {statistics.median(values):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
