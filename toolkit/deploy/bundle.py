"""``edgecam bundle``: one self-contained, checksummed tarball that installs edgecam on a device.

Layout of ``BUNDLE.tar.gz`` (one top-level directory ``edgecam-<bundle-id>/``)::

    MANIFEST.sha256     sha256 of every other file, `sha256sum -c` format
    README.md           how to install, roll back, check
    install.sh          POSIX sh installer (verifies the manifest first)
    edgecam.service     systemd unit template (install.sh fills in the paths)
    run.toml            [run] table: the options of `edgecam run`
    requirements.txt    pinned device packages with environment markers
    bundle.env          target defaults read by install.sh (never sourced)
    bundle.json         build information
    <model>.tflite      the model (one model), or, with ``--plans``:
    models/model.<plan>.tflite  every precision plan that passed the host's fidelity check
    plans.json          their fidelity figures, and the plans left out with theirs
    dist/edgecam-*.whl  edgecam itself; must not require TensorFlow
    wheels/*.whl        with --with-wheels: every device package, for an offline install

The bundle id is the first 12 hex digits of the manifest's sha256, so it names the exact
content; install.sh uses it as the release directory name (a re-install is a no-op).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from firmware_host._io import atomic_copy, atomic_open, ensure_writable_dir
from firmware_host.errors import DeployError, FidelityError, InputError, ModelFileError
from firmware_host.manifest import bundle_id, sha256_file, write_manifest
from firmware_host.runconfig import dumps_run_config, load_run_config

from .scratch import owned_tempdir, sweep_stale
from .requirements import (
    DEVICE_PINS,
    MACHINE_PLATFORM_TAGS,
    interpreter_for,
    pins_for,
    pins_for_machines,
    render_requirements,
)

__all__ = [
    "TARGETS",
    "Target",
    "Bundle",
    "build_bundle",
    "build_wheel",
    "check_wheel",
    "check_target_covers",
    "check_device_target",
    "download_wheels",
]

PathLike = Union[str, "os.PathLike[str]"]
TEMPLATES = Path(__file__).with_name("templates")
# install.sh and the systemd unit only accept these characters in paths.
SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
# build_wheel's scratch directory in the system temp dir (removed by the next run if killed).
WHEEL_SCRATCH = "edgecam-wheel-"


@dataclass(frozen=True)
class Target:
    """A device family: which Pythons to fetch wheels for, and install defaults.

    Attributes:
        name: ``rpi``, ``jetson`` or ``linux``.
        description: shown in the README.
        python_versions: device CPython versions ``--with-wheels`` downloads for by default.
        system_site_packages: make the OS's Python packages visible in the venv (JetPack ships
            its CUDA/GStreamer builds system-wide).
        machines: the ``uname -m`` values the target's requirements cover; ``deploy`` refuses
            any other device, and ``--with-wheels`` downloads for those with index wheels.
    """

    name: str
    description: str
    python_versions: Tuple[str, ...]
    system_site_packages: bool
    machines: Tuple[str, ...] = ("aarch64",)


TARGETS: Dict[str, Target] = {
    # Raspberry Pi OS 64-bit: Bullseye (3.9), Bookworm (3.11), Trixie (3.13); 32-bit (armv7l)
    # through tflite-runtime on Python 3.9/3.10 (wheels from piwheels, never bundled).
    "rpi": Target("rpi", "Raspberry Pi 4/5 (64-bit Raspberry Pi OS)", ("3.9", "3.11", "3.13"), False,
                  ("aarch64", "armv7l")),
    # JetPack 6 (Ubuntu 22.04, Python 3.10); JetPack 5 images upgraded to 3.9+.
    "jetson": Target("jetson", "NVIDIA Jetson (JetPack 6, aarch64)", ("3.10",), True, ("aarch64",)),
    # Industrial PCs, in-vehicle NUCs and lab machines: Debian 12 (3.11), Ubuntu 22.04/24.04 (3.10/3.12).
    "linux": Target("linux", "Generic Linux PC (x86-64 or aarch64, glibc 2.28+)", ("3.10", "3.11", "3.12"), False,
                    ("x86_64", "aarch64")),
}

# `uname -m` spellings of the same machine.
_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armv8l": "armv7l"}


@dataclass(frozen=True)
class Bundle:
    """A written bundle.

    Attributes:
        path: the ``.tar.gz``.
        bundle_id: 12 hex digits naming the content (the release directory on the device).
        top: the archive's top-level directory name.
        files: ``{relative path: sha256}`` of every file (the manifest).
    """

    path: Path
    bundle_id: str
    top: str
    files: Dict[str, str]


# ------------------------------------------------------------------------- wheel
def _source_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "firmware_host").is_dir():
        raise DeployError(
            f"edgecam's source tree was not found above '{Path(__file__).resolve()}' (edgecam is "
            "installed as a package). Pass --wheel with an edgecam wheel to bundle."
        )
    return root


def build_wheel(dest: PathLike, source: Optional[PathLike] = None) -> Path:
    """Build the edgecam wheel from the source tree into ``dest`` and return its path.

    The tree is copied to a scratch directory first, so a stale ``build/`` cannot leak deleted
    files into the wheel and the source tree is left untouched.

    Raises:
        DeployError: no source tree, or pip failed (its output is included).
    """
    root = Path(source) if source else _source_root()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    with owned_tempdir(WHEEL_SCRATCH) as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        for package in ("converters", "firmware_host", "toolkit"):
            shutil.copytree(root / package, src / package, ignore=ignore)
        out = Path(tmp, "out")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(out)]
        try:
            import setuptools  # noqa: F401  (build offline with the installed backend when present)

            cmd.append("--no-build-isolation")
        except ImportError:
            pass
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        wheels = sorted(out.glob("edgecam-*.whl")) if out.is_dir() else []
        if proc.returncode != 0 or len(wheels) != 1:
            raise DeployError(
                f"Building the edgecam wheel failed (pip exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}. Pass --wheel with a prebuilt wheel."
            )
        final = dest / wheels[0].name
        atomic_copy(wheels[0], final)  # ``dest`` may be a user's folder: never a half wheel
    return final


def check_wheel(wheel: PathLike) -> str:
    """Check an edgecam wheel is usable on a device; return its version.

    Raises:
        DeployError: not an edgecam wheel, not pure Python, or it requires TensorFlow/Keras
            outside an extra.
    """
    wheel = Path(wheel)
    if not re.match(r"^edgecam-[^-]+-py3-none-any\.whl$", wheel.name):
        raise DeployError(
            f"'{wheel.name}' is not a pure-Python edgecam wheel (expected edgecam-<version>-py3-none-any.whl)."
        )
    try:
        with zipfile.ZipFile(wheel) as zf:
            meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = zf.read(meta_name).decode("utf-8")
    except (OSError, zipfile.BadZipFile, StopIteration) as exc:
        raise DeployError(f"'{wheel}' is not a readable wheel ({exc}). Build it again.") from exc
    version = re.search(r"^Version: (.+)$", metadata, re.M)
    for line in re.findall(r"^Requires-Dist: (.+)$", metadata, re.M):
        name = re.split(r"[ ;<>=!~\[(]", line, maxsplit=1)[0].lower()
        if name in ("tensorflow", "tensorflow-cpu", "keras", "tf-keras") and "extra ==" not in line:
            raise DeployError(
                f"'{wheel.name}' requires {line!r} unconditionally; the device install must not pull "
                "TensorFlow. Move it to the [host] extra in pyproject.toml."
            )
    return version.group(1).strip() if version else "?"


# ------------------------------------------------------------------------- target vs device
def check_target_covers(target: str, machine: str, python: str) -> str:
    """Check that a ``target`` bundle installs an interpreter on a ``machine``/``python`` device.

    Args:
        target: a key of :data:`TARGETS`.
        machine: the device's ``uname -m`` (``aarch64``, ``x86_64``, ``armv7l`` …).
        python: the device Python's ``X.Y``.

    Returns:
        The LiteRT interpreter pin that will serve the device (``ai-edge-litert==2.3.0`` …).

    Raises:
        InputError: unknown target.
        DeployError: the target's requirements do not cover that machine, or have no interpreter
            wheel for that Python there.
    """
    if target not in TARGETS:
        raise InputError(f"Unknown target {target!r}. Choose one of: {', '.join(TARGETS)}.")
    profile = TARGETS[target]
    machine = _MACHINE_ALIASES.get(machine, machine)
    covering = [name for name, t in TARGETS.items() if machine in t.machines]
    if machine not in profile.machines:
        advice = (f"Build one with `edgecam bundle MODEL --target {covering[0]}`"
                  + (f" (targets for {machine}: {', '.join(covering)})" if len(covering) > 1 else "")
                  if covering else f"edgecam has no target for {machine} (see docs/devices.md)")
        raise DeployError(
            f"This bundle is for target '{target}' ({', '.join(profile.machines)}), but the device is "
            f"{machine}: its requirements would install no LiteRT interpreter there. Nothing was "
            f"uploaded or installed. {advice}."
        )
    if not re.match(r"^\d+\.\d+$", python) or tuple(map(int, python.split("."))) < (3, 9):
        raise DeployError(
            f"The device's Python is {python!r}; edgecam needs CPython 3.9 or newer. Nothing was "
            "installed. Install a newer Python on the device and pass --python PY (docs/devices.md)."
        )
    interpreter = interpreter_for(python, machine, pins_for_machines(profile.machines))
    if interpreter is None:
        raise DeployError(
            f"Target '{target}' has no LiteRT interpreter wheel for Python {python} on {machine} "
            "(tflite-runtime, the only armv7l interpreter, stops at Python 3.10). Nothing was "
            "installed. Use a device Python the target covers with --python PY (docs/devices.md)."
        )
    return interpreter


# The remote probe: `uname -m`, then the device Python's X.Y (the Python install.sh will use).
_PROBE_SCRIPT = 'uname -m && "$1" -c "$2"'
_PROBE_PYTHON = "import sys; print('%d.%d' % sys.version_info[:2])"


def check_device_target(bundle_dir: PathLike, install_args: Sequence[str], remote: Callable[..., Sequence[str]],
                        echo: Callable[[str], None] = print) -> Optional[str]:
    """Read the device's ``uname -m`` and Python over ssh and check the bundle's target covers them.

    Skipped (returns None) with ``--no-deps`` among ``install_args``: the bundle's requirements are
    then not installed, so the device's own packages decide.

    Args:
        bundle_dir: the extracted bundle (its ``bundle.json`` names the target).
        install_args: install.sh's arguments (``--python PY`` picks the probed interpreter).
        remote: builds the ssh argument vector for a remote command (argv parts).
        echo: progress output.

    Returns:
        The interpreter pin that will serve the device, or None when skipped.

    Raises:
        DeployError: the probe failed, or :func:`check_target_covers` refused.
    """
    args = list(install_args)
    if "--no-deps" in args:
        return None
    python = "python3"
    for i, arg in enumerate(args):
        if arg == "--python" and i + 1 < len(args):
            python = args[i + 1]
        elif arg.startswith("--python="):
            python = arg.split("=", 1)[1]
    target = json.loads(Path(bundle_dir, "bundle.json").read_text(encoding="utf-8")).get("target", "rpi")
    echo("==> check the device's machine and Python")
    argv = list(remote("sh", "-c", _PROBE_SCRIPT, "sh", python, _PROBE_PYTHON))
    if shutil.which(argv[0]) is None:
        raise DeployError(
            f"'{argv[0]}' is not installed here. Install the OpenSSH client (apt install openssh-client)."
        )
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        hint = " (255: ssh could not connect or authenticate)" if proc.returncode == 255 else ""
        raise DeployError(
            f"Reading the device's machine and Python ({python}) failed with exit code "
            f"{proc.returncode}{hint}: {(proc.stderr or proc.stdout).strip()[-300:]}. Nothing was "
            "uploaded. Check ssh, and that the device has that Python (--python PY)."
        )
    return check_target_covers(target, lines[0], lines[1])


# ------------------------------------------------------------------------- wheels for offline
def download_wheels(dest: PathLike, python_versions: Sequence[str], pins=DEVICE_PINS,
                    machines: Sequence[str] = ("aarch64",)) -> List[Path]:
    """``pip download`` every device package for each machine and Python version into ``dest``.

    Markers are applied here (see :mod:`toolkit.deploy.requirements`), one pip call per machine
    and version. Machines without index wheels (armv7l: piwheels) are skipped.

    Raises:
        DeployError: pip failed (no network, or no wheel for a version/platform).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for machine, version in [(m, v) for m in machines if m in MACHINE_PLATFORM_TAGS for v in python_versions]:
        lines = pins_for(version, machine, pins)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
            req.write("\n".join(lines) + "\n")
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
               "--only-binary=:all:", "--python-version", version, "-d", str(dest), "-r", req.name]
        for tag in MACHINE_PLATFORM_TAGS[machine]:
            cmd += ["--platform", tag]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            os.unlink(req.name)
        if proc.returncode != 0:
            raise DeployError(
                f"Downloading the device wheels for Python {version} on {machine} failed: "
                f"{(proc.stderr or proc.stdout).strip()[-1500:]}. Check the network, or bundle "
                "without --with-wheels (the device then installs from the index)."
            )
    return sorted(dest.glob("*.whl"))


