#!/usr/bin/env python
"""`make run`: serve the app on PORT (default 5001) with SQLite.

With no BITRIX_WEBHOOK_BASE in the environment this is demo mode: the built-in Bitrix24 emulator is
started on EMULATOR_PORT (default 5002) and the app is wired to it (allowlist, outbound token, events
posted back to our receiver, API auth disabled unless BITRIX_API_KEY is set). The emulator also plays
a Bitrix24 app's OAuth server (``--app``) and our app mode is on with the same demo app, unless
BITRIX_APP_CLIENT_ID is set. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_SECRET = "demo"
DEMO_TOKEN = "demo-application-token"
DEMO_APP = ("local.demo0000000000.00000000", "demo-app-secret-0123456789")  # the demo app's client id and secret


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the emulator did not start on {host}:{port} within {timeout:.0f} s")


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5001"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "5002"))
    env = dict(os.environ)
    children: list[subprocess.Popen] = []

    if not port_free("127.0.0.1", port):
        print(f"port {port} is in use: stop what runs there or set PORT", file=sys.stderr)
        return 1
    if not env.get("BITRIX_WEBHOOK_BASE"):
        if not port_free("127.0.0.1", emulator_port):
            print(f"port {emulator_port} is in use: stop what runs there or set EMULATOR_PORT", file=sys.stderr)
            return 1
        sys.path.insert(0, str(ROOT))
        from flask_bitrix24.services.client_config import DEFAULT_ALLOWED_HOSTS

        event_url = f"http://127.0.0.1:{port}/api/bitrix/webhook"
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bitrix24_emulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(emulator_port),
                "--secret",
                DEMO_SECRET,
                "--event-url",
                event_url,
                "--application-token",
                DEMO_TOKEN,
                *([] if env.get("BITRIX_APP_CLIENT_ID") else ["--app", ":".join(DEMO_APP)]),
            ],
            cwd=ROOT,
        )
        children.append(emulator)
        wait_for_port("127.0.0.1", emulator_port, emulator)
        env["BITRIX_WEBHOOK_BASE"] = f"http://127.0.0.1:{emulator_port}/rest/1/{DEMO_SECRET}/"
        env.setdefault("BITRIX_OUTBOUND_TOKEN", DEMO_TOKEN)
        env.setdefault("BITRIX_ALLOWED_HOSTS", ",".join(("127.0.0.1", "localhost", *DEFAULT_ALLOWED_HOSTS)))
        if not env.get("BITRIX_APP_CLIENT_ID"):
            env["BITRIX_APP_CLIENT_ID"], env["BITRIX_APP_CLIENT_SECRET"] = DEMO_APP
            env["BITRIX_OAUTH_SERVER"] = f"http://127.0.0.1:{emulator_port}/"
        if not env.get("BITRIX_API_KEY"):
            env["BITRIX_AUTH_DISABLED"] = "1"
        print(
            f"demo mode: Bitrix24 emulator at http://127.0.0.1:{emulator_port}/rest/1/{DEMO_SECRET}/ "
            f"(set BITRIX_WEBHOOK_BASE to use a real portal)",
            flush=True,
        )

    app = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "run", "--host", host, "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    children.append(app)

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    # Ctrl-C (SIGINT, which the children get too) or SIGTERM only sets a flag: nothing is raised from a
    # handler, so a second signal (Ctrl-C pressed twice, or both at once) cannot interrupt the shutdown
    # below with a traceback.
    signals: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: signals.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: signals.append(signum))
    try:
        while not signals and all(child.poll() is None for child in children):
            time.sleep(0.3)
    finally:
        stop()
        # One bound for all of them (not 5 s each): a busy machine must not stretch Ctrl-C.
        deadline = time.monotonic() + 5
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
