"""``edgecam label``'s server: the page, the frames, and the label changes, on 127.0.0.1.

Routes (anything else is 404; methods other than GET/HEAD/POST get 501):

* ``GET /`` — the page (:mod:`toolkit.label.page`);
* ``GET /api/state`` — classes, frames in serving order, their labels, counts, the position to
  resume at (the first frame with no label) and the model's guesses;
* ``GET /image/N``, ``GET /overlay/N`` — the N-th served frame, and its heatmap overlay
  (``--model``). Frames are addressed by number only: no request names a path, so none can
  leave the folder;
* ``POST /api/label`` ``{"index": N, "label": "dense-fog"}`` and ``POST /api/undo`` ``{}`` —
  saved to ``labels.csv`` before the answer.

The server is a :class:`firmware_host.localserver.GuardedHandler`, with the preview's guards
(Host check against DNS rebinding, connection cap, request deadlines). A ``POST`` must also
carry the page's session token in ``X-Edgecam-Token`` with ``Content-Type: application/json``
(a page on another origin can send neither without a CORS preflight, which is refused), and its
body is at most :data:`MAX_BODY_BYTES`. Refusals are 4xx with a one-line text body.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from firmware_host import imageio
from firmware_host._io import NotRegularFileError, open_regular
from firmware_host.errors import EdgecamError, InputError
from firmware_host.localserver import GuardedHandler, Served, allowed_hosts, serve
from firmware_host.model import ExplainableModel, Explanation
from firmware_host.sinks import encode_jpeg

from .guesses import guess_frames, overlay_jpeg, serving_order
from .page import render_page
from .store import SKIPPED, LabelStore, write_classes

__all__ = ["LabelServer", "MAX_BODY_BYTES", "list_frames"]

log = logging.getLogger("edgecam.label")

#: A label change is ``{"index": 12345, "label": "<63 characters>"}``: far below this.
MAX_BODY_BYTES = 1024
#: Frames larger than this are decoded (under the pixel limit) and sent as JPEG instead.
MAX_IMAGE_BYTES = 32 << 20
_NATIVE = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
           ".webp": "image/webp"}
_FRAME_ROUTE = re.compile(r"/(image|overlay)/(0|[1-9][0-9]{0,8})")


class _Refused(Exception):
    """A request the server answers with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def list_frames(folder: Path) -> List[str]:
    """The images below ``folder`` (the project's listing rule), as relative POSIX names."""
    return [p.relative_to(folder).as_posix() for p in imageio.list_images(folder, recursive=True)]


