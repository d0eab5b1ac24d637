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

Hostile clients (docs/security.md; the guards live in :mod:`firmware_host.localserver`, shared
with ``edgecam label``):

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

import threading
from typing import FrozenSet, Iterable, Optional, Tuple

import numpy as np

from .errors import InputError
from .localserver import ALLOWED_HOSTS_ENV, MAX_REQUEST_BYTES, GuardedHandler, Served, host_allowed, serve
from .localserver import allowed_hosts as allowed_hosts_from

__all__ = ["PreviewServer", "parse_bind", "host_allowed", "ALLOWED_HOSTS_ENV", "MAX_REQUEST_BYTES"]

BOUNDARY = "edgecamframe"

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgecam live</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif;text-align:center}}
img{{max-width:100%;height:auto;margin-top:8px}}</style></head>
<body><div>edgecam live preview — {title}</div><img src="/stream.mjpg" alt="live stream"></body></html>
"""


def parse_bind(text: str, default_host: str = "127.0.0.1", option: str = "--preview") -> Tuple[str, int]:
    """``"PORT"`` or ``"HOST:PORT"`` (``[v6]:PORT`` too) → ``(host, port)``; host defaults to loopback.

    ``option`` names the flag in the error message.

    Raises:
        InputError: not of that form, or port outside 0–65535.
    """
    text = str(text).strip()
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise InputError(f"{option} takes PORT or HOST:PORT, e.g. 127.0.0.1:8080. Got: {text!r}") from None
    if not 0 <= port <= 65535:
        raise InputError(f"{option} port must be 0-65535. Got: {port}")
    return host, port


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


class _Handler(GuardedHandler):
    server_version = "edgecam-preview"

    def do_GET(self):  # noqa: N802
        if not self.admit():
            return
        preview: "PreviewServer" = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.send(200, "text/html; charset=utf-8", _PAGE.format(title=preview.title).encode())
        elif path == "/latest.jpg":
            _, jpeg = preview._latest.wait_jpeg(0, timeout=2.0)
            if jpeg is None:
                self.send(503, "text/plain", b"no frame yet\n")
            else:
                self.send(200, "image/jpeg", jpeg)
        elif path == "/stream.mjpg":
            self._stream(preview)
        else:
            self.send(404, "text/plain", b"not found\n")

    def _stream(self, preview: "PreviewServer") -> None:
        if not preview._slots.acquire(blocking=False):
            self.send(503, "text/plain", b"too many viewers\n")
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
        except OSError:  # broken pipe, reset, timeout
            pass  # the viewer went away
        finally:
            preview._slots.release()


class PreviewServer(Served):
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
        self.allowed_hosts: FrozenSet[str] = allowed_hosts_from(allowed_hosts)
        self._latest = _Latest(quality)
        self._slots = threading.BoundedSemaphore(max_clients)
        self._stopping = threading.Event()
        self._server, self._thread = serve(
            host, port, _Handler, owner=self, max_connections=max(int(max_connections), max_clients + 1),
            timeout=timeout, allowed=self.allowed_hosts, what="preview", hint="--preview 127.0.0.1:PORT")
        self.host, self.port = self._server.server_address[:2]

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
        self._server.stop(self._thread)

