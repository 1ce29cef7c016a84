"""Helpers the benchmark scripts share: free ports, waiting for a server to answer, an emulator process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


class EmulatorProcess:
    """``python -m bitrix24_emulator`` in a process of its own (webhook secret ``bench``), optionally
    preloaded with contacts, with or without its limits; ``base`` is its webhook URL."""

    def __init__(self, preload: int = 0, limits: bool = True, time_scale: float = 0.0,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "bitrix24_emulator", "--port", str(self.port), "--secret", "bench",
               "--time-scale", str(time_scale), *(extra or [])]
        if preload:
            cmd += ["--preload", f"contact={preload}"]
        if not limits:
            cmd.append("--no-limits")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{self.port}/_emulator/stats", timeout=300)  # preloading takes a while
        self.base = f"http://127.0.0.1:{self.port}/rest/1/bench/"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_emulator/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
