"""Read-only MJPEG live preview over HTTP (standard library only).

``PreviewServer("127.0.0.1", 8080)`` serves exactly three GET paths:

* ``/`` — a tiny HTML page showing the stream;
* ``/stream.mjpg`` — ``multipart/x-mixed-replace`` JPEG frames (MJPEG, plays in any browser);
* ``/latest.jpg`` — the newest frame as one JPEG.

Anything else is 404; methods other than GET/HEAD get 501 from the standard handler. There is
no input, no upload, no file access. The inference loop only calls :meth:`publish`, which swaps
a reference under a lock and never waits for a client: JPEG encoding happens in the client
threads, once per frame however many clients watch, and at most ``max_clients`` streams are
served at once (more get 503). It binds to loopback by default; binding to another address
exposes the camera picture, unauthenticated and unencrypted, to that network (see
``docs/run.md``).

Hostile clients (docs/security.md):

* at most ``max_connections`` connections are open at once (one thread each); more are answered
  503 and closed by the accepting thread, so idle sockets cannot pile up threads;
* a request line and headers must arrive whole within ``timeout`` seconds and in at most
  :data:`MAX_REQUEST_BYTES` (slow-loris), and every read or write waits at most ``timeout``
  (a viewer that stops reading loses its stream and its slot);
* the ``Host`` header must name this server: a loopback name or address, the bound address, any
  IP address when bound to all interfaces (``0.0.0.0``/``::``) together with this machine's own
  host name, or a name in ``allowed_hosts`` / ``$EDGECAM_PREVIEW_ALLOWED_HOSTS`` (comma-separated;
  ``.example.com`` allows its subdomains). Anything else gets 421: a web page on another origin
  that rebinds its DNS name to the device (or to an ``ssh -L`` tunnel on the laptop) cannot read
  the camera.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

import numpy as np

from .errors import InputError, OutputError

__all__ = ["PreviewServer", "parse_bind", "host_allowed"]

BOUNDARY = "edgecamframe"
# A GET of ours is a few hundred bytes; browsers send 1-2 KiB of headers.
MAX_REQUEST_BYTES = 16 * 1024
ALLOWED_HOSTS_ENV = "EDGECAM_PREVIEW_ALLOWED_HOSTS"
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
         b"Connection: close\r\n\r\ntoo many connections\n")

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgecam live</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif;text-align:center}}
img{{max-width:100%;height:auto;margin-top:8px}}</style></head>
<body><div>edgecam live preview — {title}</div><img src="/stream.mjpg" alt="live stream"></body></html>
"""


def parse_bind(text: str, default_host: str = "127.0.0.1") -> Tuple[str, int]:
    """``"PORT"`` or ``"HOST:PORT"`` (``[v6]:PORT`` too) → ``(host, port)``; host defaults to loopback.

    Raises:
        InputError: not of that form, or port outside 0–65535.
    """
    text = str(text).strip()
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"--preview takes PORT or HOST:PORT, e.g. 127.0.0.1:8080. Got: {text!r}") from None
    if not 0 <= port <= 65535:
        raise InputError(f"--preview port must be 0-65535. Got: {port}")
    return host, port


