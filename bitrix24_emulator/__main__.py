"""``python -m bitrix24_emulator --port 5002``: run the emulator until Ctrl-C or SIGTERM.

``--portals 100`` serves a hundred portals on the one port, each with its own data, limits and
events: portal N answers at Host ``portal-N.bitrix24.test`` (``--domain`` with ``{n}``) or, with no
DNS, by its webhook secret: ``--secret`` for portal 1 (``demo``), the secret followed by N for the
others (``demo2`` ... ``demo100``).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading

from .emulator import create_emulator
from .portals import DEFAULT_DOMAIN, create_portals
from .server import close_connections, make_keepalive_server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bitrix24_emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5002)
    p.add_argument("--user-id", type=int, default=1)
    p.add_argument("--secret", default="demo")
    p.add_argument("--rate", type=float, default=2.0, help="leaky bucket drain per second")
    p.add_argument("--burst", type=float, default=50, help="leaky bucket size")
    p.add_argument("--operating-limit", type=float, default=480.0, help="seconds per method per window")
    p.add_argument("--operating-window", type=float, default=600.0, help="window in seconds (10 buckets)")
    p.add_argument("--cost-per-call", type=float, default=0.0, help="simulated operating seconds per call")
    p.add_argument("--latency", type=float, default=0, help="added latency per request, ms")
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of requests answered 500")
    p.add_argument("--fail-status", type=int, choices=[500, 503], default=500,
                   help="status of injected failures (503: QUERY_LIMIT_EXCEEDED, before the method)")
    p.add_argument("--fail-phase", choices=["random", "before", "after"], default="before",
                   help="whether an injected 500 comes before or after the method ran")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of connections dropped")
    p.add_argument("--drop-phase", choices=["random", "before", "after"], default="random")
    p.add_argument("--event-url", default=None, help="where to POST ONCRM* events")
    p.add_argument("--application-token", default=None, help="auth[application_token] in events")
    p.add_argument("--domain", default=None,
                   help="auth[domain] in events (default: request Host); with --portals a pattern with {n} "
                        f"(default {DEFAULT_DOMAIN})")
    p.add_argument("--portals", type=int, default=None, metavar="N",
                   help="serve N portals on this port, told apart by Host or by the webhook secret")
    p.add_argument("--bind", action="append", default=[], metavar="EVENT=URL",
                   help="bind URL to EVENT as the portal's outbound webhook (every portal's with --portals); "
                        "repeatable")
    p.add_argument("--gc-threshold", type=gc_threshold, default=(5000, 20, 100), metavar="A,B,C|default",
                   help="Python's garbage collector once the portals are made: what they hold so far is frozen out "
                        "of later collections, then gc.set_threshold(A, B, C) (default 5000,20,100; 'default' "
                        "keeps Python's own): with many portals' records in memory, the full collections of "
                        "Python's 700,10,10 took a tenth of the emulator's CPU")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-limits", action="store_true", help="turn off both limiters")
    p.add_argument("--time-scale", type=float, default=0.0,
                   help="answer as slowly as a portal would (its modelled server time) times this; 0: at once. "
                        "The operating budget is charged in full either way")
    p.add_argument("--method-cost", action="append", default=[], metavar="METHOD=SECONDS",
                   help="the server time one call of METHOD takes (charged to its operating budget), e.g. "
                        "crm.contact.update=0.5; repeatable")
    p.add_argument("--scopes", default="all",
                   help="the webhook's scopes, comma-separated (crm,task,user,...); default: all")
    p.add_argument("--preload", action="append", default=[], metavar="ENTITY=N",
                   help="start with N records of ENTITY (contact, deal, lead, company); repeatable")
    p.add_argument("--smart-process", action="append", default=[], metavar="TYPE_ID=TITLE",
                   help="serve crm.item.* for this smart process, e.g. 128=Projects; repeatable "
                        "(default: 128=Projects)")
    # Where the docs and the portal's source disagree or are silent (docs/emulator.md, "Choices").
    p.add_argument("--no-currency-check", action="store_true",
                   help="store an unknown CURRENCY_ID as older portals' legacy code did (default: refuse it, "
                        "as a new portal's factory mode does)")
    p.add_argument("--auth-error-status", type=int, choices=[401, 403], default=401,
                   help="HTTP status of INVALID_CREDENTIALS and insufficient_scope (the portal's source: 401; "
                        "the docs' table: 403)")
    p.add_argument("--batch-operating", choices=["methods", "batch"], default="methods",
                   help="charge a batch's operating time to each command's method (default) or to batch itself")
    p.add_argument("--delete-missing-error", choices=["legacy", "docs"], default="legacy",
                   help="deleting a missing record: the legacy empty code 'Not found' (default) or the docs' "
                        "ERROR_CORE 'Element not found'")
    p.add_argument("--currency", default="RUB", help="the portal's base currency")
    p.add_argument("--app", default=None, metavar="CLIENT_ID:CLIENT_SECRET",
                   help="an OAuth application the portal (every portal with --portals) can install: "
                        "POST /_emulator/install, tokens from /oauth/token/ (docs/emulator.md)")
    p.add_argument("--access-ttl", type=float, default=3600.0, metavar="SECONDS",
                   help="lifetime of the application's access tokens (default 3600)")
    # The portal's plan (feature.get): both features are on, as on Professional and up.
    p.add_argument("--no-offline-extended", action="store_true",
                   help="a plan without rest_offline_extended: event.offline.get with clear=0 is refused "
                        "(403 WRONG_LICENSE)")
    p.add_argument("--no-auth-connector", action="store_true",
                   help="a plan without rest_auth_connector: a token's call with auth_connector is refused "
                        "(403 WRONG_LICENSE)")
    p.add_argument("--event-drop-rate", type=float, default=0.0, metavar="FRACTION",
                   help="lose this fraction of event posts (counted, never sent; offline queues still fill); "
                        "POST /_emulator/events changes it at run time")
    return p


def _app(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    client_id, _, client_secret = value.partition(":")
    if not client_id.strip() or not client_secret.strip():
        raise SystemExit(f"--app wants CLIENT_ID:CLIENT_SECRET, e.g. local.app1:s3cret, not {value!r}")
    return client_id.strip(), client_secret.strip()


def _smart_processes(items: list[str]) -> dict[int, str] | None:
    if not items:
        return None  # the emulator's default, {128: "Projects"}
    out = {}
    for item in items:
        type_id, _, title = item.partition("=")
        if not type_id.strip().isdigit() or not title.strip():
            raise SystemExit(f"--smart-process wants TYPE_ID=TITLE, e.g. 128=Projects, not {item!r}")
        out[int(type_id)] = title.strip()
    return out


def _preload(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        entity, _, count = item.partition("=")
        if entity not in ("contact", "deal", "lead", "company") or not count.isdigit():
            raise SystemExit(f"--preload wants ENTITY=N with ENTITY contact, deal, lead or company, not {item!r}")
        out[entity] = int(count)
    return out


def _bindings(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        event, _, url = item.partition("=")
        if not event.strip() or not url.strip().startswith(("http://", "https://")):
            raise SystemExit(f"--bind wants EVENT=URL, e.g. ONCRMDEALADD=https://example.com/h, not {item!r}")
        out.append((event.strip(), url.strip()))
    return out


def emulator_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of create_emulator() (and create_portals()) the command line asks for."""
    return dict(
        user_id=args.user_id, secret=args.secret, rate=args.rate, burst=args.burst,
        operating_limit=args.operating_limit, operating_window=args.operating_window,
        cost_per_call=args.cost_per_call, latency_ms=args.latency, fail_rate=args.fail_rate,
        drop_rate=args.drop_rate, drop_phase=args.drop_phase,
        fail_status=args.fail_status, fail_phase=args.fail_phase, event_url=args.event_url,
        application_token=args.application_token, seed=args.seed,
        limits=not args.no_limits, preload=_preload(args.preload), scopes=args.scopes,
        time_scale=args.time_scale, method_costs=_method_costs(args.method_cost),
        smart_processes=_smart_processes(args.smart_process),
        currency_check=not args.no_currency_check, auth_error_status=args.auth_error_status,
        batch_operating=args.batch_operating, delete_missing_error=args.delete_missing_error,
        currency=args.currency, app=_app(args.app), access_ttl=_access_ttl(args.access_ttl),
        offline_extended=not args.no_offline_extended, auth_connectors=not args.no_auth_connector,
        event_drop_rate=_fraction(args.event_drop_rate))


