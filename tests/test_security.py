"""Security invariants that are easy to lose in a refactor (docs/security.md).

The behaviours themselves are tested where they live (safetar and deploy in test_deploy.py,
the preview server in test_preview.py, Lambda refusal in the bad-input tests); this file pins
the *defaults* and scans the source tree for shell use.
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

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
