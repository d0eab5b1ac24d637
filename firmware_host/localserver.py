"""A small HTTP server that hostile clients cannot tie up or reach by DNS rebinding (stdlib only).

It carries the guards of the live preview (:mod:`firmware_host.preview`) so that every edgecam
page served over HTTP (the preview, ``edgecam label``) has the same ones, written once
(docs/security.md):

* at most ``max_connections`` connections are open at once (one thread each); more are answered
  503 and closed by the accepting thread, so idle sockets cannot pile up threads;
* a request line and headers must arrive whole within ``timeout`` seconds and in at most
  :data:`MAX_REQUEST_BYTES` (slow-loris), and every read or write waits at most ``timeout``;
  a request body, where a handler takes one, is read only after its declared length has been
  checked against the handler's own cap (:meth:`GuardedHandler.read_body`), within the same
  deadline;
* the ``Host`` header must name this server (:func:`host_allowed`); anything else gets 421.

A page is one :class:`GuardedHandler` subclass (its ``do_GET``/``do_POST`` start with
:meth:`GuardedHandler.admit`) served by :func:`serve`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

from .errors import OutputError

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "MAX_REQUEST_BYTES",
    "GuardedHandler",
    "GuardedServer",
    "Served",
    "allowed_hosts",
    "host_allowed",
    "is_loopback",
    "serve",
    "server_url",
]

# A GET of ours is a few hundred bytes; browsers send 1-2 KiB of headers.
MAX_REQUEST_BYTES = 16 * 1024
ALLOWED_HOSTS_ENV = "EDGECAM_PREVIEW_ALLOWED_HOSTS"
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
         b"Connection: close\r\n\r\ntoo many connections\n")


def _host_name(value: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else value


def host_allowed(value: str, bound: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a request's ``Host`` header names this server.

    Allowed: a loopback name or address, the bound address, any IP address when bound to all
    interfaces (``0.0.0.0``/``::``) together with this machine's own host name, or a name in
    ``allowed`` (``.example.com`` allows its subdomains). A web page on another origin that
    rebinds its DNS name to the device (or to an ``ssh -L`` tunnel on the laptop) is refused.

    Args:
        value: the header's value.
        bound: the address the server is bound to.
        allowed: extra names the user allows (``.suffix`` allows subdomains).
    """
    name = _host_name(value).rstrip(".")
    if not name:
        return False
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        address = None
    try:
        bound_address = ipaddress.ip_address(str(bound).split("%", 1)[0])
    except ValueError:  # bound by name: compare names
        bound_address = ipaddress.ip_address("127.0.0.1") if str(bound).lower() == "localhost" else None
        if address is None and name == str(bound).lower():
            return True
    if bound_address is None:
        bound_address = ipaddress.ip_address("255.255.255.255")  # matches no Host
    if address is not None:
        # An address literal cannot be rebound by a DNS answer.
        return address.is_loopback or address == bound_address or bound_address.is_unspecified
    # RFC 6761: "localhost" and its subdomains always mean loopback, in browsers too.
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if bound_address.is_unspecified or not bound_address.is_loopback:
        own = socket.gethostname().lower()
        if name in (own, own + ".local", own.split(".")[0] + ".local"):
            return True
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry and (name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:]))):
            return True
    return False


def allowed_hosts(extra: Iterable[str] = ()) -> FrozenSet[str]:
    """``extra`` plus the comma-separated names in ``$EDGECAM_PREVIEW_ALLOWED_HOSTS``."""
    env = os.environ.get(ALLOWED_HOSTS_ENV, "")
    return frozenset(h.strip() for h in [*extra, *env.split(",")] if h.strip())


class _RequestTooLarge(TimeoutError):
    """Raised by the capped reader: the handler closes the connection as for a timeout."""


