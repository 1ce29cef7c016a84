"""Serve an emulator (one portal, or many from create_portals()) over real HTTP in a background thread
(for tests, demos and benchmarks)."""

from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass  # keep test output clean; errors are still logged


class RunningServer:
    """``emulator`` is the app served (an Emulator or a Portals); ``base`` is the (first) portal's webhook
    base and ``bases`` every portal's, in order (each reaches its portal by its secret)."""

    def __init__(self, emu, server, thread):
        self.emulator = emu
        self._server = server
        self._thread = thread
        self.host = server.host if server.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        self.port = server.port
        self.url = f"http://{self.host}:{self.port}"
        portals = getattr(emu, "portals", None) or [emu]
        self.bases = [f"{self.url}/rest/{p.user_id}/{p.secret}/" for p in portals]
        self.base = self.bases[0]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(emu, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> RunningServer:
    """Start a threaded Werkzeug server for ``emu`` (an Emulator, or the Portals of create_portals()) in a
    daemon thread; ``port=0`` picks a free port."""
    server = make_server(host, port, emu, threaded=True, request_handler=_QuietHandler if quiet else None)
    thread = threading.Thread(target=server.serve_forever, name="b24-emulator-http", daemon=True)
    thread.start()
    return RunningServer(emu, server, thread)
