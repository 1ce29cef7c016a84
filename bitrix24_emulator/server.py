"""Serve an emulator over real HTTP in a background thread (for tests, demos and benchmarks)."""

from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass  # keep test output clean; errors are still logged


class RunningServer:
    def __init__(self, emu, server, thread):
        self.emulator = emu
        self._server = server
        self._thread = thread
        self.host = server.host if server.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        self.port = server.port
        self.url = f"http://{self.host}:{self.port}"
        self.base = f"{self.url}/rest/{emu.user_id}/{emu.secret}/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(emu, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> RunningServer:
    """Start a threaded Werkzeug server for ``emu`` in a daemon thread; ``port=0`` picks a free port."""
    server = make_server(host, port, emu, threaded=True, request_handler=_QuietHandler if quiet else None)
    thread = threading.Thread(target=server.serve_forever, name="b24-emulator-http", daemon=True)
    thread.start()
    return RunningServer(emu, server, thread)