class _CappedReader:
    """``rfile`` that hands out at most ``budget`` bytes of request line and headers.

    ``read`` returns nothing: a body is read through :meth:`GuardedHandler.read_body` only.
    """

    def __init__(self, raw, budget: int) -> None:
        self.raw = raw
        self.budget = budget

    def readline(self, limit: int = -1) -> bytes:
        if self.budget <= 0:
            raise _RequestTooLarge("request headers over the size limit")
        size = self.budget if limit is None or limit < 0 else min(limit, self.budget)
        line = self.raw.readline(size)
        self.budget -= len(line)
        return line

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        self.raw.close()


class _Connections:
    """Open connections and their request deadlines; closed by the serving thread when late."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deadlines: Dict[socket.socket, float] = {}

    def add(self, sock: socket.socket, deadline: float) -> None:
        with self.lock:
            self.deadlines[sock] = deadline

    def settle(self, sock: socket.socket) -> None:
        with self.lock:
            if sock in self.deadlines:
                self.deadlines[sock] = float("inf")

    def remove(self, sock: socket.socket) -> None:
        with self.lock:
            self.deadlines.pop(sock, None)

    def reap(self, now: float) -> None:
        with self.lock:
            late = [sock for sock, deadline in self.deadlines.items() if deadline <= now]
        for sock in late:
            _shut(sock)

    def close_all(self) -> None:
        with self.lock:
            socks = list(self.deadlines)
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv()/send() on it; its handler then ends.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class GuardedHandler(BaseHTTPRequestHandler):
    """Base request handler: quiet, time- and size-capped, one request per connection.

    Subclasses implement ``do_GET`` (and ``do_POST``) and begin each with ``if not self.admit():
    return``. ``self.server.owner`` is the object that started the server (see :func:`serve`).
    """

    server_version = "edgecam"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends by closing

    def log_message(self, format, *args):  # noqa: A002 - keep the device's stderr quiet
        pass

    def setup(self) -> None:
        server: "GuardedServer" = self.server  # type: ignore[assignment]
        self.timeout = server.timeout  # every recv/send; sendall's total since 3.5
        super().setup()
        self.rfile = _CappedReader(self.rfile, MAX_REQUEST_BYTES)
        server.connections.add(self.connection, time.monotonic() + server.timeout)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.connections.remove(self.connection)  # type: ignore[attr-defined]

    def send(self, status: int, ctype: str, body: bytes, headers: Sequence[Tuple[str, str]] = ()) -> None:
        """Answer with a whole body (none for HEAD), uncached and never content-sniffed."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, status: int, message: str) -> None:
        """A one-line plain-text error answer."""
        self.send(status, "text/plain; charset=utf-8", (message.rstrip("\n") + "\n").encode("utf-8"))

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The standard handler's errors (501 method, 400 bad request line, …) as one text line."""
        self.close_connection = True
        self.refuse(code, message or self.responses.get(code, ("error",))[0])

    def admit(self, settle: bool = True) -> bool:
        """Check the ``Host`` header; answer 400/421 and return False when it does not name this server.

        Args:
            settle: the request is complete (no body to come): lift its arrival deadline.
        """
        server: "GuardedServer" = self.server  # type: ignore[assignment]
        if settle:
            server.connections.settle(self.connection)
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            self.refuse(400, "more than one Host header")
            return False
        # No Host at all is an HTTP/1.0 client, not a browser (browsers always send one).
        if hosts and not host_allowed(hosts[0], str(server.server_address[0]), server.allowed_hosts):
            self.refuse(421, f"misdirected request: this Host is not the {server.what}'s address")
            return False
        return True

    def read_body(self, max_bytes: int) -> Optional[bytes]:
        """The request body, at most ``max_bytes``; None after answering 400/411/413.

        The body must arrive within the request's deadline (set in :meth:`setup`), which is
        lifted once it has.
        """
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.refuse(411, "a body needs a Content-Length")
            return None
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self.refuse(400, "Content-Length is not a byte count")
            return None
        if length > max_bytes:
            self.refuse(413, f"body of {length} bytes is over the {max_bytes}-byte limit")
            return None
        body = self.rfile.raw.read(length) if length else b""  # type: ignore[attr-defined]
        if len(body) != length:
            raise _RequestTooLarge("body shorter than its Content-Length")  # the client went away
        self.server.connections.settle(self.connection)  # type: ignore[attr-defined]
        return body

    def do_HEAD(self):  # noqa: N802
        self.do_GET()