# ------------------------------------------------------------------------- the bundle
def _run_options(model_name: str, config: Optional[PathLike]) -> Dict[str, object]:
    options: Dict[str, object] = {"source": "0", "log": "telemetry.jsonl"}
    if config is not None:
        user = load_run_config(config)
        if "model" in user:
            # The bundle ships exactly one model; a path from the build machine means nothing there.
            user.pop("model")
        options.update(user)
    return {"model": model_name, **options}


def _tar(staging: Path, top: str, out: Path, mtime: int) -> None:
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = mtime
        executable = info.isdir() or info.name.endswith("/install.sh")
        info.mode = 0o755 if executable else 0o644
        return info

    with atomic_open(out, "wb") as raw:
        # A fixed gzip header time and sorted members make the archive reproducible.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(staging, arcname=top, recursive=False, filter=normalise)
                for path in sorted(staging.rglob("*")):
                    rel = path.relative_to(staging).as_posix()
                    tar.add(path, arcname=f"{top}/{rel}", recursive=False, filter=normalise)


def build_bundle(
    model: PathLike,
    target: str = "rpi",
    out: Optional[PathLike] = None,
    config: Optional[PathLike] = None,
    with_wheels: bool = False,
    wheel: Optional[PathLike] = None,
    python_versions: Optional[Sequence[str]] = None,
    plans=None,
) -> Bundle:
    """Write a deploy bundle for ``model``.

    Args:
        model: a converted ``.tflite``.
        target: a key of :data:`TARGETS`.
        out: the ``.tar.gz`` to write (default ``<model stem>-<target>.tar.gz`` beside the model).
        config: a run.toml whose ``[run]`` options go into the bundle's run.toml.
        with_wheels: also download every device package (the target's machines that have index
            wheels) for an offline install.
        wheel: a prebuilt edgecam wheel (default: build one from the source tree).
        python_versions: device Pythons for ``with_wheels`` (default: the target's).
        plans: a :class:`~toolkit.deploy.plans.PlanSet`: ship every plan that passed as
            ``models/model.<plan>.tflite`` with ``plans.json``; the device picks the fastest
            (``edgecam doctor --choose-plan``). ``model`` then only names the bundle.

    Returns:
        The written :class:`Bundle`.

    Raises:
        InputError: unknown target, or a bad run.toml.
        ModelFileError: the model is missing or not a ``.tflite``.
        DeployError: the wheel cannot be built or requires TensorFlow; downloads failed.
        OutputError: the output directory is not writable.
    """
    if target not in TARGETS:
        raise InputError(f"Unknown target {target!r}. Choose one of: {', '.join(TARGETS)}.")
    profile = TARGETS[target]
    model = Path(model)
    model_rel = _check_model(model, plans)
    out = Path(out) if out else model.with_name(f"{model.stem}-{target}.tar.gz")
    ensure_writable_dir(out.parent if str(out.parent) else ".")
    sweep_stale(WHEEL_SCRATCH)  # what an interrupted earlier run left, even when --wheel skips the build
    options = _run_options(model_rel, config)
    versions = tuple(python_versions or profile.python_versions)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))

    # Hidden staging beside the output: after a kill -9 only dot-files remain, never a name that
    # looks like a result (the archive itself goes through atomic_open).
    with owned_tempdir(".edgecam-bundle-", dir=out.parent if str(out.parent) else None) as tmp:
        staging = Path(tmp, "bundle")
        wheel_path = _stage_wheel(staging / "dist", wheel)
        version = check_wheel(wheel_path)
        if plans is not None:
            _stage_plans(plans, staging)
        else:
            shutil.copy2(model, staging / model.name)
        if with_wheels:
            download_wheels(staging / "wheels", versions, pins_for_machines(profile.machines), profile.machines)
        _write_device_config(staging, target, options, model_rel, version)
        info = {
            "format": 1, "target": target, "created": created, "edgecam_version": version,
            "model": model_rel, "model_sha256": sha256_file(staging / model_rel), "wheel": wheel_path.name,
            "with_wheels": bool(with_wheels), "python_versions": list(versions),
        }
        if plans is not None:
            info["plans"] = [p.plan for p in plans.shipped]
        (staging / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        shutil.copy2(TEMPLATES / "install.sh", staging / "install.sh")
        shutil.copy2(TEMPLATES / "edgecam.service.in", staging / "edgecam.service")
        # The README names the bundle, so write it last but one; the id covers it via the manifest.
        _write_readme(staging, out, model_rel, profile, version, created)
        files = write_manifest(staging)
        ident = bundle_id(staging)
        top = f"edgecam-{ident}"
        _tar(staging, top, out, mtime)
    return Bundle(path=out, bundle_id=ident, top=top, files=files)


def _check_model(model: Path, plans) -> str:
    """The model's path inside the bundle, once ``model`` (or ``plans``) and its name are checked."""
    if plans is not None:
        model_rel = _check_plans(plans, model)
    elif model.suffix != ".tflite" or not model.is_file():
        raise ModelFileError(
            f"The bundle needs a converted .tflite model file. Got: '{model}'"
            f"{'' if model.exists() else ' (not found)'}. Convert one with `edgecam convert`."
        )
    else:
        model_rel = model.name
    if not SAFE_NAME.match(model.name):
        raise ModelFileError(
            f"Model file name {model.name!r} may only contain letters, digits and . _ + - (it becomes "
            "a path in a systemd unit and a shell script). Rename the file."
        )
    return model_rel


def _stage_wheel(dist: Path, wheel: Optional[PathLike]) -> Path:
    """Build the edgecam wheel into ``dist``, or copy the prebuilt ``wheel`` there."""
    dist.mkdir(parents=True)
    if wheel is None:
        return build_wheel(dist)
    wheel_path = dist / Path(wheel).name
    shutil.copy2(wheel, wheel_path)
    return wheel_path


def _write_device_config(staging: Path, target: str, options, model_rel: str, version: str) -> None:
    """``run.toml``, ``requirements.txt`` and ``bundle.env``: what install.sh and the service read."""
    profile = TARGETS[target]
    header = (
        f"edgecam run options for {model_rel} (target {target}), read by "
        "`edgecam run --config run.toml`.\n'model' is relative to this file; other paths are "
        "relative to the working directory\n(the service runs in <prefix>/data). Keys: docs/deploy.md."
    )
    (staging / "run.toml").write_text(dumps_run_config(options, header), encoding="utf-8")
    (staging / "requirements.txt").write_text(
        render_requirements(
            pins_for_machines(profile.machines),
            header=(
                f"edgecam {version} device requirements ({profile.description}); install with\n"
                "pip install -r requirements.txt, then the edgecam wheel with --no-deps."
            )
        ),
        encoding="utf-8",
    )
    (staging / "bundle.env").write_text(
        f"EDGECAM_TARGET={target}\nEDGECAM_SYSTEM_SITE_PACKAGES={int(profile.system_site_packages)}\n",
        encoding="utf-8",
    )


def _write_readme(staging: Path, out: Path, model_rel: str, profile: Target, version: str, created: str) -> None:
    """The bundle's ``README.md``, from the template, naming the bundle and its model."""
    readme = Template((TEMPLATES / "README.md.in").read_text(encoding="utf-8"))
    (staging / "README.md").write_text(
        readme.safe_substitute(
            bundle_name=out.name[: -len(".tar.gz")] if out.name.endswith(".tar.gz") else out.stem,
            model=model_rel,
            target_description=profile.description,
            version=version,
            created=created,
        ),
        encoding="utf-8",
    )


def _check_plans(plans, name: Path) -> str:
    """The default model of a bundle with plans (``models/model.<plan>.tflite``), or refuse."""
    shipped = plans.shipped
    if not shipped:
        from converters.quant import figures_from_dict, format_table, targets_from_dict

        table = format_table([figures_from_dict(p.row) for p in plans.plans], targets_from_dict(plans.targets))
        raise FidelityError(
            f"No precision plan of '{name}' meets the fidelity targets, so there is nothing to ship: "
            f"{' | '.join(line.strip() for line in table.splitlines()[1:])}. Nothing was written. Check the "
            "calibration images, or add more precise plans to --plans."
        )
    # Until the device chooses, run.toml names the first shipped plan in nominal (ARM) order.
    return f"models/model.{shipped[0].plan}.tflite"


def _stage_plans(plans, staging: Path) -> None:
    """Copy the shipped plans into ``models/`` and write ``plans.json`` (listed in the manifest)."""
    (staging / "models").mkdir()
    shipped = []
    for p in plans.shipped:
        rel = f"models/model.{p.plan}.tflite"
        shutil.copy2(p.path, staging / rel)
        shipped.append({**p.row, "file": rel, "sha256": sha256_file(staging / rel)})
    table = {"format": 1, "targets": plans.targets, "default": plans.shipped[0].plan, "shipped": shipped,
             "left_out": [p.row for p in plans.left_out]}
    (staging / "plans.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")


def iter_bundle_lines(bundle: Bundle) -> Iterable[str]:
    """Human-readable summary lines of a written bundle (for the CLI)."""
    size = bundle.path.stat().st_size
    yield f"Wrote {bundle.path} ({size / 2**20:.1f} MiB, bundle id {bundle.bundle_id})"
    for name in bundle.files:
        yield f"  {name}"