def _method_costs(items: list[str]) -> dict[str, float]:
    costs = {}
    for item in items:
        method, _, seconds = item.partition("=")
        try:
            costs[method.strip().lower()] = float(seconds)
        except ValueError:
            raise SystemExit(f"--method-cost wants METHOD=SECONDS, e.g. crm.contact.update=0.5, not {item!r}") from None
        if not method.strip() or not 0 <= costs[method.strip().lower()] <= 60:
            raise SystemExit(f"--method-cost wants a method and 0 to 60 seconds, not {item!r}")
    return costs


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise SystemExit(f"--event-drop-rate wants a number from 0 to 1, not {value}")
    return value


def _access_ttl(value: float) -> float:
    if not 0 < value < float("inf"):
        raise SystemExit(f"--access-ttl wants a positive number of seconds, not {value}")
    return value


def gc_threshold(text: str) -> tuple[int, int, int] | None:
    """``--gc-threshold``: "A,B,C" as gc.set_threshold takes them, or "default" (None: Python's own)."""
    if text.strip() == "default":
        return None
    try:
        generations = tuple(int(n) for n in text.split(","))
    except ValueError:
        generations = ()
    if len(generations) != 3 or min(generations) < 0:
        raise argparse.ArgumentTypeError(f"three whole numbers A,B,C or 'default', not {text!r}")
    return generations  # type: ignore[return-value]