class GuardedServer(ThreadingHTTPServer):
    """The connection cap and request deadlines of the module docstring around a handler class.

    Attributes:
        owner: the object serving (handlers read their state from it).
        timeout: seconds for a whole request to arrive, and for each read or write.
        allowed_hosts: extra ``Host`` names to serve.
        what: what the server is, for messages (``"preview"``).
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # close() shuts the connections down instead of waiting for them
    # Waiting connections sit in the kernel, not in threads; a short backlog would make clients'
    # SYNs wait a second for a retry instead of getting a quick 503.
    request_queue_size = 64

    def __init__(self, address, handler, max_connections: int, *, owner=None, timeout: float = 10.0,
                 allowed_hosts: FrozenSet[str] = frozenset(), what: str = "server") -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.connections = _Connections()
        self.owner = owner
        self.timeout = float(timeout)
        self.allowed_hosts = allowed_hosts
        self.what = what
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:  # never block the accepting thread on this client
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def service_actions(self) -> None:
        # Called by serve_forever after each poll (0.2 s): close connections whose request is late.
        self.connections.reap(time.monotonic())

    def handle_error(self, request, client_address) -> None:
        pass  # a client that broke the connection: nothing to report on stderr

    def stop(self, thread: threading.Thread) -> None:
        """Stop serving, close every connection and the socket, and join the serving thread.

        Bounded: ``shutdown()`` waits for the serving loop's next poll, so it runs in a helper
        thread that is given 2 s; the serving thread is a daemon and cannot keep the process alive.
        """
        stopper = threading.Thread(target=self.shutdown, name=f"{self.what}-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=2.0)
        self.connections.close_all()
        self.server_close()
        thread.join(timeout=2.0)


def serve(host: str, port: int, handler, *, owner, max_connections: int, timeout: float,
          allowed: FrozenSet[str], what: str, hint: str) -> Tuple[GuardedServer, threading.Thread]:
    """Bind ``host:port`` and serve ``handler`` from a daemon thread.

    Args:
        host: address to bind (``127.0.0.1``; ``0.0.0.0`` exposes it to the network).
        port: TCP port (0 picks a free one; read it back from ``server.server_address``).
        handler: a :class:`GuardedHandler` subclass.
        owner: stored as ``server.owner`` for the handlers.
        max_connections: open connections at most (each holds a thread); more get 503.
        timeout: seconds for a whole request to arrive, and for each read or write.
        allowed: extra ``Host`` names (see :func:`allowed_hosts`).
        what: what is served, for messages (``"preview"``).
        hint: how to choose another address, for the bind error (``"--preview 127.0.0.1:PORT"``).

    Returns:
        ``(server, thread)``; stop with ``server.stop(thread)``.

    Raises:
        OutputError: the address cannot be bound (port in use, no such interface).
    """
    server_cls = GuardedServer
    if ":" in host:
        server_cls = type("GuardedServer6", (GuardedServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, port), handler, max_connections, owner=owner, timeout=timeout,
                            allowed_hosts=allowed, what=what)
    except OSError as exc:
        raise OutputError(
            f"Cannot serve the {what} on {host}:{port}: {exc.strerror or exc}. Choose another "
            f"port ({hint}) or stop the program using it."
        ) from exc
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name=f"edgecam-{what}", daemon=True)
    thread.start()
    return server, thread


def server_url(host: str, port: int) -> str:
    """``http://host:port/`` (IPv6 addresses in brackets)."""
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether a bound address is reachable from this machine only."""
    return str(host).startswith("127.") or host in ("::1", "localhost")


class Served:
    """Mixin for an object that serves with :func:`serve`: its :attr:`url`, whether it is
    :attr:`loopback`, and a context manager that calls ``close()``. Set ``host`` and ``port``."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return server_url(self.host, self.port)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
