"""Serve a Motion-JPEG .avi over RTSP with GStreamer's RTSP server (gst-rtsp-server).

    /usr/bin/python3 tests/streams/rtsp_server.py PORT VIDEO.avi

Serves ``rtsp://127.0.0.1:PORT/cam`` (loopback only): the file's frames as RTP/JPEG (RFC 2435)
at the file's frame rate, re-encoded by GStreamer's jpegenc (RFC 2435 carries only baseline
4:2:0/4:2:2 JPEG with its own table layout, which jpegenc writes). Each client gets its own pipeline from the
first frame. Prints ``ready`` once listening; stop it with SIGTERM or SIGKILL (the tests do,
mid-stream). Runs with the *system* Python: its ``gi`` (python3-gi) and the typelibs
(gir1.2-gst-rtsp-server-1.0) come from Debian, not from pip.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main(port: str, video: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # identity sync=true paces the file at its timestamps, as a camera would deliver it.
    factory.set_launch(
        f'( filesrc location="{video}" ! avidemux ! jpegdec ! videoconvert ! jpegenc quality=90 ! identity sync=true ! rtpjpegpay name=pay0 pt=26 )'
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
