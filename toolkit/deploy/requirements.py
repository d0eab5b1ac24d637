"""The device's pinned requirements, with environment markers, and their per-target filtering.

Pins are data, not text, so the same table renders the ``requirements.txt`` the device's pip
evaluates (markers against the device's interpreter) *and* the per-Python-version lists that
``pip download --platform … --python-version …`` needs: pip evaluates requirement markers
against the interpreter running it, not against ``--python-version``/``--platform``, so a marked
file cannot be handed to ``pip download`` on an x86 host as is.

Wheel availability checked against the package index (aarch64, CPython 3.9–3.13):

* ``ai-edge-litert`` ships ``manylinux_2_27_aarch64`` wheels: 2.1.0 is the last with cp39,
  2.3.0 covers cp310–cp314.
* ``tflite-runtime`` (the fallback, needs ``numpy<2``) ships ``manylinux2014_armv7l`` wheels for
  cp39/cp310 (2.13.0): it serves 32-bit Raspberry Pi OS, where LiteRT has no wheel; numpy and
  OpenCV for armv7l come from piwheels there.
* ``ai-edge-litert`` and numpy pin the same versions for ``x86_64`` (``--target linux``:
  industrial PCs, NUCs, lab machines): ``manylinux_2_17_x86_64`` wheels.

Which board, OS and Python each row serves, and how it was checked: docs/devices.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = [
    "Pin",
    "DEVICE_PINS",
    "PLATFORM_TAGS",
    "MACHINE_PLATFORM_TAGS",
    "INTERPRETERS",
    "render_requirements",
    "pins_for",
    "pins_for_machines",
    "interpreter_for",
]

# Tags passed to `pip download --platform` for a 64-bit ARM device (glibc ≥ 2.28: Raspberry Pi
# OS Bullseye+, JetPack 5+). LiteRT's wheels are manylinux_2_27, OpenCV's manylinux_2_28.
PLATFORM_TAGS = (
    "manylinux2014_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux_2_27_aarch64",
    "manylinux_2_28_aarch64",
)
# `pip download --platform` tags per `uname -m` for which wheels can be bundled (--with-wheels).
# armv7l is absent: its numpy/OpenCV wheels come from piwheels, which the host's pip does not use.
MACHINE_PLATFORM_TAGS = {
    "aarch64": PLATFORM_TAGS,
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64"),
}
# The packages that provide a LiteRT interpreter (firmware_host.backends.litert tries them in order).
INTERPRETERS = ("ai-edge-litert", "tflite-runtime")


def _version_tuple(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Pin:
    """One ``name==version`` line, valid for some machines and a half-open Python range."""

    name: str
    version: str
    machine: Optional[str] = None  # platform_machine, None = any
    python_min: Optional[str] = None  # inclusive
    python_max: Optional[str] = None  # exclusive

    def marker(self) -> str:
        parts = []
        if self.machine:
            parts.append(f'platform_machine == "{self.machine}"')
        if self.python_min:
            parts.append(f'python_version >= "{self.python_min}"')
        if self.python_max:
            parts.append(f'python_version < "{self.python_max}"')
        return " and ".join(parts)

    def line(self) -> str:
        marker = self.marker()
        return f"{self.name}=={self.version}" + (f"; {marker}" if marker else "")

    def applies(self, python_version: str, machine: str) -> bool:
        py = _version_tuple(python_version)
        if self.machine and self.machine != machine:
            return False
        if self.python_min and py < _version_tuple(self.python_min):
            return False
        if self.python_max and py >= _version_tuple(self.python_max):
            return False
        return True


DEVICE_PINS: Tuple[Pin, ...] = (
    Pin("ai-edge-litert", "2.1.0", "aarch64", python_max="3.10"),
    Pin("ai-edge-litert", "2.3.0", "aarch64", python_min="3.10"),
    Pin("numpy", "2.0.2", "aarch64", python_max="3.10"),
    Pin("numpy", "2.2.6", "aarch64", python_min="3.10"),
    Pin("ai-edge-litert", "2.1.0", "x86_64", python_max="3.10"),
    Pin("ai-edge-litert", "2.3.0", "x86_64", python_min="3.10"),
    Pin("numpy", "2.0.2", "x86_64", python_max="3.10"),
    Pin("numpy", "2.2.6", "x86_64", python_min="3.10"),
    Pin("tflite-runtime", "2.13.0", "armv7l", python_max="3.11"),
    Pin("numpy", "1.26.4", "armv7l"),  # tflite-runtime is built against numpy 1.x
    Pin("opencv-python-headless", "4.11.0.86"),
    Pin("click", "8.1.8"),
    Pin("tqdm", "4.67.1"),
    Pin("tomli", "2.2.1", python_max="3.11"),
)


def render_requirements(pins: Sequence[Pin] = DEVICE_PINS, header: str = "") -> str:
    """The requirements.txt text: one pinned line per entry, with environment markers."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [pin.line() for pin in pins]
    return "\n".join(lines) + "\n"


def pins_for(python_version: str, machine: str = "aarch64", pins: Sequence[Pin] = DEVICE_PINS) -> List[str]:
    """``name==version`` lines (no markers) that apply to one device Python and machine."""
    return [f"{p.name}=={p.version}" for p in pins if p.applies(python_version, machine)]


def pins_for_machines(machines: Sequence[str], pins: Sequence[Pin] = DEVICE_PINS) -> Tuple[Pin, ...]:
    """The pins a bundle for ``machines`` ships: machine-independent ones plus those machines'."""
    return tuple(p for p in pins if p.machine is None or p.machine in machines)


def interpreter_for(python_version: str, machine: str, pins: Sequence[Pin] = DEVICE_PINS) -> Optional[str]:
    """The ``name==version`` of the LiteRT interpreter ``pins`` install there, or None."""
    for pin in pins:
        if pin.name in INTERPRETERS and pin.applies(python_version, machine):
            return f"{pin.name}=={pin.version}"
    return None