def tune_gc(generations: tuple[int, int, int] | None) -> None:
    """Freeze what the process holds now (the code, the portals, what --preload made: never garbage, so no
    later collection scans it), then collect at ``generations``; None leaves Python's collector as it is."""
    if generations is not None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*generations)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    options = emulator_options(args)
    bindings = _bindings(args.bind)
    if args.portals is not None:
        if args.portals < 1:
            raise SystemExit("--portals wants a number of portals, 1 or more")
        try:
            app = create_portals(args.portals, domain=args.domain or DEFAULT_DOMAIN, **options)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        portals = app.portals
    else:
        app = create_emulator(domain=args.domain, **options)
        portals = [app]
    for portal in portals:
        for event, url in bindings:
            portal.bind_event(event, url)
    # Ctrl-C reaches the whole process group, and `make run` (scripts/run_dev.py) then sends SIGTERM as
    # well: two signals arrive close together, the second possibly while the first one's handler runs.
    # A handler only writes a byte to a pipe, the first time (no exception raised into the shutdown, which
    # printed a traceback, and no lock taken: a nested handler waiting for a lock its own thread holds
    # would hang); a thread reading the pipe asks the server loop to end, as shutdown() must be called
    # from another thread than serve_forever's.
    stop_read, stop_write = os.pipe()
    signals: list[int] = []

    def stop(signum, frame):
        if not signals:
            signals.append(signum)
            os.write(stop_write, b"x")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    tune_gc(args.gc_threshold)
    server = make_keepalive_server(args.host, args.port, app)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    url = f"http://{host}:{server.port}"
    first = portals[0]
    if args.portals is None:
        print(f"Bitrix24 emulator webhook base: {url}/rest/{first.user_id}/{first.secret}/", flush=True)
    else:
        print(f"Bitrix24 emulator: {len(portals)} portal(s); portal 1's webhook base: "
              f"{url}/rest/{first.user_id}/{first.secret}/", flush=True)
        secret_n = args.secret.replace("{n}", "N") if "{n}" in args.secret else f"{args.secret}N"
        shown = sorted({1, min(2, len(portals)), len(portals)})
        examples = ", ".join(f"portal {n}: {portals[n - 1].secret}" for n in shown)
        if len(portals) > 1:
            print(f"Portal N's webhook base: {url}/rest/{first.user_id}/{secret_n}/ ({examples}); the header "
                  f"Host: {(args.domain or DEFAULT_DOMAIN).replace('{n}', 'N')} reaches portal N too (with its "
                  f"own secret in the path)", flush=True)
        else:
            print(f"It answers at Host {first.domain} too", flush=True)
        print(f"Counters: {url}/_emulator/stats (all portals), {url}/_emulator/stats?portal=N (portal N)",
              flush=True)
    if first.oauth.client_id is not None:
        print(f"OAuth application {first.oauth.client_id}: install with POST {url}/_emulator/install "
              f"(JSON {{\"handler\": URL}}{', with Host or ?portal=N' if args.portals is not None else ''}); "
              f"tokens renewed at {url}/oauth/token/", flush=True)
    if args.event_url:
        tokens = first.application_token if args.portals is None else "each portal's own application_token"
        print(f"Events go to {args.event_url} with {'application_token ' if args.portals is None else ''}"
              f"{tokens}", flush=True)

    def stop_server() -> None:
        os.read(stop_read, 1)  # a signal that came before the server was made is read at once
        server.shutdown()

    threading.Thread(target=stop_server, name="b24-emulator-stop", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        close_connections(server)
        print("Bitrix24 emulator stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
