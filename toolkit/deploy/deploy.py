"""``edgecam deploy``: install a bundle on a device over SSH with the system's ``ssh``/``scp``.

The plan is a list of :class:`Step` objects (argument vectors, never shell strings), so
``--dry-run`` prints exactly what would run. The local ``ssh``/``scp`` read ``~/.ssh/config``
as usual and keep host-key checking on; nothing here turns it off.

Remote layout under ``DIR`` (default ``edgecam`` in the login's home directory)::

    DIR/incoming/edgecam-<id>/   upload staging, removed after the install
    DIR/releases/<id>/           installed releases (bundle files + venv/)
    DIR/current, DIR/previous    symlinks switched by install.sh
    DIR/data/                    the runner's working directory (telemetry)

Every remote command is a single string built with :func:`shlex.quote` for each argument,
because ssh joins its arguments and hands them to the remote login shell.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

from firmware_host.errors import DeployError, InputError
from firmware_host.manifest import verify_manifest

from .bundle import check_device_target
from .safetar import safe_extract

__all__ = ["Remote", "SshOptions", "Step", "parse_remote", "plan_deploy", "plan_rollback", "run_plan", "deploy"]

# user@host: no leading '-' (it would be read as an ssh option), no spaces or shell characters.
_HOST = re.compile(r"^(?!-)(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9_.][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])$")
# Remote directories become paths in a systemd unit and in scp targets: keep them plain.
_DIR = re.compile(r"^[A-Za-z0-9._/-]+$")
DEFAULT_DIR = "edgecam"


@dataclass(frozen=True)
class Remote:
    """Where to deploy: ``host`` as ssh understands it (``user@host`` or an ssh_config alias)."""

    host: str
    directory: str = DEFAULT_DIR


@dataclass(frozen=True)
class SshOptions:
    """Options passed to both ``ssh`` and ``scp``.

    Attributes:
        identity: ``-i KEY``.
        port: ``-p`` (ssh) / ``-P`` (scp).
        options: ``-o`` values, e.g. ``UserKnownHostsFile=/path``.
    """

    identity: Optional[str] = None
    port: Optional[int] = None
    options: Tuple[str, ...] = ()

    def common(self) -> List[str]:
        args: List[str] = []
        if self.identity:
            args += ["-i", self.identity]
        for option in self.options:
            if re.match(r"(?i)^\s*StrictHostKeyChecking\s*[= ]\s*(no|off)\b", option):
                raise InputError(
                    f"--ssh-option {option!r} would turn host-key checking off, which edgecam "
                    "refuses. Add the device's key to known_hosts (ssh-keyscan, then check it)."
                )
            args += ["-o", option]
        return args


@dataclass(frozen=True)
class Step:
    """One command of a deploy plan.

    Attributes:
        what: a short description shown before it runs.
        argv: the argument vector (run without a shell).
        check: fail the deploy when it exits non-zero.
        always: run even after an earlier step failed (clean-up).
    """

    what: str
    argv: Tuple[str, ...]
    check: bool = True
    always: bool = False

    def display(self) -> str:
        """The command as one copy-pasteable shell line."""
        return shlex.join(self.argv)


def parse_remote(spec: str) -> Remote:
    """Parse ``user@host[:dir]`` (``dir`` relative to the login's home, or absolute).

    Raises:
        InputError: an empty host, a host starting with ``-`` or holding shell characters, or a
            directory with characters other than letters, digits and ``. _ / -``.
    """
    host, sep, directory = _split_ipv6(spec) if "[" in spec else spec.partition(":")
    if directory.startswith("~/"):
        directory = directory[2:]
    directory = directory.rstrip("/") or (DEFAULT_DIR if not sep or not directory else "/")
    if not _HOST.match(host) or "@-" in host:
        raise InputError(
            f"Deploy target {spec!r}: the host part {host!r} is not a plain user@host or ssh alias "
            "(letters, digits, . _ -, not starting with '-'). Example: pi@raspberrypi.local:edgecam"
        )
    if not _DIR.match(directory) or ".." in directory.split("/") or directory == "/":
        raise InputError(
            f"Deploy target {spec!r}: the directory {directory!r} may only contain letters, digits and "
            ". _ / - (no '..', not '/'). Example: pi@raspberrypi.local:/opt/edgecam"
        )
    return Remote(host=host, directory=directory)


def _split_ipv6(spec: str) -> Tuple[str, str, str]:
    # user@[fe80::1]:dir — the address's colons are not the directory separator.
    end = spec.find("]")
    host, rest = spec[: end + 1], spec[end + 1 :]
    return (host, ":", rest[1:]) if rest.startswith(":") else (host, "", rest)


def _ssh(remote: Remote, ssh: SshOptions, *command: str) -> Tuple[str, ...]:
    args = ["ssh"] + ssh.common()
    if ssh.port:
        args += ["-p", str(ssh.port)]
    # `--` ends ssh's options; the remote command is one pre-quoted string for the remote shell.
    # ssh takes an IPv6 address bare; scp needs it in brackets (host:path would be ambiguous).
    host = remote.host.replace("[", "").replace("]", "")
    return tuple(args + ["--", host, " ".join(shlex.quote(part) for part in command)])


def _scp_dir(remote: Remote, ssh: SshOptions, local: str, remote_dir: str) -> Tuple[str, ...]:
    args = ["scp", "-q", "-r", "-p"] + ssh.common()
    if ssh.port:
        args += ["-P", str(ssh.port)]
    return tuple(args + ["--", local, f"{remote.host}:{remote_dir}/"])


def _install_sh(remote: Remote, bundle_dir: str) -> List[str]:
    return ["sh", f"{bundle_dir}/install.sh", "--prefix", remote.directory]


def plan_deploy(
    local_bundle: str,
    top: str,
    remote: Remote,
    ssh: SshOptions = SshOptions(),
    install_args: Sequence[str] = (),
    wait: int = 10,
) -> List[Step]:
    """The steps that upload an extracted bundle, install it, and show the result.

    Args:
        local_bundle: the extracted, verified bundle directory on this machine.
        top: its name (``edgecam-<id>``), reused on the device.
        remote: where to install.
        ssh: ssh/scp options.
        install_args: extra install.sh arguments (``--no-systemd``, ``--python PY`` …).
        wait: seconds the status step waits for the first telemetry line.
    """
    incoming = f"{remote.directory}/incoming"
    staged = f"{incoming}/{top}"
    return [
        Step("prepare the upload directory", _ssh(remote, ssh, "sh", "-c", 'rm -rf -- "$1" && mkdir -p -- "$2"', "sh", staged, incoming)),
        Step("upload the bundle", _scp_dir(remote, ssh, local_bundle, incoming)),
        Step("verify and install", _ssh(remote, ssh, *_install_sh(remote, staged), *install_args)),
        Step("remove the upload", _ssh(remote, ssh, "rm", "-rf", "--", staged), always=True),
        Step("service status and first telemetry", _ssh(
            remote, ssh, "sh", f"{remote.directory}/current/install.sh", "--prefix", remote.directory,
            "--status", "--wait", str(wait)), check=False),
    ]


def plan_rollback(remote: Remote, ssh: SshOptions = SshOptions(), wait: int = 10) -> List[Step]:
    """The steps that switch ``current`` back to the previous release, restart and show status."""
    script = f"{remote.directory}/current/install.sh"
    return [
        Step("switch to the previous release and restart",
             _ssh(remote, ssh, "sh", script, "--prefix", remote.directory, "--rollback")),
        Step("service status and first telemetry",
             _ssh(remote, ssh, "sh", script, "--prefix", remote.directory, "--status", "--wait", str(wait)),
             check=False),
    ]


def run_plan(steps: Sequence[Step], dry_run: bool = False, echo: Callable[[str], None] = print) -> None:
    """Run (or with ``dry_run`` only print) each step, stopping at the first failure.

    Raises:
        DeployError: ``ssh``/``scp`` missing, or a checked step exited non-zero.
    """
    failure: Optional[DeployError] = None
    for step in steps:
        if failure is not None and not step.always:
            continue
        echo(f"# {step.what}\n{step.display()}" if dry_run else f"==> {step.what}")
        if dry_run:
            continue
        if shutil.which(step.argv[0]) is None:
            raise DeployError(
                f"'{step.argv[0]}' is not installed here. Install the OpenSSH client (apt install openssh-client)."
            )
        # stdin closed: a remote command must not consume ours; ssh prompts use the terminal.
        code = subprocess.run(list(step.argv), stdin=subprocess.DEVNULL).returncode
        if code != 0 and step.check and failure is None:
            hint = (" (255: ssh could not connect or authenticate; check the host key, -i KEY and -p PORT)"
                    if code == 255 else "")
            failure = DeployError(
                f"Deploy step '{step.what}' failed with exit code {code}{hint}. Command: {step.display()}"
            )
    if failure is not None:
        raise failure


def deploy(
    bundle: Union[str, Path],
    target: str,
    ssh: SshOptions = SshOptions(),
    install_args: Sequence[str] = (),
    dry_run: bool = False,
    rollback: bool = False,
    wait: int = 10,
    echo: Callable[[str], None] = print,
) -> List[Step]:
    """Deploy ``bundle`` to ``target`` (``user@host[:dir]``), or roll ``target`` back.

    The bundle is extracted with :func:`~toolkit.deploy.safetar.safe_extract` and verified
    against its manifest *here* first, so a tampered or crafted bundle is refused before any
    connection; install.sh verifies it again on the device before touching anything.

    Returns:
        The steps run (or printed).

    Raises:
        InputError: a bad target or ssh option.
        DeployError: an unsafe or tampered bundle, or a failed step.
    """
    remote = parse_remote(target)
    ssh.common()  # validate the options before anything runs
    if rollback:
        steps = plan_rollback(remote, ssh, wait)
        run_plan(steps, dry_run, echo)
        return steps
    with tempfile.TemporaryDirectory(prefix="edgecam-deploy-") as tmp:
        local = safe_extract(bundle, tmp)
        try:
            verify_manifest(local, strict=True)
        except DeployError as exc:
            raise DeployError(f"Refusing '{bundle}', nothing was uploaded: {exc}") from exc
        if not dry_run:  # refuse a bundle whose target cannot serve the device, before uploading
            check_device_target(local, install_args, lambda *cmd: _ssh(remote, ssh, *cmd), echo)
        steps = plan_deploy(str(local), local.name, remote, ssh, install_args, wait)
        run_plan(steps, dry_run, echo)
    return steps

