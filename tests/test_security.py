"""Security invariants that are easy to lose in a refactor (docs/security.md).

The behaviours themselves are tested where they live (safetar and deploy in test_deploy.py,
the preview server in test_preview.py, Lambda refusal in the bad-input tests); this file pins
the *defaults* and scans the source tree for shell use.
"""

import ast
import inspect
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("converters", "firmware_host", "toolkit", "benchmarks", "scripts", "tests")
           if (ROOT / d).is_dir() for p in sorted((ROOT / d).rglob("*.py"))]
SHELL_TRUE = re.compile(r"shell\s*=\s*True")


def test_the_scan_sees_the_source_tree():
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"toolkit/deploy/deploy.py", "toolkit/deploy/bundle.py", "firmware_host/runner.py"} <= names


def test_no_shell_true_anywhere():
    """No ``shell=True`` in any Python file (code, comments or strings: none is needed)."""
    me = Path(__file__).resolve()
    hits = []
    for path in SOURCES:
        if path.resolve() == me:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SHELL_TRUE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == [], "use an argument list, never a shell:\n" + "\n".join(hits)


def test_no_os_system_or_popen_and_no_shell_keyword():
    """The AST view: no call passes ``shell=`` anything truthy, none calls os.system/os.popen."""
    hits = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("system", "popen") and \
                    isinstance(func.value, ast.Name) and func.value.id == "os":
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{func.attr}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: shell={ast.unparse(kw.value)}")
    assert hits == []


def test_keras_safe_mode_is_on_by_default(monkeypatch):
    from converters.export import convert
    from converters.loading import load_keras_model

    assert inspect.signature(load_keras_model).parameters["safe_mode"].default is True
    assert inspect.signature(convert).parameters["safe_mode"].default is True
    from toolkit.cli.convert import convert as convert_cmd

    keras_file = str(ROOT / "tests" / "data" / "tiny_fog.keras")
    args = [keras_file, "-o", "m.tflite"]
    assert convert_cmd.make_context("convert", list(args)).params["unsafe"] is False
    assert convert_cmd.make_context("convert", args + ["--unsafe"]).params["unsafe"] is True
    # The host explainer and validate load models the same way.
    from toolkit.cli.explain import explain_cmd
    from toolkit.explain.images import explain_images

    assert inspect.signature(explain_images).parameters["safe_mode"].default is True
    args = [keras_file, str(ROOT / "tests" / "data" / "tiny_fog_input.png"), "--out", "o"]
    assert explain_cmd.make_context("explain", list(args)).params["unsafe"] is False
    import converters.loading
    import toolkit.validate

    seen = {}

    def spy(path, safe_mode=True):
        seen["safe_mode"] = safe_mode
        return "model"

    monkeypatch.setattr(converters.loading, "load_keras_model", spy)
    assert toolkit.validate._load_keras(keras_file) == "model" and seen == {"safe_mode": True}


def test_preview_binds_loopback_by_default():
    from firmware_host.preview import PreviewServer, parse_bind

    assert parse_bind("8080") == ("127.0.0.1", 8080)
    assert parse_bind(":8080") == ("127.0.0.1", 8080)
    assert inspect.signature(PreviewServer).parameters["host"].default == "127.0.0.1"
    with PreviewServer(port=0) as server:
        assert server.loopback
        assert server.url.startswith("http://127.0.0.1:")


def test_preview_title_is_escaped():
    import http.client

    from firmware_host.preview import PreviewServer

    with PreviewServer(port=0, title='<script>alert("x")</script>.tflite') as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1].strip("/")), timeout=5)
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        conn.close()
    assert "<script>" not in body and "&lt;script&gt;" in body


def test_deploy_refuses_disabling_host_key_checking():
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import SshOptions

    for option in ("StrictHostKeyChecking=no", "stricthostkeychecking off", "StrictHostKeyChecking = no"):
        with pytest.raises(InputError, match="would turn host-key checking off"):
            SshOptions(options=(option,)).common()


# ----------------------------------------------------------------------------- deploy options (issue 13, item 6)

def _random_case(draw, word):
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips))


