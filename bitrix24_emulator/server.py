"""Serve an emulator (one portal, or many from create_portals()) over real HTTP in a background thread
(for tests, demos and benchmarks), or in the foreground (``python -m bitrix24_emulator``).

A portal's web server keeps HTTP/1.1 connections open between requests, and clients (requests, our app)
reuse them. Werkzeug's development server closes every connection after one answer; the server made here
keeps them open, as a portal's does (``KeepAliveHandler``), so a client's connection reuse is exercised
and an emulator answering many calls does not pay a new connection (and a new thread) for each.
"""

from __future__ import annotations

import io
import socket
import threading

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

IDLE_TIMEOUT = 60.0  # seconds an open connection may wait for its next request; nginx's keepalive_timeout is 75


class KeepAliveHandler(WSGIRequestHandler):
    """Werkzeug's handler, keeping the connection open after an answer.

    Werkzeug closes each connection because Python's ``http.server`` cannot skip a request body the
    application left unread before it reads the next request line. Here the body (its Content-Length)
    is read in full before the application runs, so the stream is always at the next request. A request
    sent chunked, a client asking ``Connection: close`` or speaking HTTP/1.0, and the emulator's own
    dropped connections still end the connection; one idle for ``IDLE_TIMEOUT`` seconds is closed.
    """

    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # An answer goes out in more than one write (head, then body): with Nagle's algorithm the body would
        # wait for the client's delayed ACK of the head, 40 ms a call, once a connection is kept (nginx sets
        # tcp_nodelay on kept connections for the same reason).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket
        _connections(self.server).add(self.connection)

    def finish(self) -> None:
        _connections(self.server).discard(self.connection)
        super().finish()

    def run_wsgi(self) -> None:
        length = self._plain_length()
        self._keep_open = length is not None
        if length is None:
            return super().run_wsgi()  # Werkzeug's own way: the body read as it comes, then the connection ends
        # The application reads the body from memory, and Werkzeug's sweep after the answer ("discard what
        # is left unread": it reads the socket until the client stops sending) sweeps that copy, not the
        # socket, where the client's next request may already wait.
        stream, self.rfile = self.rfile, io.BytesIO(self.rfile.read(length) if length else b"")
        try:
            super().run_wsgi()
        finally:
            self.rfile = stream

    def _plain_length(self) -> int | None:
        """The request body's length, or None when this connection ends after the answer: the client
        asked it to (``Connection: close``, HTTP/1.0), or the body's end is not known beforehand (chunked,
        no valid Content-Length) or waits for our ``100 Continue``."""
        headers = self.headers
        if self.close_connection or "chunked" in headers.get("Transfer-Encoding", "").lower() \
                or headers.get("Expect", "").strip().lower() == "100-continue":
            return None
        try:
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return length if length >= 0 else None

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection" and value.lower() == "close" and getattr(self, "_keep_open", False):
            return  # Werkzeug's blanket close
        super().send_header(keyword, value)

    def log_error(self, format: str, *args) -> None:
        if not format.startswith("Request timed out"):  # an idle connection closed: not an error
            super().log_error(format, *args)


class _QuietHandler(KeepAliveHandler):
    def log_request(self, code="-", size="-"):
        pass  # keep test output clean; errors are still logged


def _connections(server) -> set[socket.socket]:
    return server.__dict__.setdefault("open_connections", set())


def make_keepalive_server(host: str, port: int, app, quiet: bool = False) -> BaseWSGIServer:
    """A threaded Werkzeug server whose connections stay open between requests (``close_connections``
    ends them when the server stops)."""
    return make_server(host, port, app, threaded=True, request_handler=_QuietHandler if quiet else KeepAliveHandler)


def close_connections(server) -> None:
    """End every connection still open on ``server``: a stopped portal answers no one, even on a
    connection a client opened before."""
    for sock in list(_connections(server)):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


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
        close_connections(self._server)
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(emu, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> RunningServer:
    """Start a threaded server for ``emu`` (an Emulator, or the Portals of create_portals()) in a daemon
    thread; ``port=0`` picks a free port. Connections stay open between requests, as a portal's do."""
    server = make_keepalive_server(host, port, emu, quiet=quiet)
    thread = threading.Thread(target=server.serve_forever, name="b24-emulator-http", daemon=True)
    thread.start()
    return RunningServer(emu, server, thread)
