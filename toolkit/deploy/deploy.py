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

import collections
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

from firmware_host.errors import DeployError, InputError
from firmware_host.manifest import bundle_id, verify_manifest

from .scratch import owned_tempdir
from .bundle import check_device_target
from .safetar import BUNDLE_TOP, safe_extract

__all__ = ["Remote", "SshOptions", "Step", "check_install_args", "check_ssh_options", "check_user_name",
           "diagnose", "parse_remote", "parse_ssh_option", "plan_deploy", "plan_recover", "plan_rollback",
           "run_plan", "run_step", "StepResult", "deploy", "device_choice"]

# user@host: no leading '-' (it would be read as an ssh option), no spaces or shell characters.
_HOST = re.compile(r"^(?!-)(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9_.][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])$")
# Remote directories become paths in a systemd unit and in scp targets: keep them plain.
_DIR = re.compile(r"^[A-Za-z0-9._/-]+$")
# POSIX portable user names (IEEE Std 1003.1, 3.437), not starting with a digit (systemd would read
# an all-digit name as a uid), 32 characters at most as useradd allows. install.sh checks the same.
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
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
        """The ``-i``/``-o`` arguments shared by ssh and scp.

        Raises:
            InputError: an option ssh would misread, or one that turns host-key checking off
                (see :func:`check_ssh_options`).
        """
        check_ssh_options(self.options)
        args: List[str] = []
        if self.identity:
            args += ["-i", self.identity]
        for option in self.options:
            args += ["-o", option]
        return args


def parse_ssh_option(text: str) -> Tuple[str, Tuple[str, ...]]:
    """Split one ``-o`` option the way ssh's ``readconf.c`` does.

    The keyword ends at the first whitespace or ``=``; then whitespace, at most one ``=`` and
    whitespace again; the rest are arguments with ``"``/``'`` quotes and backslash escapes. The
    keyword is case-insensitive, so it is returned lower-cased (ssh compares values
    case-insensitively too, so callers lower-case them when comparing).

    Returns:
        ``(keyword, arguments)``.

    Raises:
        InputError: control characters, an empty keyword, no argument, or unbalanced quotes
            (ssh refuses those too, but only after edgecam has started).
    """
    if any(ord(ch) < 32 and ch != "\t" or ord(ch) == 127 for ch in text):
        raise InputError(f"--ssh-option {text!r} holds a control character (newline?). Give one KEY=VALUE per option.")
    m = re.match(r"[ \t]*([^ \t=]*)[ \t]*(?:=[ \t]*)?(.*)\Z", text, re.S)
    keyword, rest = m.group(1), m.group(2)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", keyword):
        raise InputError(f"--ssh-option {text!r}: {keyword!r} is not an ssh option name. Use KEY=VALUE, e.g. UserKnownHostsFile=PATH.")
    try:
        values = tuple(shlex.split(rest, comments=False, posix=True))
    except ValueError as exc:
        raise InputError(f"--ssh-option {text!r}: {exc} (unbalanced quotes). Use KEY=VALUE.") from None
    if not values:
        raise InputError(f"--ssh-option {text!r} has no value. Use KEY=VALUE, e.g. UserKnownHostsFile=PATH.")
    return keyword.lower(), values


def check_ssh_options(options: Sequence[str]) -> None:
    """Refuse ``-o`` options that turn host-key checking off, however they are spelled.

    Refused: ``StrictHostKeyChecking`` no/off/false, ``NoHostAuthenticationForLocalhost``
    yes/true, ``StrictHostKeyChecking accept-new`` when every ``UserKnownHostsFile`` is
    ``/dev/null`` (every key is then new, hence accepted), and ``Include``/``Match`` (ssh does not
    take them on the command line).

    Raises:
        InputError: naming the option and how to proceed safely.
    """
    parsed = [(text, *parse_ssh_option(text)) for text in options]
    hint = ("which edgecam refuses: a device's host key is what proves the bundle goes to your vehicle. "
            "Add the key to known_hosts once (ssh-keyscan HOST, compare the fingerprint on the device).")
    user_files = []
    accept_new = None
    for text, key, values in parsed:
        value = values[0].lower()
        if key == "stricthostkeychecking" and value in ("no", "off", "false"):
            raise InputError(f"--ssh-option {text!r} would turn host-key checking off, {hint}")
        if key == "nohostauthenticationforlocalhost" and value in ("yes", "true"):
            raise InputError(f"--ssh-option {text!r} skips host-key checking for localhost, {hint}")
        if key in ("include", "match"):
            raise InputError(f"--ssh-option {text!r}: {key.capitalize()} is only allowed in ssh_config files.")
        if key == "stricthostkeychecking" and value == "accept-new":
            accept_new = text
        if key == "userknownhostsfile":
            user_files += [v for v in values if v.lower() != "none"]
    if accept_new and user_files and all(v == "/dev/null" for v in user_files):
        raise InputError(
            f"--ssh-option {accept_new!r} with UserKnownHostsFile=/dev/null accepts every host key, {hint}"
        )


