"""Run a command with ``statx`` and ``faccessat2`` failing with ENOSYS (x86-64 Linux only).

    python3 enosys_exec.py proot -q qemu-aarch64-static -r ROOTFS ... COMMAND

Debian 12's proot 5.1.0 does not translate the paths of these two newer system calls, so a
guest's ``stat``/``access`` would look at the *host's* files. A seccomp filter that makes them
fail with ENOSYS makes the guest's glibc fall back to ``newfstatat``/``faccessat``, which proot
does translate. The filter is inherited by proot, qemu and the guest; it is installed with
``PR_SET_NO_NEW_PRIVS``, so no privilege is needed.
"""

import ctypes
import errno
import os
import struct
import sys

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
# struct seccomp_data: int nr; __u32 arch; ...
OFFSET_NR, OFFSET_ARCH = 0, 4
# x86-64 system call numbers.
NR_STATX, NR_FACCESSAT2 = 332, 439


def _insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def install_filter() -> None:
    """Install the filter on the calling process (and so on everything it executes)."""
    program = b"".join([
        _insn(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        _insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),  # another ABI (x32/i386): leave it alone
        _insn(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
        _insn(BPF_JEQ_K, 2, 0, NR_STATX),
        _insn(BPF_JEQ_K, 1, 0, NR_FACCESSAT2),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
    ])
    buf = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    install_filter()
    os.execvp(sys.argv[1], sys.argv[1:])
