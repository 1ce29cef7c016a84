"""`make run`'s demo mode as a new user meets it: scripts/run_dev.py starts the emulator and the app,
every curl in the README works against them as pasted, the smoke test passes, Ctrl-C stops both."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def readme_curls() -> list[str]:
    """Every curl command in the README's bash blocks, continuation lines joined, in order; an id kept
    for later commands (``DEAL=$(curl ...)``) counts as one."""
    text = (ROOT / "README.md").read_text()
    commands = []
    starts = re.compile(r"^(?:curl |\w+=\$\(curl )")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        current: list[str] = []
        for line in block.splitlines():
            if starts.match(line) or not line.strip() or line.startswith("#"):
                if current:
                    commands.append("\n".join(current))
                current = [line] if starts.match(line) else []
            elif current:
                current.append(line)  # continuation lines and multi-line JSON bodies
        if current:
            commands.append("\n".join(current))
    return commands


# Each curl of a script must answer 2xx: the script stops at the first that does not, saying which.
CHECKED_CURL = r"""set -eo pipefail
curl() {
  local out code
  # A connection reset by the development server (seen once in CI, on the last curl) is tried once more, as a
  # reader would; an answer that is not 2xx is never retried.
  out=$(command curl -sS -w '\n%{http_code}' "$@") || out=$(command curl -sS -w '\n%{http_code}' "$@") \
    || { echo "curl could not run: curl $*" >&2; exit 1; }
  code=${out##*$'\n'}
  printf '%s\n' "${out%$'\n'*}"
  case "$code" in 2*) ;; *) echo "HTTP $code from: curl $*" >&2; exit 1 ;; esac
}
"""


@pytest.fixture
def demo(tmp_path):
    port, emulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX_") and k != "DATABASE_URL"}
    env.update(PORT=str(port), EMULATOR_PORT=str(emulator_port), BITRIX_SECRET_KEY=Fernet.generate_key().decode(),
               DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "scripts/run_dev.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_port(emulator_port, proc)
        wait_port(port, proc)
        yield port, emulator_port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curls_then_smoke_test_then_ctrl_c(demo):
    port, emulator_port, proc = demo
    curls = readme_curls()
    assert len(curls) >= 20  # every endpoint is walked through
    # One shell, top to bottom, as a reader pastes the walk-through into one terminal (ids kept in variables).
    script = "\n".join(curls).replace("localhost:5001", f"127.0.0.1:{port}").replace(
        "127.0.0.1:5002", f"127.0.0.1:{emulator_port}")
    result = subprocess.run(["bash", "-c", CHECKED_CURL + script], env=dict(os.environ, BITRIX_API_KEY=""),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"

    smoke = subprocess.run([sys.executable, "test_bitrix24_integration.py", "--base-url", f"http://127.0.0.1:{port}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert smoke.returncode == 0, smoke.stdout
    assert smoke.stdout.strip().splitlines()[-1] == "22 passed, 0 failed"

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    proc.wait(timeout=15)
    for p in (port, emulator_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still open after Ctrl-C"
    output = proc.stdout.read()
    assert "demo mode" in output and "Traceback" not in output


def test_smoke_test_fails_loudly_when_nothing_runs():
    result = subprocess.run([sys.executable, "test_bitrix24_integration.py", "--base-url", f"http://127.0.0.1:{free_port()}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "0 passed, 1 failed"