@st.composite
def ssh_option_spellings(draw, key="StrictHostKeyChecking",
                         values=("no", "off", "false", "yes", "ask", "accept-new", "true")):
    """One ``-o`` option as a person (or an attacker) might spell it: any case, ``=`` or
    whitespace, quotes around all or part of the value, stray whitespace."""
    keyword = _random_case(draw, key)
    value = _random_case(draw, draw(st.sampled_from(values)))
    quote = draw(st.sampled_from(["", '"', "'", "partial"]))
    if quote == "partial" and len(value) > 1:
        cut = draw(st.integers(1, len(value) - 1))
        value = f'{value[:cut]}"{value[cut:]}"'
    elif quote in ('"', "'"):
        value = f"{quote}{value}{quote}"
    sep = draw(st.sampled_from(["=", " ", "\t", " = ", "= ", " =", "\t=\t", "  "]))
    lead = draw(st.sampled_from(["", " ", "\t"]))
    trail = draw(st.sampled_from(["", " ", "\t"]))
    return f"{lead}{keyword}{sep}{value}{trail}"


def _ssh_g(option: str):
    """What ssh itself makes of ``-o option`` (``ssh -G`` prints the resolved configuration
    without connecting): ``{key: value}``, or None when ssh refuses the option."""
    proc = subprocess.run(["ssh", "-F", "/dev/null", "-G", "-o", option, "edgecam-test-host"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return None
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client is not installed")


@needs_ssh
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=ssh_option_spellings())
def test_ssh_option_refused_exactly_when_ssh_turns_host_key_checking_off(option):
    """The reference is ssh's own parser: whatever spelling ssh reads as "off" edgecam refuses,
    and every spelling ssh reads as on (yes/ask/accept-new) is accepted."""
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import SshOptions

    resolved = _ssh_g(option)
    try:
        SshOptions(options=(option,)).common()
        refused = False
    except InputError as exc:
        refused = True
        message = str(exc)
    if resolved is None:
        return  # ssh refuses it too: either way nothing connects with it
    off = resolved["stricthostkeychecking"] == "false"
    assert refused == off, (option, resolved["stricthostkeychecking"])
    if refused:
        assert "would turn host-key checking off" in message and "\n" not in message


@needs_ssh
@settings(max_examples=20, deadline=None)
@given(option=ssh_option_spellings("NoHostAuthenticationForLocalhost", ("yes", "true", "no", "false")))
def test_no_host_authentication_for_localhost_is_refused_like_ssh_reads_it(option):
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import check_ssh_options

    resolved = _ssh_g(option)
    try:
        check_ssh_options([option])
        refused = False
    except InputError:
        refused = True
    if resolved is not None:
        assert refused == (resolved["nohostauthenticationforlocalhost"] == "yes"), option


def test_accept_new_with_a_null_known_hosts_file_is_refused():
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import check_ssh_options

    with pytest.raises(InputError, match="accepts every host key"):
        check_ssh_options(["StrictHostKeyChecking accept-new", "userknownhostsfile = /dev/null"])
    check_ssh_options(["StrictHostKeyChecking=accept-new", "UserKnownHostsFile=/home/pi/.ssh/kh"])
    check_ssh_options(["StrictHostKeyChecking=yes", "UserKnownHostsFile=/dev/null"])  # then nothing connects
    for bad in ("Include /tmp/evil", "Match all", 'StrictHostKeyChecking="no', "=no", "StrictHostKeyChecking",
                "UserKnownHostsFile=/a\nStrictHostKeyChecking=no"):
        with pytest.raises(InputError):
            check_ssh_options([bad])


POSIX_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@settings(max_examples=40, deadline=None)
@given(name=st.one_of(
    st.text(alphabet=st.sampled_from(sorted(POSIX_NAME_CHARS) + ["\n", " ", ";", "|", "&", "$", "é", "\t", "=", "/"]),
            max_size=40),
    st.sampled_from(["pi", "edge_cam", "pi\nExecStartPre=/bin/sh -c id", "root\n", "-x", "0", "a" * 33, "ubuntu.1"]),
))
def test_user_names_checked_alike_by_deploy_and_install_sh(name, tmp_path_factory):
    """``--install-arg --user`` is refused by edgecam deploy and by install.sh for the same names;
    an accepted one is a portable POSIX name (IEEE 1003.1 §3.437) that cannot break out of the
    ``User=`` line of the root systemd unit."""
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import check_install_args

    try:
        check_install_args(["--no-systemd", "--user", name])
        python_ok = True
    except InputError:
        python_ok = False
    try:
        check_install_args([f"--user={name}"])
        assert python_ok
    except InputError:
        assert not python_ok
    if python_ok:  # the independent definition of a portable user name
        assert set(name) <= POSIX_NAME_CHARS and 1 <= len(name) <= 32 and not name[0].isdigit() and name[0] != "-"
    script = ROOT / "toolkit" / "deploy" / "templates" / "install.sh"
    # install.sh checks --user right after reading its arguments; the empty prefix dir then makes
    # --verify fail with "no MANIFEST" only when the name was accepted.
    prefix = tmp_path_factory.mktemp("p")
    proc = subprocess.run(["sh", str(script), "--prefix", str(prefix), "--user", name, "--verify"],
                           capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    assert proc.returncode != 0
    sh_ok = "is not a POSIX user name" not in proc.stderr and "longer than 32" not in proc.stderr
    if name == "":
        return  # install.sh: no --user given; deploy: an empty name is refused
    assert sh_ok == python_ok, (name, proc.stderr)


def test_deploy_refuses_remote_directories_starting_with_a_dash():
    from firmware_host.errors import InputError
    from toolkit.deploy.deploy import parse_remote

    for spec in ("pi@cam:-rf", "pi@cam:--prefix", "pi@cam:apps/-x", "pi@cam:/opt/-e/ec", "pi@[fe80::1]:-x"):
        with pytest.raises(InputError, match="starting with '-'"):
            parse_remote(spec)
    assert parse_remote("pi@cam:apps/e-c").directory == "apps/e-c"


# ----------------------------------------------------------------------------- bundles (issue 13, item 7)
BUNDLE_TOP_NAME = "edgecam-0123456789ab"


@st.composite
def hostile_tarballs(draw):
    """A list of (name, kind, payload) members: a top that may itself be a link or a file, files,
    directories and links whose targets point at themselves, the top, ``.``/``..``, each other
    (chains and loops), and names that do not exist."""
    top = draw(st.sampled_from([BUNDLE_TOP_NAME] * 6 + ["edgecam-XYZ", "bundle"]))
    members = []
    top_kind = draw(st.sampled_from(["dir"] * 6 + ["none", "link", "file"]))
    if top_kind == "dir":
        members.append((top, "dir", None))
    elif top_kind == "link":
        members.append((top, "link", draw(st.sampled_from([top, ".", f"{top}/a", "a"]))))
    elif top_kind == "file":
        members.append((top, "file", b"x"))
    members.append((f"{top}/data", "file", b"model"))  # a benign target: links to it are fine
    names = [f"{top}/{n}" for n in draw(st.lists(st.sampled_from(["a", "b", "c", "d/e", "d/f", "d"]),
                                                 min_size=1, max_size=6, unique=True))]
    for name in names:
        kind = draw(st.sampled_from(["file", "link", "link", "dir"]))
        if kind == "link":
            base = name.rsplit("/", 1)[-1]
            up = "../" * name.count("/", len(top) + 1)
            target = draw(st.sampled_from([
                base, ".", "..", f"../{top}", "a", "b", "c", "d", "d/e", "../a", "../../etc", "e/../..",
                "missing", "./" + base, "d/../" + base] + [up + "data", "./" + up + "data"] * 6))
            members.append((name, "link", target))
        else:
            members.append((name, kind, b"data" if kind == "file" else None))
    return members


def _write_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)


@settings(max_examples=150, deadline=None)
@given(members=hostile_tarballs())
def test_hostile_bundle_tarballs_are_refused_with_one_error_or_extract_safely(members, tmp_path_factory):
    """Either one DeployError and nothing written, or a bundle whose top is the directory
    edgecam-<id> and whose every link resolves to an existing path strictly inside it."""
    import os

    from firmware_host.errors import DeployError
    from toolkit.deploy.safetar import BUNDLE_TOP, safe_extract

    tmp = tmp_path_factory.mktemp("tar")
    archive = tmp / "b.tar.gz"
    _write_tar(archive, members)
    dest = tmp / "dest"
    dest.mkdir()
    try:
        root = safe_extract(archive, dest, top_pattern=BUNDLE_TOP)
    except DeployError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        assert list(dest.iterdir()) == []
        return
    assert root == dest / BUNDLE_TOP_NAME and root.is_dir() and not root.is_symlink()
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                real = path.resolve(strict=True)
                assert real != real_root and real_root in real.parents and real != path


def test_self_link_bundle_gives_one_error_line(tmp_path):
    """The reported case: a bundle whose top-level member is a symlink to itself."""
    from toolkit.cli import main  # noqa: F401  (the CLI path: one Error line, exit 1)

    archive = tmp_path / "self.tar.gz"
    _write_tar(archive, [(BUNDLE_TOP_NAME, "link", BUNDLE_TOP_NAME)])
    proc = subprocess.run([sys.executable, "-m", "toolkit", "deploy", str(archive), "pi@127.0.0.1:ec", "--dry-run"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("Error:") == 1
    assert "is the top-level member but not a directory" in proc.stderr


# ----------------------------------------------------------------------------- preview server (issue 13, item 5)
import select
import socket
import threading
import time


def _read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes (at most ``limit`` seconds)."""
    sock.settimeout(limit)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def _feeder(server, shape=(48, 64), noise=False):
    import numpy as np

    stop = threading.Event()
    rng = np.random.default_rng(0)

    def feed():
        i = 0
        while not stop.is_set():
            frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8) if noise else np.full((*shape, 3), i % 256, np.uint8)
            server.publish(frame)
            i += 1
            stop.wait(0.02)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return stop, thread


def _get(port: int, path: str = "/", host: str = None, timeout: float = 5.0):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read() if path != "/stream.mjpg" or response.status != 200 else b""
    conn.close()
    return response.status, body


def test_preview_caps_connections_and_closes_idle_ones():
    """40 idle sockets against a cap of 8: 32 are answered 503 at once, the server never holds more
    than 8 connection threads, the 8 it holds are closed after the timeout (6 s), and it serves again."""
    from firmware_host.preview import PreviewServer

    before = threading.active_count()
    with PreviewServer(port=0, max_connections=8, timeout=6.0) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
        try:
            busy, held = 0, []
            # Answers come from the accepting thread: read what each socket got (the held ones
            # are closed only after the 6 s timeout).
            deadline = time.monotonic() + 5.0
            pending = list(idle)
            while pending and time.monotonic() < deadline and busy < 32:
                readable, _, _ = select.select(pending, [], [], 0.2)
                for sock in readable:
                    if _read_all(sock, 1.0).startswith(b"HTTP/1.0 503"):
                        busy += 1
                    pending.remove(sock)
                assert threading.active_count() - before <= 8 + 2  # + the server's own thread
            assert busy == 32
            held = [s for s in idle if s in pending]
            assert len(held) == 8
            # The held ones sent nothing: closed by the server after its request timeout.
            closed = [_read_all(sock, 15.0) for sock in held]
            assert closed == [b""] * 8
        finally:
            for sock in idle:
                sock.close()
        stop, feeder = _feeder(server)
        try:
            # The closed connections' threads release their slots as they end: served again soon.
            statuses = []
            for _ in range(50):
                statuses.append(_get(server.port, "/latest.jpg")[0])
                if statuses[-1] == 200:
                    break
                time.sleep(0.1)
            assert statuses[-1] == 200, statuses
        finally:
            stop.set()
            feeder.join()


def test_preview_slow_loris_and_oversized_requests_are_cut_off():
    from firmware_host.preview import MAX_REQUEST_BYTES, PreviewServer

    with PreviewServer(port=0, timeout=1.0) as server:
        # One header byte every 0.1 s would take 20 s; the whole request must arrive within 1 s.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed_after = None
        for i, byte in enumerate(b"X-Slow: " + b"a" * 192):
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed_after = i
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable and sock.recv(4096) == b"":
                closed_after = i
                break
        sock.close()
        assert closed_after is not None and closed_after < 200

        # Headers over the size limit: closed without an answer, nothing buffered without bound.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"b" * 1000 + b"\r\n")
            for _ in range(MAX_REQUEST_BYTES // 1000 + 2):
                sock.sendall(b"X-Big: " + b"b" * 1000 + b"\r\n")
        except OSError:
            pass
        assert b"200 OK" not in _read_all(sock, 5.0)
        sock.close()
        assert _get(server.port, "/")[0] == 200


def test_preview_viewer_that_stops_reading_loses_its_slot():
    """A stream client that never reads (a tiny receive buffer): the server's write times out, the
    only viewer slot is freed and a new viewer is served instead of getting 503."""
    from firmware_host.preview import PreviewServer

    with PreviewServer(port=0, max_clients=1, timeout=2.0) as server:
        stop, feeder = _feeder(server, shape=(240, 320), noise=True)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        try:
            stuck.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            stuck.settimeout(10)
            assert stuck.recv(12) == b"HTTP/1.0 200"  # it holds the one slot; from now on it reads nothing
            statuses = []
            for _ in range(40):  # at most ~20 s
                status, _ = _get(server.port, "/stream.mjpg")
                statuses.append(status)
                if status == 200:
                    break
                time.sleep(0.5)
            assert statuses[0] == 503 and statuses[-1] == 200, statuses
        finally:
            stuck.close()
            stop.set()
            feeder.join()


FOREIGN_HOSTS = st.from_regex(r"\A[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){1,3}(:[0-9]{1,5})?\Z").filter(
    lambda h: "localhost" not in h.split(":")[0] and h.split(":")[0].split(".")[-1] != "local")


@pytest.fixture(scope="module")
def fed_preview():
    from firmware_host.preview import PreviewServer

    server = PreviewServer(port=0, allowed_hosts=("camera.fleet.example", ".cams.example"))
    stop, feeder = _feeder(server)
    yield server
    stop.set()
    feeder.join()
    server.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=FOREIGN_HOSTS, path=st.sampled_from(["/", "/latest.jpg", "/stream.mjpg"]))
def test_preview_refuses_foreign_host_headers(fed_preview, host, path):
    """DNS rebinding: a page on attacker.example whose name now resolves to the device (or to a
    local ssh -L tunnel) sends Host: attacker.example. It gets 421 and no picture."""
    if host.split(":")[0] in ("camera.fleet.example",) or host.split(":")[0].endswith(".cams.example"):
        return
    status, body = _get(fed_preview.port, path, host=host)
    assert status == 421 and b"\xff\xd8" not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:9999", "localhost", "LOCALHOST:8080", "localhost.",
                                  "cam.localhost:1", "127.8.9.10", "[::1]:8080", "camera.fleet.example",
                                  "Camera.Fleet.Example:443", "a.cams.example", "cams.example"])
def test_preview_serves_loopback_bound_and_allowed_names(fed_preview, host):
    assert _get(fed_preview.port, "/latest.jpg", host=host)[0] == 200


def test_preview_host_rules_when_bound_to_all_interfaces(monkeypatch):
    from firmware_host.preview import host_allowed

    monkeypatch.setattr(socket, "gethostname", lambda: "raspberrypi")
    for host in ("192.168.1.20:8080", "10.0.0.7", "[fe80::1]:8080", "raspberrypi", "raspberrypi.local:8080"):
        assert host_allowed(host, "0.0.0.0"), host
    for host in ("attacker.example", "raspberrypi.attacker.example", "", ":8080", "evil.local"):
        assert not host_allowed(host, "0.0.0.0"), host
    # Bound to one LAN address: that address, loopback and the machine's name; no other address.
    assert host_allowed("192.168.1.20", "192.168.1.20") and not host_allowed("192.168.1.21", "192.168.1.20")
    assert not host_allowed("raspberrypi.local", "127.0.0.1")  # a loopback server has no LAN name
    monkeypatch.setenv("EDGECAM_PREVIEW_ALLOWED_HOSTS", "cam7.fleet.example, .depot.example")
    from firmware_host.preview import PreviewServer

    with PreviewServer(port=0) as server:
        assert server.allowed_hosts == {"cam7.fleet.example", ".depot.example"}
        assert _get(server.port, "/", host="cam7.fleet.example")[0] == 200
        assert _get(server.port, "/", host="cam8.fleet.example")[0] == 421
        assert _get(server.port, "/", host="bus.depot.example")[0] == 200


# ----------------------------------------------------------------------------- small ones (issue 13, item 10)
def _keras2_saved_model(directory: Path, layers) -> Path:
    """A Keras 2 SavedModel directory as tf_keras writes it: saved_model.pb and keras_metadata.pb,
    whose nodes carry each layer's JSON metadata (here with the protobuf framing bytes around)."""
    import json

    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b"\x08\x01\x12\x00")
    chunks = []
    for layer in layers:
        text = json.dumps(layer).encode()
        chunks.append(b"\x0a" + bytes([len(text) & 0x7F | 0x80, len(text) >> 7]) + text)
    (directory / "keras_metadata.pb").write_bytes(b"".join(chunks))
    return directory


def test_keras2_saved_model_with_lambda_is_refused_in_safe_mode(tmp_path):
    """tf_keras rebuilds Lambda layers from marshalled bytecode with no safe mode of its own on the
    SavedModel path: edgecam refuses them before tf_keras reads the file, installed or not."""
    import base64
    import marshal

    from converters.loading import load_keras_model
    from firmware_host.errors import ModelFileError

    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    lambda_layer = {"class_name": "Lambda", "config": {"name": "lambda", "function": [code, None, None],
                                                      "function_type": "lambda"}}
    dense = {"class_name": "Dense", "config": {"name": "dense", "units": 2}}
    model = _keras2_saved_model(tmp_path / "k2", [dense, lambda_layer])
    with pytest.raises(ModelFileError, match=r"Keras 2 SavedModel with a Lambda layer.*--unsafe"):
        load_keras_model(model)
    try:
        import tf_keras  # noqa: F401
    except ImportError:
        # Without safe_mode the file goes on to tf_keras, which is not installed here.
        with pytest.raises(ModelFileError, match="needs the tf_keras package"):
            load_keras_model(model, safe_mode=False)
        plain = _keras2_saved_model(tmp_path / "plain", [dense])
        with pytest.raises(ModelFileError, match="needs the tf_keras package"):
            load_keras_model(plain)