def check_user_name(name: str) -> str:
    """Return ``name`` when it is a POSIX user name (it becomes ``User=`` in a root systemd unit).

    Raises:
        InputError: anything but letters, digits, ``. _ -`` (not first), or over 32 characters.
    """
    if not USER_NAME.fullmatch(name):
        raise InputError(
            f"--user {name!r} is not a POSIX user name (letters, digits, . _ -, not starting with "
            "'-' or a digit, at most 32 characters); it would be written into a root systemd unit."
        )
    return name


def check_install_args(args: Sequence[str]) -> Tuple[str, ...]:
    """Check the install.sh arguments ``deploy`` passes on: no control characters, a POSIX ``--user``.

    Raises:
        InputError: naming the argument.
    """
    args = tuple(args)
    for index, arg in enumerate(args):
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in arg):
            raise InputError(f"--install-arg {arg!r} holds a control character (newline?); refusing it.")
        if arg == "--user":
            if index + 1 >= len(args):
                raise InputError("--install-arg --user needs a name: --install-arg=--user=pi")
            check_user_name(args[index + 1])
        elif arg.startswith("--user="):
            check_user_name(arg[len("--user="):])
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
    parts = directory.split("/")
    if not _DIR.match(directory) or ".." in parts or directory == "/":
        raise InputError(
            f"Deploy target {spec!r}: the directory {directory!r} may only contain letters, digits and "
            ". _ / - (no '..', not '/'). Example: pi@raspberrypi.local:/opt/edgecam"
        )
    if any(part.startswith("-") for part in parts):
        # sh, scp and install.sh would read '-dir' as an option.
        raise InputError(
            f"Deploy target {spec!r}: the directory {directory!r} has a part starting with '-', which "
            "commands on the device would read as an option. Example: pi@raspberrypi.local:/opt/edgecam"
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

    install.sh health-checks the new release (``edgecam doctor --bundle``) before switching
    ``current``. With ``wait`` > 0 (and the runner started), the status step then requires fresh
    telemetry within ``wait`` seconds (``--expect-telemetry``, exit 3 without it); :func:`deploy`
    rolls back when it fails (:func:`plan_recover`).

    Args:
        local_bundle: the extracted, verified bundle directory on this machine.
        top: its name (``edgecam-<id>``), reused on the device.
        remote: where to install.
        ssh: ssh/scp options.
        install_args: extra install.sh arguments (``--no-systemd``, ``--python PY`` …).
        wait: seconds the status step waits for the first telemetry line (0: do not wait, and do
            not require it).
    """
    incoming = f"{remote.directory}/incoming"
    staged = f"{incoming}/{top}"
    return [
        Step("prepare the upload directory", _ssh(remote, ssh, "sh", "-c", 'rm -rf -- "$1" && mkdir -p -- "$2"', "sh", staged, incoming)),
        Step("upload the bundle", _scp_dir(remote, ssh, local_bundle, incoming)),
        Step("verify and install", _ssh(remote, ssh, *_install_sh(remote, staged), *install_args)),
        Step("remove the upload", _ssh(remote, ssh, "rm", "-rf", "--", staged), always=True),
        _status_step(remote, ssh, "current", wait, _expects_telemetry(install_args, wait)),
    ]


def _expects_telemetry(install_args: Sequence[str], wait: int) -> bool:
    return wait > 0 and "--no-start" not in install_args


def _status_step(remote: Remote, ssh: SshOptions, release: str, wait: int, expect: bool) -> Step:
    what = "service status and first telemetry"
    command = ["sh", f"{remote.directory}/{release}/install.sh", "--prefix", remote.directory,
               "--status", "--wait", str(wait)]
    if expect:
        return Step(what + f" (required within {wait} s)", _ssh(remote, ssh, *command, "--expect-telemetry"))
    return Step(what, _ssh(remote, ssh, *command), check=False)


def plan_rollback(remote: Remote, ssh: SshOptions = SshOptions(), wait: int = 10) -> List[Step]:
    """The steps that switch ``current`` back to the previous release, restart and show status.

    With ``wait`` > 0 the status step requires fresh telemetry within ``wait`` seconds. It runs the
    install.sh of the release just left (now ``previous``): that one is at least as new as the
    release rolled back to, so it knows ``--expect-telemetry``.
    """
    script = f"{remote.directory}/current/install.sh"
    return [
        Step("switch to the previous release and restart",
             _ssh(remote, ssh, "sh", script, "--prefix", remote.directory, "--rollback")),
        _status_step(remote, ssh, "previous", wait, wait > 0),
    ]


def plan_recover(remote: Remote, ssh: SshOptions = SshOptions(), wait: int = 10) -> List[Step]:
    """What :func:`deploy` runs when the new release sends no telemetry: :func:`plan_rollback`."""
    return plan_rollback(remote, ssh, wait)


@dataclass(frozen=True)
class StepResult:
    """What one step did.

    Attributes:
        step: the step.
        code: its exit code.
        output: the last lines it printed (stdout and stderr), for :func:`diagnose`.
    """

    step: Step
    code: int
    output: str


# What a failed release's output says, most specific first → the reason deploy names. The
# patterns are the messages of edgecam doctor ("[FAIL] name  detail"), the runner and install.sh.
_REASONS: Tuple[Tuple[str, str], ...] = (
    (r"No LiteRT interpreter is installed|\[FAIL\] interpreter", "interpreter missing"),
    (r"\[FAIL\] model|\[FAIL\] bundle", "model failed to load"),
    (r"Camera \d+ cannot be opened|V4L2 device .* cannot be opened", "camera not found"),
    (r"--source .* is not a camera index", "video source not found"),
    (r"\[FAIL\] opencv", "OpenCV missing"),
    (r"\[FAIL\] python", "Python too old"),
    (r"-m venv' failed", "cannot create a virtual environment (python3-venv missing?)"),
    (r"the installed edgecam does not start", "the installed edgecam does not start"),
    (r"installing the requirements failed", "the device requirements cannot be installed"),
    (r"\[FAIL\] disk", "disk full"),
    (r"checksum mismatch", "the bundle was damaged in transit"),
)


def diagnose(output: str) -> Optional[str]:
    """The reason a release failed, read from what install.sh, doctor or the runner printed.

    Returns:
        ``"interpreter missing: <the line that says so>"`` and the like, or None when nothing
        known was found.
    """
    for pattern, reason in _REASONS:
        for line in output.splitlines():
            if re.search(pattern, line):
                detail = re.sub(r"^install\.sh:\s*(error:\s*)?", "", line.strip())
                detail = re.sub(r"^\[FAIL\]\s*", "", detail)
                return f"{reason} ({detail[:200]})"
    errors = [line.strip() for line in output.splitlines() if re.search(r"(^|\s)(Error|error):", line)]
    if errors:
        return errors[-1][:240]
    # A Python traceback's last line: "TypeError: …" (a bug, not a device problem).
    crashes = [line.strip() for line in output.splitlines()
               if re.match(r"\s*(install\.sh:\s*)?[A-Za-z_][\w.]*(Error|Exception): ", line)]
    if crashes:
        return "the runner crashed (" + re.sub(r"^install\.sh:\s*", "", crashes[-1])[:200] + ")"
    return None


def run_step(step: Step, echo: Callable[[str], None] = print, keep: int = 60) -> StepResult:
    """Run one step, passing its output through (stdout to ``echo``, stderr to ours).

    Raises:
        DeployError: its program is not installed here.
    """
    if shutil.which(step.argv[0]) is None:
        raise DeployError(
            f"'{step.argv[0]}' is not installed here. Install the OpenSSH client (apt install openssh-client)."
        )
    tail: "collections.deque[str]" = collections.deque(maxlen=keep)
    # stdin closed: a remote command must not consume ours; ssh prompts use the terminal.
    proc = subprocess.Popen(list(step.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")

    def pump(stream, write) -> None:
        for line in stream:
            tail.append(line.rstrip("\n"))
            write(line.rstrip("\n"))

    def to_stderr(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    errors = threading.Thread(target=pump, args=(proc.stderr, to_stderr), daemon=True)
    errors.start()
    pump(proc.stdout, echo)
    errors.join()
    return StepResult(step, proc.wait(), "\n".join(tail))


def _failure(result: StepResult) -> DeployError:
    hint = (" (255: ssh could not connect or authenticate; check the host key, -i KEY and -p PORT)"
            if result.code == 255 else "")
    reason = diagnose(result.output) if result.code != 255 else None
    # With a reason the command adds nothing but length; without one it is the way to reproduce.
    where = f": {reason}" if reason else f". Command: {result.step.display()}"
    return DeployError(f"Deploy step '{result.step.what}' failed with exit code {result.code}{hint}{where}")


def run_plan(steps: Sequence[Step], dry_run: bool = False, echo: Callable[[str], None] = print) -> List[StepResult]:
    """Run (or with ``dry_run`` only print) each step, stopping at the first failure.

    Returns:
        One :class:`StepResult` per step run (none for a dry run).

    Raises:
        DeployError: ``ssh``/``scp`` missing, or a checked step exited non-zero (the message names
            the reason when its output shows one: see :func:`diagnose`).
    """
    failure: Optional[DeployError] = None
    results: List[StepResult] = []
    for step in steps:
        if failure is not None and not step.always:
            continue
        echo(f"# {step.what}\n{step.display()}" if dry_run else f"==> {step.what}")
        if dry_run:
            continue
        result = run_step(step, echo)
        results.append(result)
        if result.code != 0 and step.check and failure is None:
            failure = _failure(result)
    if failure is not None:
        raise failure
    return results


_CHOICE = re.compile(r"\[ ok \] plan\s+chose (\S+) \(([0-9.]+) ms/frame")


def device_choice(output: str) -> Optional[Tuple[str, float]]:
    """The plan the device chose and its latency, read from install.sh's health check output."""
    found = _CHOICE.findall(output)
    return (found[-1][0], float(found[-1][1])) if found else None


def _install_failed(exc: DeployError) -> DeployError:
    return DeployError(f"{exc}. Nothing was switched: the device keeps running the release it had.")


def _roll_back(remote: Remote, ssh: SshOptions, wait: int, top: str, status: StepResult,
               echo: Callable[[str], None]) -> DeployError:
    """Roll back after the new release sent no telemetry; return the error deploy raises."""
    reason = diagnose(status.output) or "no reason in its log"
    echo(f"==> the new release {top} sent no telemetry (waited up to {wait} s): rolling back automatically")
    try:
        run_plan(plan_recover(remote, ssh, wait), echo=echo)
    except DeployError as exc:
        if "no previous release" in str(exc):
            return DeployError(
                f"The new release {top} sent no telemetry (waited up to {wait} s): {reason}. There is no previous "
                "release to roll back to, so the device runs a release that is not healthy. Fix the cause "
                "and deploy again."
            )
        return DeployError(
            f"The new release {top} sent no telemetry (waited up to {wait} s; {reason}); rolled back to the "
            f"previous release, but it is not healthy either: {exc}"
        )
    return DeployError(
        f"The new release {top} sent no telemetry (waited up to {wait} s): {reason}. Rolled back automatically: "
        "the previous release is current again and sending telemetry. Fix the cause and deploy again."
    )


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
    connection; install.sh verifies it again on the device before touching anything, and
    health-checks the new release (``edgecam doctor --bundle``) before switching ``current``.
    With ``wait`` > 0, a release that then sends no telemetry within ``wait`` seconds is rolled
    back automatically, and this raises.

    Returns:
        The steps run (or printed).

    Raises:
        InputError: a bad target, ssh option or install argument.
        DeployError: an unsafe or tampered bundle, a failed step, a failed health check (nothing
            switched), or no telemetry from the new release (rolled back); the message names the
            reason (interpreter missing, model failed to load, camera not found, …).
    """
    remote = parse_remote(target)
    ssh.common()  # validate the options before anything runs
    install_args = check_install_args(install_args)
    if rollback:
        steps = plan_rollback(remote, ssh, wait)
        run_plan(steps, dry_run, echo)
        return steps
    with owned_tempdir("edgecam-deploy-") as tmp:
        local = safe_extract(bundle, tmp, top_pattern=BUNDLE_TOP)
        try:
            verify_manifest(local, strict=True)
            if local.name != f"edgecam-{bundle_id(local)}":
                raise DeployError(
                    f"its top directory {local.name!r} does not name its content (edgecam-{bundle_id(local)}); "
                    "it was renamed or rebuilt by hand. Rebuild it with `edgecam bundle`."
                )
        except DeployError as exc:
            raise DeployError(f"Refusing '{bundle}', nothing was uploaded: {exc}") from exc
        if not dry_run:  # refuse a bundle whose target cannot serve the device, before uploading
            check_device_target(local, install_args, lambda *cmd: _ssh(remote, ssh, *cmd), echo)
        steps = plan_deploy(str(local), local.name, remote, ssh, install_args, wait)
        if dry_run:
            run_plan(steps, True, echo)
            if _expects_telemetry(install_args, wait):
                echo("# only if no telemetry arrives: roll back")
                run_plan(plan_recover(remote, ssh, wait), True, echo)
            return steps
        *install, status = steps
        try:
            done = run_plan(install, echo=echo)
        except DeployError as exc:
            raise _install_failed(exc) from None
        choice = device_choice("\n".join(r.output for r in done))
        if choice:
            echo(f"==> the device chose plan {choice[0]}: {choice[1]:.2f} ms/frame (the fastest shipped plan there)")
        echo(f"==> {status.what}")
        result = run_step(status, echo)
        if result.code == 3 and status.check:
            raise _roll_back(remote, ssh, wait, local.name, result, echo)
        if result.code != 0 and status.check:
            raise _failure(result)
    return steps