def _host_name(value: str) -> str:
    """The host part of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else value


def host_allowed(value: str, bound: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a request's ``Host`` header names this server (see the module docstring).

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


class _RequestTooLarge(TimeoutError):
    """Raised by the capped reader: the handler closes the connection as for a timeout."""


class _CappedReader:
    """``rfile`` that hands out at most ``budget`` bytes of request line and headers."""

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

    def read(self, size: int = -1) -> bytes:  # no request of ours has a body
        return b""

    def close(self) -> None:
        self.raw.close()


class _Connections:
    """Open connections and their header deadlines; closed by the serving thread when late."""

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


class _Latest:
    """The newest annotated frame and its JPEG, encoded lazily by the first client to ask."""

    def __init__(self, quality: int) -> None:
        self.cond = threading.Condition()
        self.seq = 0
        self.image: Optional[np.ndarray] = None
        self.jpeg: Optional[bytes] = None
        self.jpeg_seq = -1
        self.quality = quality
        self.closed = False

    def publish(self, image: np.ndarray) -> None:
        with self.cond:
            self.image = image
            self.seq += 1
            self.cond.notify_all()

    def wait_jpeg(self, after: int, timeout: float) -> Tuple[int, Optional[bytes]]:
        """Wait for a frame newer than ``after``; returns ``(seq, jpeg)`` (jpeg None on timeout)."""
        from .sinks import encode_jpeg

        with self.cond:
            if not self.cond.wait_for(lambda: self.closed or (self.seq > after and self.image is not None), timeout):
                return after, None
            if self.closed:
                return after, None
            seq, image = self.seq, self.image
            if self.jpeg_seq == seq:
                return seq, self.jpeg
        data = encode_jpeg(image, self.quality)  # outside the lock: publish() never waits on it
        with self.cond:
            if seq >= self.jpeg_seq:
                self.jpeg, self.jpeg_seq = data, seq
        return seq, data


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgecam-preview"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection; the stream ends by closing

    def log_message(self, format, *args):  # noqa: A002 - keep the device's stderr quiet
        pass

    def setup(self) -> None:
        server: "_Server" = self.server  # type: ignore[assignment]
        self.timeout = server.preview._timeout  # every recv/send; sendall's total since 3.5
        super().setup()
        self.rfile = _CappedReader(self.rfile, MAX_REQUEST_BYTES)
        server.connections.add(self.connection, time.monotonic() + server.preview._timeout)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.connections.remove(self.connection)  # type: ignore[attr-defined]

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_GET(self):  # noqa: N802
        preview: "PreviewServer" = self.server.preview  # type: ignore[attr-defined]
        self.server.connections.settle(self.connection)  # type: ignore[attr-defined]
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            self._send(400, "text/plain", b"more than one Host header\n")
            return
        # No Host at all is an HTTP/1.0 client, not a browser (browsers always send one).
        if hosts and not host_allowed(hosts[0], str(preview.host), preview.allowed_hosts):
            self._send(421, "text/plain", b"misdirected request: this Host is not the preview's address\n")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8", _PAGE.format(title=preview.title).encode())
        elif path == "/latest.jpg":
            _, jpeg = preview._latest.wait_jpeg(0, timeout=2.0)
            if jpeg is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif path == "/stream.mjpg":
            self._stream(preview)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _stream(self, preview: "PreviewServer") -> None:
        if not preview._slots.acquire(blocking=False):
            self._send(503, "text/plain", b"too many viewers\n")
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            seq = 0
            while not preview._stopping.is_set():
                seq, jpeg = preview._latest.wait_jpeg(seq, timeout=0.5)
                if jpeg is None:
                    continue
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode("ascii")
                self.wfile.write(head + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            pass  # the viewer went away
        finally:
            preview._slots.release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # close() shuts the connections down instead of waiting for them
    # Waiting connections sit in the kernel, not in threads; a short backlog would make clients'
    # SYNs wait a second for a retry instead of getting a quick 503.
    request_queue_size = 64

    def __init__(self, address, handler, max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.connections = _Connections()
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
        pass  # a client that broke the connection: nothing to report on the device's stderr


class PreviewServer:
    """The MJPEG preview, serving from a daemon thread (see the module docstring).

    Args:
        host: address to bind (``127.0.0.1`` by default; ``0.0.0.0`` exposes it to the network).
        port: TCP port (0 picks a free one; read it back from :attr:`port`).
        quality: JPEG quality of the stream.
        max_clients: concurrent ``/stream.mjpg`` viewers.
        title: shown on the HTML page.
        allowed_hosts: extra ``Host`` names to serve (``.example.com`` allows subdomains), added to
            those in ``$EDGECAM_PREVIEW_ALLOWED_HOSTS``.
        max_connections: open connections at most (each holds a thread); more get 503.
        timeout: seconds for a whole request to arrive, and for each read or write.

    Raises:
        OutputError: the address cannot be bound (port in use, no such interface).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 80,
        max_clients: int = 4,
        title: str = "",
        *,
        allowed_hosts: Iterable[str] = (),
        max_connections: int = 32,
        timeout: float = 10.0,
    ) -> None:
        import html

        self.title = html.escape(title)
        env = os.environ.get(ALLOWED_HOSTS_ENV, "")
        self.allowed_hosts: FrozenSet[str] = frozenset(
            h.strip() for h in [*allowed_hosts, *env.split(",")] if h.strip())
        self._timeout = float(timeout)
        self._latest = _Latest(quality)
        self._slots = threading.BoundedSemaphore(max_clients)
        self._stopping = threading.Event()
        server_cls = _Server
        if ":" in host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self._server = server_cls((host, port), _Handler, max(int(max_connections), max_clients + 1))
        except OSError as exc:
            raise OutputError(
                f"Cannot serve the preview on {host}:{port}: {exc.strerror or exc}. Choose another "
                "port (--preview 127.0.0.1:PORT) or stop the program using it."
            ) from exc
        self._server.preview = self  # type: ignore[attr-defined]
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="edgecam-preview", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    @property
    def loopback(self) -> bool:
        return str(self.host).startswith("127.") or self.host in ("::1", "localhost")

    def publish(self, image_bgr: np.ndarray) -> None:
        """Offer the newest BGR frame to viewers; returns at once."""
        self._latest.publish(image_bgr)

    def close(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._latest.cond:
            self._latest.closed = True
            self._latest.cond.notify_all()
        self._server.shutdown()
        self._server.connections.close_all()
        self._server.server_close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "PreviewServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
