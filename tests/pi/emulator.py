"""An emulated Raspberry Pi: a Debian 12 arm64 userland run with proot + qemu-user, no root needed.

Raspberry Pi OS 64-bit is Debian 12 (bookworm) for arm64, so the same userland with the same
``python3`` (3.11) is what a bundle meets on a Pi 4/5. How it is built and run, and why:

* ``mmdebstrap --variant=extract --skip=check/qemu`` only *unpacks* the packages (no maintainer
  scripts), so no arm64 code runs while building and binfmt_misc is not needed (~20-35 s).
  ``/etc/passwd``/``group`` come from base-passwd's templates and ``ldconfig`` runs once under
  emulation (what the skipped maintainer scripts would have done that matters here).
* ``proot -q qemu-aarch64-static`` runs arm64 binaries with the rootfs as ``/``.
* Debian 12's proot 5.1.0 does not translate ``statx``/``faccessat2``: :mod:`tests.pi.enosys_exec`
  makes them fail with ENOSYS so glibc falls back to calls proot does translate.
* ``/proc/cpuinfo`` is a Raspberry Pi 4's (``rpi4-cpuinfo.txt``): with the host's x86 one, LiteRT's
  CPU detection crashes in ``allocate_tensors``.
* ``QEMU_CPU=cortex-a72`` (the Pi 4's core) is ~10x faster than qemu's default ``max`` CPU.

The rootfs tarball is cached under the user cache directory (``$XDG_CACHE_HOME`` or
``~/.cache``)/``edgecam-tests/pi``, keyed by the hash of its recipe. By hand: ``python -m tests.pi.emulator ROOTFS_DIR -- COMMAND`` (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3 + venv (install.sh), what install.sh's shell uses, and libstdc++ (LiteRT, OpenCV).
PACKAGES = (
    "python3", "python3-venv", "ca-certificates", "libstdc++6", "base-passwd", "base-files",
    "dash", "bash", "coreutils", "sed", "grep", "findutils", "libc-bin", "tar", "gzip",
)
TOOLS = ("mmdebstrap", "proot", "qemu-aarch64-static")
GUEST_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgecam-tests/pi`` (default ``~/.cache/edgecam-tests/pi``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "edgecam-tests", "pi")


def missing_tools() -> Tuple[str, ...]:
    """The host tools that are not installed (empty when the emulator can run)."""
    return tuple(tool for tool in TOOLS if shutil.which(tool) is None)


def recipe_key() -> str:
    recipe = "\n".join([SUITE, MIRROR, "arm64", *PACKAGES, (HERE / "emulator.py").name])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def rootfs_tarball(log=print) -> Path:
    """The cached rootfs tarball, built with mmdebstrap when absent.

    Raises:
        RuntimeError: mmdebstrap failed (its output's tail is in the message).
    """
    cache = cache_dir()
    tarball = cache / f"bookworm-arm64-{recipe_key()}.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{os.getpid()}.partial.{tarball.name}"
    log(f"building {tarball} with mmdebstrap (once)")
    cmd = ["mmdebstrap", "--variant=extract", "--skip=check/qemu", "--architectures=arm64", "--format=tar",
           f"--include={','.join(PACKAGES)}", SUITE, str(partial), f"deb {MIRROR} {SUITE} main"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
    os.replace(partial, tarball)
    return tarball


class Guest:
    """One extracted arm64 rootfs and the command line that runs programs inside it.

    Args:
        root: where to extract (must not exist or be empty).
        tarball: the rootfs tarball (default: :func:`rootfs_tarball`).
        binds: extra ``{host path: guest path}`` bind mounts.
    """

    def __init__(self, root: Path, tarball: Optional[Path] = None, binds: Mapping[str, str] = ()) -> None:
        self.root = Path(root)
        fresh = not (self.root / "usr").is_dir()
        if fresh:
            self.root.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tarball or rootfs_tarball()) as tar:
                # Device nodes cannot be created unprivileged and are bound from the host anyway.
                members = [m for m in tar.getmembers() if not (m.ischr() or m.isblk())]
                tar.extractall(self.root, members=members, numeric_owner=True)
            for name in ("passwd", "group"):
                shutil.copy(self.root / "usr/share/base-passwd" / f"{name}.master", self.root / "etc" / name)
            for folder in ("root", "proc", "sys", "dev", "tmp", "run"):
                (self.root / folder).mkdir(exist_ok=True)
        self.binds: Dict[str, str] = {
            "/dev": "/dev", "/proc": "/proc", "/sys": "/sys",
            str(HERE / "rpi4-cpuinfo.txt"): "/proc/cpuinfo",
        }
        for host in ("/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt"):
            if os.path.exists(host):
                self.binds[host] = host  # DNS and the host's trust store (a proxy's CA, if any)
        self.binds.update(binds)
        if fresh:
            self.run(["/sbin/ldconfig"], check=True, timeout=300)

    def argv(self, command: Sequence[str], cwd: str = "/root") -> list:
        """The host command line that runs ``command`` in the guest."""
        args = [sys.executable, str(HERE / "enosys_exec.py"), "proot", "-q", "qemu-aarch64-static",
                "-r", str(self.root), "-w", cwd]
        for host, guest in self.binds.items():
            args += ["-b", f"{host}:{guest}"]
        return args + list(command)

    def env(self, extra: Mapping[str, str] = ()) -> Dict[str, str]:
        """A clean guest environment (nothing of the host's Python/pip settings leaks in)."""
        env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": "cortex-a72",
               # Byte-compiling every installed file under emulation costs more than it saves here.
               "PIP_NO_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "120"}
        env.update(extra)
        return env

    def popen(self, command: Sequence[str], cwd: str = "/root", env: Mapping[str, str] = (),
              wrap: Sequence[str] = (), **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*wrap, *self.argv(command, cwd)], env=self.env(env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)

    def run(self, command: Sequence[str], cwd: str = "/root", env: Mapping[str, str] = (), check: bool = False,
            timeout: float = 600, wrap: Sequence[str] = ()) -> subprocess.CompletedProcess:
        proc = subprocess.run([*wrap, *self.argv(command, cwd)], env=self.env(env), text=True, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"guest command {list(command)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
        return proc

    def host_path(self, guest_path: str) -> Path:
        """Where a guest path (outside the binds) lives on the host."""
        return self.root / guest_path.lstrip("/")


def _main(argv: Sequence[str]) -> int:
    """``python -m tests.pi.emulator DIR [-- COMMAND …]``: extract DIR once, run COMMAND (bash) in
    it with the current directory bound as ``/mnt``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_main.__doc__)
        return 0
    if missing_tools():
        print(f"missing: {', '.join(missing_tools())} (apt install mmdebstrap proot qemu-user-static)")
        return 2
    command = list(argv[argv.index("--") + 1:]) if "--" in argv else ["/bin/bash"]
    guest = Guest(Path(argv[0]), binds={os.getcwd(): "/mnt"})
    return subprocess.call(guest.argv(command, "/mnt"), env=guest.env())


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
