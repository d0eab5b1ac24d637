"""The MJPEG preview, fetched by real HTTP clients on loopback."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests._run_helpers import frame_pattern, write_video
from firmware_host.errors import InputError, OutputError
from firmware_host.preview import BOUNDARY, PreviewServer, parse_bind
from firmware_host.runner import run


def decode_jpeg(data: bytes) -> np.ndarray:
    import cv2

    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # SOI … EOI: a whole JPEG
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def read_parts(response, count: int):
    """Parse ``count`` parts of a multipart/x-mixed-replace body by their Content-Length."""
    parts = []
    while len(parts) < count:
        line = response.readline()
        if not line.strip():
            continue
        assert line.strip() == f"--{BOUNDARY}".encode()
        headers = {}
        while True:
            h = response.readline().strip()
            if not h:
                break
            key, _, value = h.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.read(int(headers["content-length"])))
    return parts


@pytest.fixture
def server():
    srv = PreviewServer("127.0.0.1", 0, title="<test>")
    stop = threading.Event()

    def feed():
        i = 0
        while not stop.is_set():
            srv.publish(frame_pattern(i, (48, 64)))
            i += 1
            stop.wait(0.02)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    yield srv
    stop.set()
    t.join()
    srv.close()


def test_page_latest_and_stream_serve_real_jpegs(server):
    assert server.host == "127.0.0.1" and server.loopback
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        page = resp.read().decode()
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert '<img src="/stream.mjpg"' in page and "&lt;test&gt;" in page  # title escaped

    with urllib.request.urlopen(server.url + "latest.jpg", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "image/jpeg"
        assert decode_jpeg(resp.read()).shape == (48, 64, 3)

    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/stream.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    frames = [decode_jpeg(p) for p in read_parts(resp, 3)]
    conn.close()
    assert all(f.shape == (48, 64, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[2])  # live: later parts are newer frames


@pytest.mark.parametrize("path", ["/etc/passwd", "/../../etc/passwd", "/stream.mjpg/x", "/index.html"])
def test_anything_else_is_404(server, path):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", path)
    assert conn.getresponse().status == 404
    conn.close()


def test_read_only(server):
    req = urllib.request.Request(server.url, data=b"x=1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 501


def test_viewer_limit():
    srv = PreviewServer("127.0.0.1", 0, max_clients=1)
    try:
        srv.publish(frame_pattern(0, (24, 32)))
        first = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        first.request("GET", "/stream.mjpg")
        resp = first.getresponse()
        read_parts(resp, 1)
        second = http.client.HTTPConnection(srv.host, srv.port, timeout=5)
        second.request("GET", "/stream.mjpg")
        assert second.getresponse().status == 503
        first.close()
        second.close()
    finally:
        srv.close()


def test_port_in_use_is_reported():
    srv = PreviewServer("127.0.0.1", 0)
    try:
        with pytest.raises(OutputError, match=f"Cannot serve the preview on 127.0.0.1:{srv.port}"):
            PreviewServer("127.0.0.1", srv.port)
    finally:
        srv.close()


@pytest.mark.parametrize("text, expected", [
    ("8080", ("127.0.0.1", 8080)), (":9000", ("127.0.0.1", 9000)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:8081", ("::1", 8081)),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


def test_parse_bind_rejects():
    with pytest.raises(InputError, match="--preview takes PORT or HOST:PORT"):
        parse_bind("localhost")


def test_preview_during_a_run(tmp_path, tiny_fog_model):
    """The runner publishes annotated frames; a client reads them while the run goes on."""
    model = tiny_fog_model
    video = write_video(tmp_path / "v.avi", 10)
    stop = threading.Event()
    got = {}

    def client(outputs):
        def fetch():
            try:
                host, port = outputs["preview"].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/stream.mjpg")
                got["frames"] = [decode_jpeg(p) for p in read_parts(conn.getresponse(), 2)]
                conn.close()
            finally:
                stop.set()

        threading.Thread(target=fetch, daemon=True).start()

    summary = run(model, video, loop=True, preview="127.0.0.1:0", on_start=client, stop_event=stop)
    assert summary.stop_reason == "stopped" and summary.outputs["preview"].startswith("http://127.0.0.1:")
    assert [f.shape for f in got["frames"]] == [(64, 80, 3)] * 2