class LabelServer(Served):
    """Serve the labelling page for the images in ``folder`` from a daemon thread.

    Args:
        folder: the frames (searched recursively, by :func:`firmware_host.imageio.list_images`).
        classes: the class names, in key order (see :func:`toolkit.label.store.parse_classes`);
            saved to ``folder/labels.txt``.
        host / port: where to bind (port 0 picks a free one; read :attr:`url`).
        model: a converted model (path or :class:`ExplainableModel`) whose guess and heatmap are
            shown beside each frame.
        order: ``"file"``, or ``"uncertain"`` (least confident guess first; needs ``model``).
        allowed: extra ``Host`` names to serve (see :func:`firmware_host.localserver.allowed_hosts`).
        max_connections / timeout: as for the preview server.
        progress: a progress bar while the model guesses.

    Raises:
        InputError: ``order`` is not known or needs a model; no images; ``labels.csv`` is
            unreadable or has labels outside ``classes``; another session labels the folder.
        ModelFileError, MetadataError: ``model`` cannot be loaded.
        OutputError: the address cannot be bound.
    """

    def __init__(self, folder, classes: Sequence[str], host: str = "127.0.0.1", port: int = 0, *,
                 model=None, order: str = "file", allowed: Iterable[str] = (), max_connections: int = 32,
                 timeout: float = 10.0, progress: bool = False) -> None:
        if order not in ("file", "uncertain"):
            raise InputError(f"--order must be 'file' or 'uncertain'. Got: {order!r}")
        if order == "uncertain" and model is None:
            raise InputError("--order uncertain serves the frames the model is least sure of first: pass --model.")
        self.folder = Path(folder)
        files = list_frames(self.folder)
        if not files:
            raise InputError(f"'{self.folder}' has no images to label (PNG/JPEG/BMP/TIFF/WebP/PNM). Extract "
                             "frames from videos with: edgecam frames VIDEO --out " + str(self.folder))
        self.store = LabelStore(self.folder, classes, files)  # first: a second session fails at once
        self.classes = self.store.classes
        try:
            self._start(files, model, order, host, port, allowed_hosts(allowed), max_connections, timeout, progress)
        except BaseException:
            self.store.close()
            raise

    def _start(self, files, model, order, host, port, allowed, max_connections, timeout, progress) -> None:
        write_classes(self.folder, self.classes)  # a restart needs no --classes; export keeps the key order
        self.model: Optional[ExplainableModel] = None
        guesses: Optional[List[Optional[Explanation]]] = None
        if model is not None:
            self.model = model if isinstance(model, ExplainableModel) else ExplainableModel(model)
            guesses = guess_frames(self.model, [self.folder / f for f in files], progress=progress)
        self.order = serving_order(len(files), order, guesses)
        self.files = [files[i] for i in self.order]
        self.guesses = None if guesses is None else [guesses[i] for i in self.order]
        self.token = secrets.token_urlsafe(24)
        self._server, self._thread = serve(
            host, port, _Handler, owner=self, max_connections=max_connections, timeout=timeout,
            allowed=allowed, what="labelling page", hint="--bind 127.0.0.1:PORT")
        self.host, self.port = self._server.server_address[:2]

    # -- state -------------------------------------------------------------------------------
    def position(self) -> int:
        """Where a (re)loaded page starts: the first served frame with no label (the last if all have one)."""
        for i, file in enumerate(self.files):
            if self.store.label(file) is None:
                return i
        return max(len(self.files) - 1, 0)

    def done(self) -> int:
        return sum(1 for f in self.files if self.store.label(f) is not None)

    def state(self) -> Dict[str, Any]:
        """``GET /api/state``."""
        return {
            "classes": list(self.classes), "files": self.files, "total": len(self.files),
            "labels": [self.store.label(f) for f in self.files], "counts": self.store.counts(),
            "done": self.done(), "position": self.position(), "guesses": self._guesses(),
        }

    def _guesses(self) -> Optional[List[Optional[Dict[str, Any]]]]:
        if self.guesses is None:
            return None
        keys = {name: str(k + 1) for k, name in enumerate(self.classes)}
        return [None if g is None else {"label": g.label, "confidence": round(g.confidence, 4),
                                        "key": keys.get(g.label)} for g in self.guesses]

    def change(self, index: Optional[int], label: Optional[str]) -> Dict[str, Any]:
        """The answer to a label change: the frame, its label now, counts and progress."""
        return {"index": index, "label": label, "counts": self.store.counts(), "done": self.done()}

    def set_label(self, index: int, label: str) -> Dict[str, Any]:
        """``POST /api/label``: label the ``index``-th served frame (saved before returning)."""
        self.store.set(self.files[index], label)
        return self.change(index, label)

    def undo(self) -> Dict[str, Any]:
        """``POST /api/undo``: undo the latest change of this session; ``index`` None if none."""
        file = self.store.undo()
        if file is None or file not in self.files:
            return self.change(None, None)
        index = self.files.index(file)
        return self.change(index, self.store.label(file))

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop serving. Idempotent; every label is already on disk."""
        if self._server is not None:
            self._server.stop(self._thread)
            self._server = None
        self.store.close()


class _Handler(GuardedHandler):
    server_version = "edgecam-label"

    @property
    def session(self) -> LabelServer:
        return self.server.owner  # type: ignore[attr-defined]

    def do_GET(self):  # noqa: N802
        if self.admit():
            self._answer(self._get)

    def do_POST(self):  # noqa: N802
        if self.admit(settle=False):
            self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            route()
        except _Refused as exc:
            self.refuse(exc.status, str(exc))
        except EdgecamError as exc:
            self.refuse(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except (TimeoutError, ConnectionError):
            raise  # the client is gone or too slow (a browser cancels images it no longer needs): dropped quietly
        except Exception as exc:  # noqa: BLE001 - one line to the client and the terminal, never a traceback
            log.error("labelling page: %s on %s: %s", type(exc).__name__, self.path[:200], exc)
            self.refuse(500, f"internal error ({type(exc).__name__}); see the terminal running edgecam label")

    def _json(self, value: Any) -> None:
        self.send(200, "application/json", json.dumps(value).encode("utf-8"))

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            nonce = secrets.token_urlsafe(12)
            page = render_page(self.session.folder.resolve().name, self.session.classes, self.session.token,
                               nonce, self.session.guesses is not None)
            csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
                   "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'")
            self.send(200, "text/html; charset=utf-8", page.encode("utf-8"),
                      headers=[("Content-Security-Policy", csp), ("Referrer-Policy", "no-referrer")])
        elif path == "/api/state":
            self._json(self.session.state())
        else:
            match = _FRAME_ROUTE.fullmatch(path)
            if match is None:
                raise _Refused(404, "not found")
            index = self._frame_index(match.group(2))
            if match.group(1) == "image":
                self._image(index)
            else:
                self._overlay(index)

    def _frame_index(self, text: str) -> int:
        index = int(text)
        if index >= len(self.session.files):
            raise _Refused(404, f"no frame {index}: there are {len(self.session.files)}")
        return index

    def _image(self, index: int) -> None:
        path = self.session.folder / self.session.files[index]
        ctype = _NATIVE.get(path.suffix.lower())
        try:
            with open_regular(path) as (handle, size):
                if ctype is not None and size <= MAX_IMAGE_BYTES:
                    data = handle.read(MAX_IMAGE_BYTES + 1)
                    self.send(200, ctype, data)
                    return
        except (NotRegularFileError, OSError) as exc:
            raise _Refused(404, f"frame {index} cannot be read: {exc.strerror or exc}") from None
        rgb = imageio.load_image(path, rgb=True)  # other formats: decoded under the pixel limit
        self.send(200, "image/jpeg", encode_jpeg(rgb[..., ::-1], 92))

    def _overlay(self, index: int) -> None:
        guesses = self.session.guesses
        if guesses is None:
            raise _Refused(404, "no model: start edgecam label with --model to see its heatmaps")
        if guesses[index] is None:
            raise _Refused(404, f"frame {index} gave the model no image to explain")
        self.send(200, "image/jpeg", overlay_jpeg(self.session.folder / self.session.files[index], guesses[index]))

    # -- changes -----------------------------------------------------------------------------
    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/api/label", "/api/undo"):
            raise _Refused(404, "not found")
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise _Refused(403, "cross-site request refused")
        if not hmac.compare_digest(self.headers.get("X-Edgecam-Token", ""), self.session.token):
            raise _Refused(403, "missing or wrong X-Edgecam-Token: reload the labelling page")
        if self.headers.get_content_type() != "application/json":
            raise _Refused(415, "send the change as Content-Type: application/json")
        body = self.read_body(MAX_BODY_BYTES)
        if body is None:
            return  # already answered (411/413/400)
        request = _parse_body(body)
        if path == "/api/undo":
            self._json(self.session.undo())
            return
        index, label = request.get("index"), request.get("label")
        if not isinstance(index, int) or isinstance(index, bool):
            raise _Refused(400, "'index' must be a frame number")
        if not 0 <= index < len(self.session.files):
            raise _Refused(400, f"'index' {index} is out of range: there are {len(self.session.files)} frames")
        if not isinstance(label, str) or (label not in self.session.classes and label != SKIPPED):
            raise _Refused(400, f"'label' must be one of {', '.join(self.session.classes)} or '{SKIPPED}'")
        self._json(self.session.set_label(index, label))


def _parse_body(body: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused(400, "the body is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise _Refused(400, "the body must be a JSON object")
    return value
